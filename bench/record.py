"""Recording: the Recorder against the array time-sample floor, plus the cost of saving.

A synthetic twin of N assets × 5 float channels (the factory's thermal channels)
over a stage of Xform prims, in two runs: ``temperature`` changes every tick and
the other four hold still (as in the factory), and all five change (the worst
case for the recorder, which re-uses the arrays of unchanged channels). Each tick:

* ``recorder`` — :class:`twinstage.usd._recorder.Recorder` ``consume(frame)``
  (periodic saves off: ``save_every_s=inf``; saving is measured on its own);
* ``floor`` — bare ``layer.SetTimeSample(path, t, Vt.DoubleArray.FromNumpy(a))``
  per channel on a plain ``Sdf.Layer`` of the same file format (``.usdc``), for
  the same samples the recorder writes: values and quality per channel, tick and
  sim time.

Both record the same ticks, interleaved; the figure is the median per tick over
the whole recording (samples accumulate, so later ticks write into a bigger
layer). Each layer is saved after half of the ticks and again at the end
(``Recorder.save()`` / ``Layer.Save()``): a save rewrites the whole file, so its
cost grows with the recording. The recorder's file also holds the layout (the
prim list as ``string[]``, rows per channel, units, provenance); the floor's
does not.

Target: recorder ≤ 1.5 × floor per tick.

The recorder here is the one-file one (``chunked=False``): it sets the time samples on
the tick thread, which is what this floor measures. The chunked recorder (the default)
only copies arrays on the tick thread and builds its layers at save, in a writer
thread: its cost is in the side-by-side below.

**Side by side with rerun** (issue 13): the same run recorded three ways — 10k
assets × 5 float channels, 4 of them moving, 600 ticks: the Recorder chunked (value
clips; the tick thread copies arrays, a writer thread builds and writes each chunk),
the Recorder writing one file (each save rewrites it), and rerun-sdk logging the same
arrays (values and quality of each moving channel, tick and sim time) per tick to an
``.rrd`` file. Twice: at 60 Hz (each frame handed over at its tick's deadline, as the
twin's clock does: sleep until then) and back to back (the bytes floor: 192 MB written
as fast as the disk takes them). Each figure is the tick thread's whole cost of the
run per tick: every tick's ``consume``/``log`` plus the final ``close()`` /
``flush()`` + ``disconnect()`` (both block until everything is in the file), the work
a user pays for having a recording. rerun-sdk is the ``bench`` extra
(``pip install -e .[bench]``); without it that column is skipped with a note.
Target: chunked recorder ≤ rerun per tick at 60 Hz.

    python bench/record.py [--quick] [--json] [--vs-rerun-only] [--paced] [--assets N] [--ticks N]
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import Report, interleaved, log, parse_args, xform_layer

from pxr import Sdf, Usd, Vt

from twinstage.state import Declaration, StateTable
from twinstage.usd._recorder import Recorder
from twinstage.usd._writer import COLUMN_NS, state_prim_path

CHANNELS = ("ambientTemperature", "heatInput", "temperature", "thermalResistance", "timeConstant")
RATE = 60.0


def build(n: int):
    """A stage of ``n`` Xform prims and a StateTable of 5 float channels over them."""
    root, paths = xform_layer(n, "Factory", "M", "bench-record.usda")
    stage = Usd.Stage.Open(root)
    rng = np.random.default_rng(0)
    init = rng.uniform(10.0, 100.0, (len(CHANNELS), n))
    table = StateTable(paths, [Declaration(p, name, "float", float(init[c, i])) for c, name in enumerate(CHANNELS) for i, p in enumerate(paths)])
    return table, stage


def sinks(table: StateTable, stage: Usd.Stage, workdir: Path, tag: str):
    """A bound Recorder and the floor (a bare .usdc layer + its per-tick function)."""
    rec = Recorder(workdir / f"rec-{tag}.usdc", save_every_s=math.inf, chunked=False)  # SetTimeSample on the tick thread
    rec.bind(stage, table, rate=RATE)

    floor = Sdf.Layer.CreateNew(str(workdir / f"floor-{tag}.usdc"))
    state = state_prim_path(stage)
    with Sdf.ChangeBlock():
        ps = Sdf.CreatePrimInLayer(floor, state)
        ps.specifier = Sdf.SpecifierDef
        paths_f = {}
        for name in CHANNELS:
            v = Sdf.AttributeSpec(ps, f"{COLUMN_NS}:{name}", Sdf.ValueTypeNames.DoubleArray)
            q = Sdf.AttributeSpec(ps, f"{COLUMN_NS}:{name}:quality", Sdf.ValueTypeNames.UCharArray)
            paths_f[name] = (v.path, q.path)
        tick_path = Sdf.AttributeSpec(ps, f"{COLUMN_NS}:tick", Sdf.ValueTypeNames.Int64).path
        time_path = Sdf.AttributeSpec(ps, f"{COLUMN_NS}:simTime", Sdf.ValueTypeNames.Double).path

    def floor_tick(frame):
        t = float(frame.tick)
        for name, (vp, qp) in paths_f.items():
            floor.SetTimeSample(vp, t, Vt.DoubleArray.FromNumpy(table[name]))
            floor.SetTimeSample(qp, t, Vt.UCharArray.FromNumpy(table.quality(name)))
        floor.SetTimeSample(tick_path, t, frame.tick)
        floor.SetTimeSample(time_path, t, frame.sim_time)

    return rec, floor, floor_tick


MOVING = ("heatInput", "temperature", "thermalResistance", "timeConstant")


def side_by_side(rep: Report, args, workdir: Path) -> None:
    """Recorder (chunked / one file) and rerun on the same run, at 60 Hz and back to back."""
    n, ticks = args.assets, args.ticks
    try:
        import rerun as rr
    except ImportError:
        rr = None
        rep.note("rerun-sdk is not installed (pip install -e .[bench]): its column is skipped")
    table, stage = build(n)
    frames = []
    for t in range(1, ticks + 1):  # the same frames for everyone, made once beforehand (not timed)
        for name in MOVING:
            table[name][:] += 0.01
        frames.append((t, table.diff(t, t / RATE, time.time())))  # every row changes: the Frame holds whole columns
    variants = ["chunked", "one file"] + (["rerun"] if rr is not None else [])
    rounds = args.repeat or (1 if args.quick else 3)
    label = f"{n // 1000}k"
    rows = []
    for schedule in ("60hz", "b2b"):
        pace = 1.0 / RATE if schedule == "60hz" else 0.0
        runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
        sizes: dict[str, float] = {}
        saves: dict[str, int] = {}
        for r in range(rounds):
            for v in variants[r % len(variants):] + variants[: r % len(variants)]:
                log(args, f"record: side by side ({schedule}), round {r + 1}/{rounds}: {v} ({n} assets x {ticks} ticks) ...")
                d = workdir / f"sbs-{schedule}-{r}-{v.replace(' ', '_')}"
                d.mkdir()
                costs = np.zeros(ticks)
                if v == "rerun":
                    rec = rr.RecordingStream("twinstage-bench-record")
                    rec.save(str(d / "run.rrd"))
                else:
                    rec = Recorder(d / "rec.usdc", chunked=(v == "chunked"))
                    rec.bind(stage, table, rate=RATE)
                start = time.perf_counter()
                for i, (t, frame) in enumerate(frames):
                    if v != "rerun":
                        for name in MOVING:  # the table as it was at that tick (untimed)
                            ch = frame.changes[name]
                            table[name][ch.rows] = ch.values
                    if pace:  # the twin's clock: sleep until the tick's deadline, then hand the frame over
                        wait = start + i * pace - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                    t0 = time.perf_counter()
                    if v == "rerun":
                        rec.set_time("tick", sequence=t)
                        for name in MOVING:
                            ch = frame.changes[name]
                            rec.log(f"twin/{name}", rr.AnyValues(values=ch.values, quality=ch.quality))
                        rec.log("twin/clock", rr.AnyValues(tick=t, simTime=frame.sim_time))
                    else:
                        rec.consume(frame)
                    costs[i] = time.perf_counter() - t0
                t0 = time.perf_counter()
                if v == "rerun":
                    rec.flush()  # blocking: everything logged is in the file
                    rec.disconnect()
                else:
                    rec.close()
                    saves[v] = rec.saves
                close = time.perf_counter() - t0
                del rec
                runs[v].append(((costs.sum() + close) / ticks, float(np.percentile(costs, 99)), close))
                sizes[v] = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 1e6
                shutil.rmtree(d, ignore_errors=True)
        med = {v: [float(np.median([x[k] for x in xs])) for k in range(3)] for v, xs in runs.items()}
        for v in variants:
            key = f"sbs_{label}_{schedule}_{v.replace(' ', '_')}"
            rep.figure(f"{key}_ms_per_tick", med[v][0] * 1e3)
            rep.figure(f"{key}_p99_ms", med[v][1] * 1e3)
            rep.figure(f"{key}_close_ms", med[v][2] * 1e3)
            rep.figure(f"{key}_file_mb", sizes[v])
        rep.figure(f"sbs_{label}_{schedule}_chunked_over_one_file_ratio", med["chunked"][0] / med["one file"][0])
        what = f"{ticks} ticks at {RATE:g} Hz" if pace else f"{ticks} ticks back to back (the bytes floor)"
        row = [what, med["chunked"][0] * 1e3, med["chunked"][1] * 1e3, med["chunked"][2] * 1e3, med["one file"][0] * 1e3]
        if rr is not None:
            r = rep.figure(f"sbs_{label}_{schedule}_chunked_over_rerun_ratio", med["chunked"][0] / med["rerun"][0])
            rep.figure(f"sbs_{label}_{schedule}_one_file_over_rerun_ratio", med["one file"][0] / med["rerun"][0])
            if pace:
                res = rep.target(f"{label} assets x 4 moving channels x {ticks} ticks at {RATE:g} Hz: chunked recorder / rerun per tick",
                                 f"sbs_{label}_{schedule}_chunked_over_rerun_ratio", r, 1.0)
            else:
                res = "(reported)"
            row += [med["rerun"][0] * 1e3, med["rerun"][1] * 1e3, med["rerun"][2] * 1e3, r, res]
        else:
            row += ["-", "-", "-", "-", "skipped"]
        row += [sizes["chunked"], sizes["one file"], sizes.get("rerun", "-"), saves.get("chunked", 0)]
        rows.append(row)
    rep.table(f"Side by side: the tick thread's whole cost of recording a run, per tick ({n} assets, 4 of 5 channels moving; "
              f"every consume/log + close/flush; median of {rounds} round(s))",
              ["schedule", "chunked ms", "chunked p99", "chunked close ms", "one file ms", "rerun ms", "rerun p99", "rerun flush ms",
               "chunked/rerun", "<=1 (60 Hz)", "chunked MB", "one file MB", "rerun MB", "chunked saves"], rows)
    del table, stage, frames


def paced(rep: Report, args, workdir: Path) -> None:
    """A chunked recording in a paced run: chunk writes on the tick thread vs in the background.

    ``--paced``: N assets, 4 of 5 channels moving, 360 ticks with a 5 ms pause after each
    (the time a real run spends ticking its models and serving), 60-tick chunks. The
    same Recorder twice per round, once with its periodic saves forced onto the tick
    thread (``save(background=False)``, what every save did before) and once as shipped
    (chunks written by a background thread); figures are the tick thread's time in
    ``consume`` and ``close``, medians of the rounds.
    """
    n, ticks = args.assets, 360
    table, stage = build(n)
    frames = []
    for t in range(1, ticks + 1):
        for name in MOVING:
            table[name][:] += 0.01
        frames.append((t, table.diff(t, t / RATE, time.time())))
    res: dict[str, list[tuple[float, float, float]]] = {"tick thread": [], "background": []}
    rounds = args.repeat or 2
    for r in range(rounds):
        for v in ("background", "tick thread") if r % 2 else ("tick thread", "background"):
            log(args, f"record: paced, round {r + 1}/{rounds}: {v} ...")
            rec = Recorder(workdir / f"paced-{r}-{v.replace(' ', '_')}.usdc", chunked=True, chunk_ticks=60)
            rec.bind(stage, table, rate=RATE)
            if v == "tick thread":
                sync = rec.save
                rec.save = lambda background=False, sync=sync: sync()
            costs = []
            for t, frame in frames:
                for name in MOVING:
                    ch = frame.changes[name]
                    table[name][ch.rows] = ch.values
                t0 = time.perf_counter()
                rec.consume(frame)
                costs.append(time.perf_counter() - t0)
                time.sleep(0.005)
            t0 = time.perf_counter()
            rec.close()
            close = time.perf_counter() - t0
            c = np.array(costs)
            res[v].append(((c.sum() + close) / ticks, float(np.percentile(c, 99)), float(c.max())))
            rec.layer = None
    rows = []
    for v, xs in res.items():
        key = v.replace(" ", "_")
        per, p99, mx = (float(np.median([x[i] for x in xs])) for i in range(3))
        rep.figure(f"paced_{n // 1000}k_{key}_ms_per_tick", per * 1e3)
        rep.figure(f"paced_{n // 1000}k_{key}_p99_ms", p99 * 1e3)
        rows.append([v, per * 1e3, p99 * 1e3, mx * 1e3])
    rep.figure(f"paced_{n // 1000}k_background_over_tick_thread_ratio", rows[1][1] / rows[0][1])
    rep.table(f"Paced chunked recording ({n} assets, 4 moving, {ticks} ticks + 5 ms pauses, 60-tick chunks; tick-thread ms, median of {rounds})",
              ["chunk writes on", "ms per tick (consume + close)", "consume p99 ms", "consume max ms"], rows)
    del table, stage


def main() -> int:
    def extra(p):
        p.add_argument("--paced", action="store_true", help="only: a paced chunked recording, chunk writes on the tick thread vs background")
        p.add_argument("--vs-rerun-only", action="store_true", help="only the side-by-side run with rerun")
        p.add_argument("--assets", type=int, default=10_000, help="assets in the side-by-side run (default 10000)")
        p.add_argument("--ticks", type=int, default=600, help="ticks in the side-by-side run (default 600)")

    args = parse_args(__doc__.splitlines()[0], extra)
    rep = Report("record", args)
    workdir = Path(tempfile.mkdtemp(prefix="twinstage-bench-record-"))
    if args.paced:
        try:
            paced(rep, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return rep.finish()
    try:
        side_by_side(rep, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.vs_rerun_only:
        return rep.finish()
    sizes = [1_000, 10_000, 100_000]
    ticks = {1_000: 300, 10_000: 300, 100_000: 120} if not args.quick else {1_000: 120, 10_000: 120, 100_000: 30}
    workdir = Path(tempfile.mkdtemp(prefix="twinstage-bench-record-"))
    rows = []
    try:
        for n in sizes:
            log(args, f"record: {n} assets ...")
            table, stage = build(n)
            k = args.repeat or ticks[n]
            for mode, moving in (("1of5", ("temperature",)), ("5of5", CHANNELS)):
                rec, floor, floor_tick = sinks(table, stage, workdir, f"{n}-{mode}")
                state = {"tick": 0}

                def before(r, moving=moving):
                    for name in moving:
                        table[name][:] += 0.01
                    state["tick"] += 1
                    state["frame"] = table.diff(state["tick"], state["tick"] / RATE, time.time())

                # two halves, each followed by one save of each layer (saves are timed on their own)
                samples: dict[str, list[float]] = {}
                saves: dict[str, list[float]] = {"recorder": [], "floor": []}
                for half in range(2):
                    interleaved({"recorder": lambda: rec.consume(state["frame"]), "floor": lambda: floor_tick(state["frame"])},
                                repeat=k // 2, warmup=2 if half == 0 else 0, before=before, samples=samples)
                    for label, fn in (("recorder", rec.save), ("floor", floor.Save)):
                        t0 = time.perf_counter()
                        fn()
                        saves[label].append(time.perf_counter() - t0)
                med = {name: float(np.median(v)) for name, v in samples.items()}
                recorded = state["tick"]
                size_mb = rec.path.stat().st_size / 1e6
                # sanity: the recording holds the last tick's values
                last = np.asarray(rec.layer.QueryTimeSample(rec._paths["temperature"][0], float(recorded)))
                assert np.array_equal(last, table["temperature"]), "recorder wrote wrong values"
                r = med["recorder"] / med["floor"]
                key = f"{n // 1000}k_{mode}"
                label = f"{n // 1000}k"
                rep.figure(f"record_{key}_ticks", recorded)
                rep.figure(f"record_{key}_recorder_ms_per_tick", med["recorder"] * 1e3)
                rep.figure(f"record_{key}_floor_ms_per_tick", med["floor"] * 1e3)
                rep.figure(f"record_{key}_recorder_over_floor_ratio", r)
                rep.figure(f"record_{key}_save_recorder_half_ms", saves["recorder"][0] * 1e3)
                rep.figure(f"record_{key}_save_recorder_ms", saves["recorder"][1] * 1e3)
                rep.figure(f"record_{key}_save_floor_ms", saves["floor"][1] * 1e3)
                rep.figure(f"record_{key}_save_per_tick_at_2s_ms", saves["recorder"][1] / (2.0 * RATE) * 1e3)
                rep.figure(f"record_{key}_file_mb", size_mb)
                s = rep.target(f"{label} assets, {len(moving)}/5 channels moving: recorder/floor", f"record_{key}_recorder_over_floor_ratio", r, 1.5)
                rows.append([label, f"{len(moving)}/5", recorded, med["recorder"] * 1e3, med["floor"] * 1e3, r, s,
                             saves["recorder"][0] * 1e3, saves["recorder"][1] * 1e3, saves["floor"][1] * 1e3, size_mb])
                rec.layer = None  # done with this recording (close() would save again)
                del rec, floor, floor_tick
            del table, stage
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rep.table(f"Recording at {RATE:g} Hz, 5 float channels (median ms per tick; saves after half and all of the ticks)",
              ["assets", "moving", "ticks", "recorder ms", "floor ms", "rec/floor", "<=1.5", "save @½ ms", "save rec ms", "save floor ms", "file MB"],
              rows)
    rep.note("floor = bare Sdf.Layer.SetTimeSample of Vt arrays from numpy (values + quality per channel, tick, simTime) on a .usdc layer")
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
