"""Scale: generate, open, tick 100 times with columnar state and a chunked recording.

For each size N (``--assets N`` or ``--sizes 1000,10000,...``) one fresh subprocess
runs the phases of a plant-sized twin on a factory scene (``generate_factory(N)``,
cached under ``out/bench/`` like ``bench/open.py``) and reports each phase's time
and the process's RSS after it (and the peak):

1. ``generate`` — only when the scene is not cached yet (timed in the parent);
2. ``open`` — ``twinstage.open(path, rate=60)`` (read cache off: a first open);
3. ``ticks`` — 100 ticks (the thermal model moves every machine's temperature) with
   the per-prim LiveWriter (default budget), the ColumnarWriter and a chunked
   Recorder (value clips, a chunk per 2 s of sim time) attached; median ms per tick;
4. ``close`` — flush the live writes, final save of the recording.

The growth from one size to the next (time and RSS per asset) says whether each
phase is linear. Serving to a client is not part of this bench (see ``bench/fanout.py``).

``--memory N`` instead measures memory per part of an N-asset twin (stage, table,
previous-state copy, writers, recorder one-file vs chunked).

    python bench/scale.py [--assets N | --sizes 1000,10000,100000] [--ticks 100] [--json]
    python bench/scale.py --memory 10000
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, log, parse_args

ROOT = Path(__file__).resolve().parents[1]


def _status() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _child(path: str, ticks: int) -> None:
    import inspect

    import twinstage
    from twinstage.runtime import _engine
    from twinstage.usd import read_twin
    from twinstage.usd._recorder import Recorder

    if "read_twin" not in inspect.getsource(_engine.read_scene):  # not wired yet (see bench/open.py)
        def read_scene(stage, source):
            desc = read_twin(stage)
            return desc.prims, {a.path: a for a in desc.assets}, list(desc.declarations)

        _engine.read_scene = read_scene
    out: dict = {"rss_start_mb": _status()["VmRSS"]}
    t0 = time.perf_counter()
    twin = twinstage.open(path, rate=60.0)
    out["open_s"] = time.perf_counter() - t0
    out["rss_open_mb"] = _status()["VmRSS"]
    rec_dir = Path(tempfile.mkdtemp(prefix="twinstage-scale-"))
    rec = twin.add_sink(Recorder(rec_dir / "rec.usdc", chunked=True, save_every_s=2.0, reproducible=True))
    times = []
    for _ in range(ticks):
        t = time.perf_counter()
        twin.tick()
        times.append(time.perf_counter() - t)
    out["tick_median_ms"] = statistics.median(times) * 1e3
    out["tick_p95_ms"] = sorted(times)[int(0.95 * (len(times) - 1))] * 1e3
    out["ticks_s"] = sum(times)
    out["rss_ticks_mb"] = _status()["VmRSS"]
    st = twin.stats()["writer"]
    out["per_prim_max_staleness_s"] = st["max_staleness_s"]
    t = time.perf_counter()
    twin.close()
    out["close_s"] = time.perf_counter() - t
    out["recording_mb"] = sum(f.stat().st_size for f in rec_dir.rglob("*") if f.is_file()) / 1e6
    out["chunks"] = len(list(rec_dir.rglob("0*.usdc")))
    out["saves"] = rec.saves
    s = _status()
    out["rss_end_mb"], out["peak_rss_mb"] = s["VmRSS"], s["VmHWM"]
    out["assets"] = len(twin.table.prims)
    print(json.dumps(out))


def _memory(path: str) -> dict[str, float]:
    """Memory per part of an opened twin (MB): RSS deltas for what USD holds, sizes of the numpy parts."""
    import gc
    import tracemalloc

    from twinstage.state import StateTable
    from twinstage.usd import open_stage, read_twin
    from twinstage.usd._recorder import Recorder
    from twinstage.usd._writer import ColumnarWriter, LiveWriter, create_live_layer

    rss = lambda: _status()["VmRSS"]  # noqa: E731
    res: dict[str, float] = {}
    gc.collect()
    r0 = rss()
    stage = open_stage(path)
    gc.collect()
    res["stage (Usd.Stage.Open), RSS"] = rss() - r0
    tracemalloc.start()
    desc = read_twin(stage, cache=False)
    res["read_twin description (transient), heap"] = tracemalloc.get_traced_memory()[0] / 2**20
    m0 = tracemalloc.get_traced_memory()[0]
    table = StateTable(desc.prims, desc.declarations)
    gc.collect()
    res["StateTable, heap (all of it)"] = (tracemalloc.get_traced_memory()[0] - m0) / 2**20  # numpy buffers are traced too
    del desc
    gc.collect()
    res["  values"] = sum(v.nbytes for v in table._values.values()) / 2**20
    res["  previous-state copy (for diff)"] = sum(v.nbytes for v in table._prev.values()) / 2**20
    res["  quality flags + previous"] = (sum(v.nbytes for v in table._quality.values()) + sum(v.nbytes for v in table._prev_quality.values())) / 2**20
    res["  limits, rows"] = sum(ch.lo.nbytes + ch.hi.nbytes + ch.prim_index.nbytes for ch in table.channels.values()) / 2**20
    m0, r3 = tracemalloc.get_traced_memory()[0], rss()
    layer = create_live_layer(stage)
    writer = LiveWriter()
    writer.bind(stage, table, layer)
    gc.collect()
    res["LiveWriter at open (prim overs, arrays), RSS"] = rss() - r3
    r3 = rss()
    columns = ColumnarWriter()
    columns.bind(stage, table, layer)
    gc.collect()
    res["ColumnarWriter (arrays in the live layer), RSS"] = rss() - r3
    r3 = rss()
    for t in range(1, 61):
        table["temperature"][:] += 0.01
        frame = table.diff(t, t / 60, time.time())
        writer.consume(frame)
        columns.consume(frame)
    gc.collect()
    res["60 ticks, temperature moving (specs made on first write), RSS"] = rss() - r3
    tracemalloc.stop()
    for chunked in (False, True):
        r4 = rss()
        rec = Recorder(Path(tempfile.mkdtemp(prefix="twinstage-mem-")) / "r.usdc", chunked=chunked, save_every_s=1e9, chunk_ticks=60 if chunked else None)
        rec.bind(stage, table, rate=60.0)
        for t in range(61, 661):
            for name in ("temperature", "heatInput", "ambientTemperature", "timeConstant"):
                table[name][:] += 0.01
            rec.consume(table.diff(t, t / 60, time.time()))
        gc.collect()
        res[f"Recorder, {'chunked (60-tick chunks)' if chunked else 'one file'}, 600 ticks x 4 moving, RSS"] = rss() - r4
        rec.close()
        rec.layer = None
        del rec
        gc.collect()
    res["assets"] = len(table.prims)
    return res


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory(sys.argv[2])))
        return 0

    def extra(p):
        p.add_argument("--assets", type=int, default=None, help="one size")
        p.add_argument("--sizes", default=None, help="comma-separated sizes (default 1000,10000,100000)")
        p.add_argument("--ticks", type=int, default=100)
        p.add_argument("--memory", type=int, default=None, metavar="N", help="only: memory per part of an N-asset twin")

    args = parse_args(__doc__.splitlines()[0], extra)
    rep = Report("scale", args)
    sys.path.insert(0, str(Path(__file__).parent))
    from open import GENERATED, scene  # the same cached factory scenes

    if args.memory:
        path = scene(args.memory, "usdc", args)
        env = dict(os.environ, TWINSTAGE_READ_CACHE="0", PYTHONPATH=str(ROOT / "src"))
        r = subprocess.run([sys.executable, __file__, "--memory-child", str(path)], env=env, capture_output=True, text=True, timeout=3600)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        res = json.loads(r.stdout.strip().splitlines()[-1])
        n = res.pop("assets")
        for k, v in res.items():
            rep.figure("memory_" + "_".join(k.replace(",", "").split()).lower(), v)
        rep.table(f"Memory per part, {n} assets (MB and bytes per asset; RSS deltas include what USD allocates)",
                  ["part", "MB", "B/asset"], [[k, v, v * 2**20 / n] for k, v in res.items()])
        return rep.finish()
    sizes = [args.assets] if args.assets else [int(s) for s in (args.sizes or "1000,10000,100000").split(",")]
    rows = []
    prev = None
    for n in sizes:
        path = scene(n, "usdc", args)
        gen_s = GENERATED.get(path)
        log(args, f"scale: {n} assets: open + {args.ticks} ticks + close in a fresh process ...")
        env = dict(os.environ, TWINSTAGE_READ_CACHE="0", PYTHONPATH=str(ROOT / "src"))
        r = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.ticks)], env=env, capture_output=True, text=True, timeout=7200)
        if r.returncode:
            rep.note(f"{n} assets: the run failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
            log(args, r.stderr[-3000:])
            break
        res = json.loads(r.stdout.strip().splitlines()[-1])
        label = f"{n // 1000}k" if n >= 1000 else str(n)
        if gen_s is not None:
            rep.figure(f"scale_{label}_generate_s", gen_s)
        for k, v in res.items():
            rep.figure(f"scale_{label}_{k}", v)
        per = {"open_us_per_asset": res["open_s"] / n * 1e6, "tick_us_per_asset": res["tick_median_ms"] / n * 1e3,
               "rss_kb_per_asset": (res["peak_rss_mb"] - res["rss_start_mb"]) * 1024 / n}
        for k, v in per.items():
            rep.figure(f"scale_{label}_{k}", v)
        growth = ""
        if prev is not None:
            f = n / prev[0]
            g = [res["open_s"] / prev[1]["open_s"] / f, res["tick_median_ms"] / prev[1]["tick_median_ms"] / f,
                 (res["peak_rss_mb"] - res["rss_start_mb"]) / max(1e-9, prev[1]["peak_rss_mb"] - prev[1]["rss_start_mb"]) / f]
            for k, v in zip(("open", "tick", "rss"), g):
                rep.figure(f"scale_{label}_{k}_growth_over_linear_ratio", v)
            growth = " / ".join(f"{v:.2f}" for v in g)
        rows.append([label, gen_s if gen_s is not None else "cached", res["open_s"], res["tick_median_ms"], res["tick_p95_ms"],
                     res["per_prim_max_staleness_s"], res["close_s"], res["rss_open_mb"], res["peak_rss_mb"], per["rss_kb_per_asset"],
                     res["recording_mb"], growth or "-"])
        prev = (n, res)
    rep.table(f"Scale: {args.ticks} ticks at 60 Hz with per-prim writes, columnar state and a chunked recording (one process per size)",
              ["assets", "generate s", "open s", "tick ms (median)", "tick ms (p95)", "per-prim staleness s", "close s",
               "RSS after open MB", "peak RSS MB", "KB/asset", "recording MB", "growth/linear open/tick/RSS"], rows)
    rep.note("growth/linear: (figure at N / figure at the previous size) / (N / previous N); 1.0 = linear")
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
