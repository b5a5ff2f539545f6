"""Telemetry ingest: replay into Frames against a plain numpy pass, and MQTT into the twin.

**replay** (:func:`run_replay`). A plant of ``n`` sensor prims (one ``temperature``
each, no model; cached under ``$TMPDIR/twinstage-bench``) and a Parquet file of
``n`` columns sampled at 10 Hz (values in °F, 0.1 % NaN).
Candidate: a headless :class:`~twinstage.runtime.Engine` at 10 Hz with a
:class:`~twinstage.telemetry.ReplaySource` on that file — each ``tick()`` polls the
tick's window, aligns (hold), checks quality, writes the table, diffs, and builds the
immutable Frame. Baseline, measured in the same run over the *same* converted
arrays: a plain numpy pass per tick — ``searchsorted`` the window, take the last
row, keep the previous value where it is not finite (flagged), write the state and
its quality, diff both against the previous tick, gather the changed rows, values
and quality. Candidate and baseline are
timed in interleaved rounds of 5 ticks (no GC pass between rounds, see
:func:`_interleaved_ticks`); the ratio is of the medians per tick (goal ≤ 1.5×). Also
reported: samples/s into Frames, and CSV parsing (``_replay_io.read_csv``: types,
problem codes, line numbers) against a bare ``pandas.read_csv``.

**mqtt** (``bench/_ingest_mqtt.py``): 10k bound attributes at 10 Hz through a real
mosquitto against a bare paho subscriber; see that file.

    python bench/ingest.py [--quick] [--json] [--parts replay,mqtt] [--n N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import Report, interleaved, log, parse_args

import twinstage
from twinstage import __version__

RATE = 10.0
BLOCK = 5  # ticks per timed round


def plant(n: int, args: Any) -> Path:
    """A cached scene of ``n`` sensor prims with a ``temperature`` (degC) each and no model."""
    from pxr import UsdGeom

    from twinstage.usd import create_stage, declare_asset, declare_attribute

    p = Path(tempfile.gettempdir()) / "twinstage-bench" / f"plant-{n}-v{__version__}.usdc"
    if not p.exists():
        log(args, f"ingest: building a {n}-sensor plant -> {p} ...")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.stem + ".partial.usdc")
        st = create_stage(tmp, root="Plant")
        for i in range(n):
            prim = UsdGeom.Xform.Define(st, f"/Plant/S{i:05d}").GetPrim()
            declare_asset(prim, kind="sensor", asset_id=f"S{i:05d}")
            declare_attribute(prim, "temperature", "float", 20.0, unit="degC", min=-50.0, max=150.0, role="measured")
        st.GetRootLayer().Save()
        tmp.replace(p)
    return p


def data(n: int, seconds: float, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``n`` columns at 10 Hz in °F (a slow ramp + noise, 0.1 % NaN) written as Parquet; returns (t, values)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = int(seconds * 10) + 1
    rng = np.random.default_rng(0)
    t = 1.7e9 + np.arange(rows) / 10.0
    v = 68.0 + 0.01 * np.arange(rows)[:, None] + rng.normal(0, 0.5, (rows, n))
    v[rng.random((rows, n)) < 0.001] = np.nan
    cols = {"ts": pa.array(t)}
    cols.update({f"S{i:05d}": pa.array(v[:, i]) for i in range(n)})
    pq.write_table(pa.table(cols), path)
    return t, v


def _interleaved_ticks(fns: dict[str, Any], *, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Like ``_common.interleaved`` (rotated interleaved rounds, GC off, medians) but without its
    ``gc.collect()`` after every round: measured here, a collection between rounds made the next
    ticks of *both* sides ~5× slower (freed arenas and free lists refilled from the OS) — an
    artefact a ticking twin never sees. One collection runs after the last round."""
    import gc
    import statistics

    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup + repeat):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                t0 = time.perf_counter()
                fns[n]()
                if r >= warmup:
                    times[n].append(time.perf_counter() - t0)
    finally:
        gc.enable()
        gc.collect()
    return {n: statistics.median(v) for n, v in times.items()}


