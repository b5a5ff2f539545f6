"""Sweep throughput: N short pump-testbed scenarios on 1 vs 2 local workers and a 2-worker Dask LocalCluster.

    .venv/bin/python bench/sweep.py            # 200 runs of 30 sim s each
    .venv/bin/python bench/sweep.py --runs 20 --json

All sweeps run in this one process, on the same spec and points (seeded Latin hypercube
over both valve openings), into sibling folders, interleaved (the order rotates every
repeat); the result tables (minus wall-clock columns) and every recording's SHA-256 must
be identical. Ratios: ``speedup_2w_ratio`` = wall(1 worker) / wall(2 workers) (goal >= 1.8),
``dask_vs_local_ratio`` = wall(Dask, 2 workers) / wall(2 local workers) (goal <= 1.2), Dask
being the cluster twinstage starts itself (``run_sweep(scheduler="local:2")``:
``twinstage.scenarios.local_cluster``, tuned for sweeps). ``dask_stock_vs_local_ratio``:
the same on a stock ``LocalCluster(n_workers=2, threads_per_worker=1)`` (``--no-stock`` skips it).
A Dask cluster's own start is not part of its sweep's wall (a user's cluster is running
already); a local pool's process start is (it starts with the sweep).

Where the time goes, per executor: CPU seconds of this process (for Dask: the client, the
scheduler and the nannies live here) and of all its child processes (workers) during the
sweep, sampled with psutil every 0.1 s; worker CPU per run; the median run/task wall inside
a worker; worker utilisation = sum of task walls / (workers × sweep wall) — what is not
spent in tasks is start-up and scheduling; for Dask, from its task stream (a second client
registers the scheduler's task-stream plugin before the sweep), the gap a worker waits between
one run's end and the next one's start, and when the last worker's first run started.
Per-run cost is split into process start (a
fresh pool's first trivial task), stage start (opening the scene; forks are cheap) and the
run itself (median ``run_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SRC = ROOT / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
WALL = ["wall_s", "run_s"]
NAMES = {"local1": "1 local worker", "local2": "2 local workers", "dask2": "Dask, 2 workers", "dask2_stock": "Dask stock, 2 workers"}


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


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of this process and of its descendants while it runs."""

    def __init__(self) -> None:
        import psutil

        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._halt = threading.Event()
        self._sample(first=True)

    def _sample(self, first: bool = False) -> None:
        import psutil

        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.last[p.pid] = t.user + t.system
            if first:
                self.first[p.pid] = self.last[p.pid]

    def run(self) -> None:
        while not self._halt.wait(0.1):
            self._sample()

    def finish(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        self._sample()
        main = self.last[self.me.pid] - self.first[self.me.pid]
        children = sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items() if pid != self.me.pid)
        return {"main_cpu_s": main, "workers_cpu_s": children}


