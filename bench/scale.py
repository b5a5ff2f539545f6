"""Scale: generate, open, tick 100 times with columnar state and a chunked recording.

For each size N (``--assets N`` or ``--sizes 1000,10000,...``) fresh subprocesses
run the phases of a plant-sized twin on a factory scene (``write_factory(N)``,
cached under ``out/bench/`` like ``bench/open.py``) and report each phase's time
and the process's RSS after it (and each phase's sampled peak):

1. ``generate`` — only when the scene is not cached yet (its own process); with
   ``--area-size A`` and N > A the machines go into area sublayers of A machines each;
2. ``open`` — ``twinstage.open(path, rate=60)`` (read cache off: a first open);
3. ``ticks`` — 100 ticks (the thermal model moves every machine's temperature) with
   the per-prim LiveWriter (default budget), the ColumnarWriter and a chunked
   Recorder (value clips, a chunk per 2 s of sim time) attached; median ms per tick;
4. ``serve`` — a bridge ``Server`` added to the live twin on 127.0.0.1 (its start
   builds the hello and the scene's GLB), one ``twinstage.bridge.Client`` (compact
   hello, binary state) connects and subscribes while the twin keeps ticking, until it
   has received ``--messages`` state messages: time to start, to hello, to the
   snapshot, hello bytes, state messages per second;
5. ``close`` — flush the live writes, final save of the recording.

A memory guard (``--min-free-gb``, default 3) watches the machine's available memory
every 0.5 s in each child: below the floor the child stops and reports
``broke: memory during <phase>`` — what breaks first. The growth from one size to the
next (time and RSS per asset) says whether each phase is linear.

``--memory N`` instead measures memory per part of an N-asset twin (stage, table,
previous-state copy, writers, recorder one-file vs chunked).

    python bench/scale.py [--assets N | --sizes 1000,10000,100000] [--ticks 100] [--messages 100]
                          [--area-size A] [--min-free-gb 3] [--json]
    python bench/scale.py --memory 10000
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, log, parse_args
from _scale_guard import Guard
from _scale_guard import status_mb as _status

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench"


def _generate_child(path: str, n: int, area_size: int, min_free_gb: float) -> None:
    with Guard(min_free_gb, phase="generate") as g:
        from twinstage.scenes._factory import write_factory

        g.result["rss_start_mb"] = _status()["VmRSS"]
        t0 = time.perf_counter()
        write_factory(n, path, area_size=area_size or None)
        g.result["generate_s"] = time.perf_counter() - t0
        g.phase("done")
        g.finish()


def _child(path: str, ticks: int, messages: int, min_free_gb: float) -> None:
    with Guard(min_free_gb) as g:
        _phases(g, path, ticks, messages)
        g.finish()


def _phases(g: Guard, path: str, ticks: int, messages: int) -> None:
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
    out = g.result
    out["rss_start_mb"] = _status()["VmRSS"]
    g.phase("open")
    t0 = time.perf_counter()
    twin = twinstage.open(path, rate=60.0)
    out["open_s"] = time.perf_counter() - t0
    out["rss_open_mb"] = _status()["VmRSS"]
    rec_dir = Path(tempfile.mkdtemp(prefix="twinstage-scale-"))
    rec = twin.add_sink(Recorder(rec_dir / "rec.usdc", chunked=True, save_every_s=2.0, reproducible=True))
    times = []
    g.phase("ticks")
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
    stage = twin.stage
    if messages:
        from _scale_serve import serve_phase

        serve_phase(g, twin, messages)
    g.phase("close")
    t = time.perf_counter()
    twin.close()
    out["close_s"] = time.perf_counter() - t
    out["recording_mb"] = sum(f.stat().st_size for f in rec_dir.rglob("*") if f.is_file()) / 1e6
    out["chunks"] = len(list(rec_dir.rglob("0*.usdc")))
    out["saves"] = rec.saves
    out["assets"] = len(twin.table.prims)
    out["rss_close_mb"], out["peak_rss_close_mb"] = _status()["VmRSS"], _status()["VmHWM"]
    shutil.rmtree(rec_dir, ignore_errors=True)
    if messages:
        from _scale_serve import glb_phase

        glb_phase(g, stage)
    g.phase("done")


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


def scene(n: int, area_size: int, args) -> tuple[Path | None, dict | None]:
    """The cached factory scene of ``n`` machines (``bench/open.py``'s names for one layer), generated
    in a guarded child when missing: (path or None when generation broke, the child's figures or None)."""
    from twinstage.scenes import _factory

    key = hashlib.sha1(Path(_factory.__file__).read_bytes()).hexdigest()[:10]
    OUT.mkdir(parents=True, exist_ok=True)
    areas = bool(area_size) and n > area_size
    final = OUT / (f"factory-{n}-{key}-areas{area_size}" if areas else f"factory-{n}-{key}.usdc")
    path = final / "factory.usdc" if areas else final
    if final.exists():
        return path, None
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    target = tmp / "factory.usdc" if areas else tmp.with_suffix(".usdc")
    log(args, f"scale: generating {n} assets{f' in areas of {area_size}' if areas else ''} -> {final} ...")
    res = _run_child(["--generate-child", str(target), str(n), str(area_size or 0), str(args.min_free_gb)], args, n)
    if "broke" in res or "failed" in res:
        shutil.rmtree(tmp, ignore_errors=True)
        target.unlink(missing_ok=True)
        return None, res
    (tmp if areas else target).replace(final)
    log(args, f"scale: generated in {res['generate_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB")
    return path, res


def _run_child(argv: list[str], args, n: int) -> dict:
    """One guarded child; its JSON line (``failed`` added when it died without one). Its stderr is kept in
    ``out/bench/scale-<child>-<n>.stderr.log``."""
    env = dict(os.environ, TWINSTAGE_READ_CACHE="0", PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, timeout=4 * 3600)
    if r.stderr.strip():  # warnings and server logs of a run that did not fail are worth keeping too
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"scale-{argv[0].strip('-')}-{n}.stderr.log").write_text(r.stderr)
    lines = r.stdout.strip().splitlines()
    try:
        res = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        res = {}
    if r.returncode and "broke" not in res or not res:
        log(args, r.stderr[-3000:])
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        res["failed"] = f"exit {r.returncode}: {last}"
    return res


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--generate-child":
        _generate_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory(sys.argv[2])))
        return 0

    def extra(p):
        p.add_argument("--assets", type=int, default=None, help="one size")
        p.add_argument("--sizes", default=None, help="comma-separated sizes (default 1000,10000,100000)")
        p.add_argument("--ticks", type=int, default=100)
        p.add_argument("--messages", type=int, default=100, help="state messages the served client receives (0: no serve phase)")
        p.add_argument("--area-size", type=int, default=0, metavar="A", help="scenes of more than A machines as area sublayers of A each (0: one layer)")
        p.add_argument("--min-free-gb", type=float, default=3.0, help="stop a phase when the machine's available memory falls below this")
        p.add_argument("--memory", type=int, default=None, metavar="N", help="only: memory per part of an N-asset twin")

    args = parse_args(__doc__.splitlines()[0], extra)
    rep = Report("scale", args)
    if args.memory:
        sys.path.insert(0, str(Path(__file__).parent))
        from open import scene as open_scene

        path = open_scene(args.memory, "usdc", args)
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
    from _scale_report import add_size

    rows: list[list] = []
    prev = None
    for n in sizes:
        path, gen = scene(n, args.area_size, args)
        res = {} if path is None else None
        if path is not None:
            log(args, f"scale: {n} assets: open + {args.ticks} ticks + serve + close in a fresh process ...")
            res = _run_child(["--child", str(path), str(args.ticks), str(args.messages), str(args.min_free_gb)], args, n)
        prev, stop = add_size(rep, rows, n, gen, res, prev, args)
        if stop:
            break
    from _scale_report import finish

    return finish(rep, rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