def run_replay(n: int = 10_000, seconds: float = 30.0, args: Any = None) -> dict[str, Any]:
    from twinstage.runtime import Engine
    from twinstage.telemetry import Binding, ReplaySource

    scene = plant(n, args)
    work = Path(tempfile.mkdtemp(prefix="twinstage-bench-ingest-"))
    pq_path = work / "plant.parquet"
    t_data, raw = data(n, seconds, pq_path)
    eng = twinstage.open(scene, headless=True, rate=RATE)
    assert isinstance(eng, Engine)
    bindings = [Binding(f"/Plant/S{i:05d}", "temperature", "parquet", f"S{i:05d}", unit="degF", period=0.1) for i in range(n)]
    t0 = time.perf_counter()
    src = ReplaySource(pq_path, bindings, start=0.5 / RATE)  # rows mid-window: one data row per tick, whatever float rounding does
    eng.add_source(src)
    load_s = time.perf_counter() - t0

    # the baseline gets the same arrays, already in the attribute's unit (what the source holds after bind)
    (group,) = src._groups  # one channel: (time, attribute) values in °C and the table rows they feed
    vals, rows = group["values"], group["rows"]
    assert vals.shape == raw.shape
    sim_t = src.sim_time
    state = eng.table["temperature"].copy()
    prev = state.copy()
    qual = np.zeros(len(state), np.uint8)
    prev_q = qual.copy()
    ticks = int(seconds * RATE)
    k = {"cand": 0, "base": 0}
    frames: list[Any] = []

    def cand() -> None:
        for _ in range(BLOCK):
            frames.append(eng.tick())
            k["cand"] += 1

    def base() -> None:
        for _ in range(BLOCK):
            base_tick()

    def base_tick() -> None:
        i = k["base"]
        lo, hi = np.searchsorted(sim_t, [i * (1.0 / RATE), (i + 1) * (1.0 / RATE)], side="right")
        if hi > lo:  # the window's last row; a non-finite value keeps the previous one, flagged BAD
            last = vals[hi - 1]
            ok = np.isfinite(last)
            state[rows] = np.where(ok, last, state[rows])
            qual[rows] = np.where(ok, 0, 16)
        neq = state != prev
        neq |= qual != prev_q
        changed = np.flatnonzero(neq)
        out, out_q = state[changed], qual[changed]  # the Frame's changed rows, values, quality
        prev[changed], prev_q[changed] = out, out_q
        frames.append((changed, out, out_q))
        k["base"] += 1

    t_all = _interleaved_ticks({"candidate": cand, "baseline": base}, repeat=ticks // BLOCK - 1)
    t_all = {name: v / BLOCK for name, v in t_all.items()}
    st = eng.stats()["telemetry"]["sources"][src.name]
    # the candidate's state equals the baseline's (same data, hold) except where it flagged a NaN
    same = bool(np.array_equal(eng.table["temperature"][rows], state[rows]))
    csv_fig = run_parse(work, args)
    return {"n": n, "seconds": seconds, "ticks": ticks, "load_s": load_s, "candidate_tick_ms": t_all["candidate"] * 1e3,
            "baseline_tick_ms": t_all["baseline"] * 1e3, "replay_ratio": t_all["candidate"] / t_all["baseline"],
            "samples_per_s": n * 10 / RATE / t_all["candidate"], "applied": st["applied"], "bad": st["bad"], "same_state": same, **csv_fig}


def run_parse(work: Path, args: Any, rows: int = 200_000) -> dict[str, Any]:
    """CSV parsing: ``read_csv`` (types, problem codes, line numbers) vs bare ``pandas.read_csv``."""
    import pandas as pd

    from twinstage.telemetry._replay_io import read_csv

    rng = np.random.default_rng(1)
    p = work / "skab_like.csv"
    t = np.datetime64("2020-03-09T10:00:00", "s") + np.arange(rows).astype("timedelta64[s]")
    df = pd.DataFrame({"datetime": t.astype(str)})
    for c in ("Accelerometer1RMS", "Current", "Pressure", "Temperature", "Voltage", "Volume Flow RateRMS"):
        df[c] = np.round(rng.normal(1.0, 0.1, rows), 6)
    df.to_csv(p, sep=";", index=False)
    med = interleaved({"ours": lambda: read_csv(p), "pandas": lambda: pd.read_csv(p, sep=";", parse_dates=["datetime"])}, repeat=3, warmup=1)
    return {"parse_rows": rows, "parse_ms": med["ours"] * 1e3, "pandas_parse_ms": med["pandas"] * 1e3, "parse_vs_pandas": med["ours"] / med["pandas"]}


def report_replay(rep: Report, fig: dict[str, Any]) -> None:
    for key, v in fig.items():
        rep.figure(f"replay_{key}" if not key.endswith("_ratio") else key, v)
    rep.table(f"Replay into Frames: {fig['n']} attributes at 10 Hz, {fig['ticks']} ticks at {RATE:g} Hz",
              ["what", "median per tick (ms)", "samples/s"],
              [["engine tick with a ReplaySource (candidate)", fig["candidate_tick_ms"], fig["samples_per_s"]],
               ["plain numpy pass (baseline)", fig["baseline_tick_ms"], fig["n"] / (fig["baseline_tick_ms"] / 1e3)]])
    rep.table(f"CSV parsing, {fig['parse_rows']} rows × 7 columns", ["parser", "ms"],
              [["twinstage read_csv", fig["parse_ms"]], ["pandas.read_csv", fig["pandas_parse_ms"]]])
    rep.target("replay into Frames vs plain numpy pass", "replay_ratio", fig["replay_ratio"], 1.5)
    rep.note(f"replay: loading the Parquet file and binding {fig['n']} columns took {fig['load_s']:.2f} s; "
             f"{fig['applied']} samples applied, {fig['bad']} flagged BAD (the NaN cells); state equals the baseline's: {fig['same_state']}")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: (p.add_argument("--parts", default="replay,mqtt"), p.add_argument("--n", type=int, default=None)))
    rep = Report("ingest", args)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if "replay" in parts:
        n = args.n or (2_000 if args.quick else 10_000)
        log(args, f"ingest: replay part, {n} attributes ...")
        report_replay(rep, run_replay(n=n, seconds=20.0 if args.quick else 60.0, args=args))
    if "mqtt" in parts:
        try:
            import _ingest_mqtt
        except ImportError as exc:
            rep.note(f"mqtt part not run: {exc}")
        else:
            n = args.n or (2_000 if args.quick else 10_000)
            log(args, f"ingest: mqtt part, {n} attributes ...")
            try:
                fig = _ingest_mqtt.run_mqtt(n=n, seconds=4.0 if args.quick else 8.0)
            except RuntimeError as exc:
                rep.note(f"mqtt part not run: {exc}")
            else:
                _ingest_mqtt.report(rep, fig)
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