def _gaps(stream: list, t0: float) -> dict[str, float]:
    """From Dask's task stream: per worker, the idle gap between one run's end and the next one's start."""
    per: dict[str, list[tuple[float, float]]] = {}
    for rec in stream:
        comp = [s for s in rec.get("startstops", ()) if s["action"] == "compute"]
        if str(rec.get("key", "")).startswith("twinstage-run-") and comp:
            per.setdefault(rec["worker"], []).append((comp[0]["start"], comp[0]["stop"]))
    gaps, first = [], []
    for iv in per.values():
        iv.sort()
        first.append(iv[0][0] - t0)
        gaps += [iv[i + 1][0] - iv[i][1] for i in range(len(iv) - 1)]
    if not gaps:
        return {}
    gaps.sort()
    return {"gap_median_ms": 1000 * gaps[len(gaps) // 2], "gap_p90_ms": 1000 * gaps[int(0.9 * len(gaps))], "gap_sum_s": sum(gaps),
            "first_start_s": max(first)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0, help="sim seconds per run (10 Hz)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the sweeps; walls are medians (default 1)")
    ap.add_argument("--no-stock", action="store_true", help="skip the stock LocalCluster comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import logging
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow.parquet as pq
    import yaml
    from distributed import LocalCluster

    import twinstage
    from twinstage.scenarios import parse_spec, run_scenario
    from twinstage.scenarios._sweep import _context, run_sweep

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="twinstage-bench-sweep-"))
    spec_path = tmp / "bench.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(args.duration)))
    ranges = {"Valve2.opening": "0.2:1.0", "Valve1.opening": "0.35:1.0"}
    names = ["local1", "local2", "dask2"] + ([] if args.no_stock else ["dask2_stock"])
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[dict[str, float]]] = {n: [] for n in names}
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

        def sweep(name: str, **kw) -> object:
            client = None
            if "scheduler" in kw:  # Dask's task stream: when each run started and stopped on its worker
                from distributed import Client

                client = Client(kw["scheduler"], set_as_default=False)
                client.get_task_stream(start=time.time())  # registers the scheduler plugin before the sweep
            sampler = CpuSampler()
            sampler.start()
            t0 = time.time()
            t = time.perf_counter()
            res = run_sweep(spec_path, tmp / name, grid=ranges, samples=args.runs, seed=1, progress=False, **kw)
            walls[name].append(time.perf_counter() - t)
            cpu[name].append(sampler.finish())
            if client is not None:
                cpu[name][-1].update(_gaps(client.get_task_stream(start=t0 - 1), t0))
                client.close()
            return res

        for rep in range(args.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                shutil.rmtree(tmp / name, ignore_errors=True)  # every repeat runs every point again
                if name == "dask2":
                    from twinstage.scenarios import local_cluster

                    with local_cluster(2) as cluster:  # what run_sweep(scheduler="local:2") starts, started apart
                        res = sweep(name, scheduler=cluster.scheduler_address)
                elif name == "dask2_stock":
                    env = dict(os.environ)  # stock nannies leave OMP_NUM_THREADS, MALLOC_TRIM_THRESHOLD_ … in this process
                    try:
                        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                                          silence_logs=logging.ERROR) as cluster:
                            res = sweep(name, scheduler=cluster.scheduler_address)
                    finally:
                        os.environ.clear()
                        os.environ.update(env)
                else:
                    res = sweep(name, workers=int(name[-1]))
                if res.failed:
                    print(f"{name}: {len(res.failed)} runs failed: {res.failed[0]['error']}", file=sys.stderr)
                    return 1
                tables[name] = pq.read_table(tmp / name / "results.parquet").to_pandas()
        base_t = tables["local1"].drop(columns=WALL)
        identical = all(tables[n].drop(columns=WALL).equals(base_t) for n in tables)
        run_s = statistics.median(tables["local1"]["run_s"])
        task_s = statistics.median(tables["local1"]["wall_s"])
        per = {}
        for n in names:  # from the last repeat's table (the walls are medians over repeats)
            w = statistics.median(walls[n])
            nw = 1 if n == "local1" else 2
            per[n] = {
                "wall_s": w, "runs_per_s": args.runs / w,
                "median_task_s": statistics.median(tables[n]["wall_s"]), "median_run_s": statistics.median(tables[n]["run_s"]),
                "utilisation": float(tables[n]["wall_s"].sum()) / (nw * walls[n][-1]),
                "main_cpu_s": statistics.median(c["main_cpu_s"] for c in cpu[n]),
                "workers_cpu_s": statistics.median(c["workers_cpu_s"] for c in cpu[n]),
            }
            for k in ("gap_median_ms", "gap_p90_ms", "gap_sum_s", "first_start_s"):
                if all(k in c for c in cpu[n]):
                    per[n][k] = statistics.median(c[k] for c in cpu[n])
            per[n]["worker_cpu_per_run_ms"] = 1000 * per[n]["workers_cpu_s"] / args.runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load_end = os.getloadavg()
    out = {
        "runs": args.runs, "repeat": args.repeat, "walls_s": walls, "cpu": cpu, "executors": per, "ticks_per_run": int(args.duration * 10),
        "cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": load_end,
        "wall_local1_s": per["local1"]["wall_s"], "wall_local2_s": per["local2"]["wall_s"], "wall_dask2_s": per["dask2"]["wall_s"],
        "speedup_2w_ratio": per["local1"]["wall_s"] / per["local2"]["wall_s"],
        "dask_vs_local_ratio": per["dask2"]["wall_s"] / per["local2"]["wall_s"],
        "identical": identical,
        "process_start_s": proc_start, "stage_open_s": stage_open, "fork_s": fork,
        "run_bare_s": bare, "run_recorded_s": recorded, "median_run_s": run_s, "median_task_s": task_s,
        "record_overhead_ratio": recorded / bare,
    }
    if "dask2_stock" in per:
        out["dask_stock_vs_local_ratio"] = per["dask2_stock"]["wall_s"] / per["local2"]["wall_s"]
        out["dask_tuned_vs_stock_ratio"] = per["dask2"]["wall_s"] / per["dask2_stock"]["wall_s"]
    if args.json:
        print(json.dumps(out))
        return 0 if identical else 1
    ok = {"speedup": out["speedup_2w_ratio"] >= 1.8, "dask": out["dask_vs_local_ratio"] <= 1.2}
    print(f"{args.runs} runs × {out['ticks_per_run']} ticks (pump testbed, seeded LHS over two valve openings); median of {args.repeat}; "
          f"{out['cpus']} CPUs, load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")
    print(f"{'executor':<24}{'wall s':>8}{'runs/s':>8}{'ratio':>7}{'task ms':>9}{'util':>6}{'main cpu s':>11}{'worker cpu s':>13}{'/run ms':>9}")
    for n in names:
        p = per[n]
        ratio = {"local1": 1.0, "local2": out["speedup_2w_ratio"], "dask2": out["dask_vs_local_ratio"]}.get(n, out.get("dask_stock_vs_local_ratio", 0))
        print(f"{NAMES[n]:<24}{p['wall_s']:>8.2f}{p['runs_per_s']:>8.1f}{ratio:>7.2f}{1000 * p['median_task_s']:>9.1f}{p['utilisation']:>6.2f}"
              f"{p['main_cpu_s']:>11.2f}{p['workers_cpu_s']:>13.2f}{p['worker_cpu_per_run_ms']:>9.1f}")
    print(f"speedup_2w_ratio     {out['speedup_2w_ratio']:.2f}  (goal >= 1.8: {'PASS' if ok['speedup'] else 'MISS'})")
    print(f"dask_vs_local_ratio  {out['dask_vs_local_ratio']:.2f}  (goal <= 1.2: {'PASS' if ok['dask'] else 'MISS'}; Dask = local_cluster(2), tuned)")
    if "dask2_stock" in per:
        print(f"dask_stock_vs_local_ratio {out['dask_stock_vs_local_ratio']:.2f}  (stock LocalCluster, for comparison; tuned/stock "
              f"{out['dask_tuned_vs_stock_ratio']:.2f})")
    for n in names:
        if "gap_median_ms" in per[n]:
            p = per[n]
            print(f"{NAMES[n]}: a worker waits {p['gap_median_ms']:.1f} ms (median; p90 {p['gap_p90_ms']:.1f} ms, {p['gap_sum_s']:.2f} s in all) "
                  f"between one run's end and the next one's start; the last worker's first run starts {p['first_start_s']:.2f} s in")
    print(f"identical results and recordings on all executors: {identical}")
    print("per-run cost (s):")
    print(f"  process start (fresh pool, first task) {proc_start:.3f}   stage open {stage_open:.3f}   fork {fork * 1e3:.2f} ms")
    print(f"  run bare {bare:.3f}   run + recording {recorded:.3f}   median run in sweep {run_s:.3f}   median task {task_s:.3f}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
