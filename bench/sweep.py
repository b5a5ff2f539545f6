"""Sweep throughput: N short pump-testbed scenarios on 1 vs 2 local workers and a 2-worker Dask LocalCluster.

    .venv/bin/python bench/sweep.py            # 200 runs of 30 sim s each
    .venv/bin/python bench/sweep.py --runs 20 --json

All three sweeps run in this one process, on the same spec and points (seeded Latin
hypercube over both valve openings), into sibling folders; the result tables (minus
wall-clock columns) and every recording's SHA-256 must be identical. Ratios:
``speedup_2w_ratio`` = wall(1 worker) / wall(2 workers) (goal >= 1.8),
``dask_vs_local_ratio`` = wall(Dask, 2 workers) / wall(2 local workers) (goal <= 1.2).
Per-run cost is split into process start (a fresh pool's first trivial task), stage
start (opening the scene; forks are cheap) and the run itself (median ``run_s``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _noop() -> int:
    return 0


def _spec(duration: float) -> dict:
    return {
        "name": "bench_throttle",
        "scene": str(ROOT / "scenes/pump_testbed.usda"),
        "duration": duration,
        "rate": 10.0,
        "events": [{"name": "throttle", "at": duration / 3, "set": "Valve2.opening", "value": 0.3}],
        "expect": [{"attribute": "Pump.pressure", "exceeds": 0.15, "after": duration / 3}],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0, help="sim seconds per run (10 Hz)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the three sweeps; walls are medians (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    from concurrent.futures import ProcessPoolExecutor
    from distributed import LocalCluster

    import twinstage
    from twinstage.scenarios import parse_spec, run_scenario
    from twinstage.scenarios._sweep import _context, run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="twinstage-bench-sweep-"))
    spec_path = tmp / "bench.yaml"
    import yaml

    spec_path.write_text(yaml.safe_dump(_spec(args.duration)))
    ranges = {"Valve2.opening": "0.2:1.0", "Valve1.opening": "0.35:1.0"}
    walls: dict[str, list[float]] = {"local1": [], "local2": [], "dask2": []}
    tables = {}
    try:
        # per-run overhead, measured apart
        t = time.perf_counter()
        with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
            pool.submit(_noop).result()
        proc_start = time.perf_counter() - t
        t = time.perf_counter()
        base = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True)
        stage_open = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(20):
            base.fork(seed=0).close()
        fork = (time.perf_counter() - t) / 20
        spec = parse_spec(_spec(args.duration))
        run_scenario(spec)  # warm
        t = time.perf_counter()
        run_scenario(spec)
        bare = time.perf_counter() - t
        t = time.perf_counter()
        run_scenario(spec, record=tmp / "one.usdc")
        recorded = time.perf_counter() - t

        for rep, (name, kw) in ((r, x) for r in range(args.repeat) for x in (("local1", {"workers": 1}), ("local2", {"workers": 2}), ("dask2", None))):
            shutil.rmtree(tmp / name, ignore_errors=True)  # every repeat runs every point again
            t = time.perf_counter()
            if kw is None:
                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
                    t = time.perf_counter()  # the cluster's own start is not the sweep's
                    res = run_sweep(spec_path, tmp / name, grid=ranges, samples=args.runs, seed=1, scheduler=cluster.scheduler_address, progress=False)
                    walls[name].append(time.perf_counter() - t)
            else:
                res = run_sweep(spec_path, tmp / name, grid=ranges, samples=args.runs, seed=1, progress=False, **kw)
                walls[name].append(time.perf_counter() - t)
            if res.failed:
                print(f"{name}: {len(res.failed)} runs failed: {res.failed[0]['error']}", file=sys.stderr)
                return 1
            tables[name] = pq.read_table(tmp / name / "results.parquet").to_pandas()
        base_t = tables["local1"].drop(columns=["wall_s", "run_s"])
        identical = all(tables[n].drop(columns=["wall_s", "run_s"]).equals(base_t) for n in tables)
        run_s = statistics.median(tables["local1"]["run_s"])
        task_s = statistics.median(tables["local1"]["wall_s"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    all_walls = walls
    walls = {k: statistics.median(v) for k, v in all_walls.items()}
    out = {
        "runs": args.runs, "repeat": args.repeat, "walls_s": all_walls, "ticks_per_run": int(args.duration * 10),
        "wall_local1_s": walls["local1"], "wall_local2_s": walls["local2"], "wall_dask2_s": walls["dask2"],
        "speedup_2w_ratio": walls["local1"] / walls["local2"],
        "dask_vs_local_ratio": walls["dask2"] / walls["local2"],
        "identical": identical,
        "process_start_s": proc_start, "stage_open_s": stage_open, "fork_s": fork,
        "run_bare_s": bare, "run_recorded_s": recorded, "median_run_s": run_s, "median_task_s": task_s,
        "record_overhead_ratio": recorded / bare,
    }
    if args.json:
        print(json.dumps(out))
        return 0 if identical else 1
    print(f"{args.runs} runs × {out['ticks_per_run']} ticks (pump testbed, seeded LHS over two valve openings); median of {args.repeat}")
    print(f"{'executor':<22}{'wall s':>9}{'runs/s':>9}{'ratio':>9}")
    print(f"{'1 local worker':<22}{walls['local1']:>9.2f}{args.runs / walls['local1']:>9.1f}{1.0:>9.2f}")
    print(f"{'2 local workers':<22}{walls['local2']:>9.2f}{args.runs / walls['local2']:>9.1f}{out['speedup_2w_ratio']:>9.2f}  (speedup vs 1)")
    print(f"{'Dask, 2 workers':<22}{walls['dask2']:>9.2f}{args.runs / walls['dask2']:>9.1f}{out['dask_vs_local_ratio']:>9.2f}  (vs 2 local)")
    print(f"identical results and recordings on all three: {identical}")
    print("per-run cost (s):")
    print(f"  process start (fresh pool, first task) {proc_start:.3f}   stage open {stage_open:.3f}   fork {fork * 1e3:.2f} ms")
    print(f"  run bare {bare:.3f}   run + recording {recorded:.3f}   median run in sweep {run_s:.3f}   median task {task_s:.3f}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
