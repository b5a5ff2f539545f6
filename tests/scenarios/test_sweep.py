"""Sweeps: identical results on 1 worker, N local workers and a Dask LocalCluster; worker death;
reruns skip finished runs; the CLI; an unreachable scheduler."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from twinstage.scenarios import parse_spec, sweep_points
from twinstage.scenarios._sweep import SweepError, run_sweep

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "throttle_short",
    "scene": str(ROOT / "scenes/pump_testbed.usda"),
    "duration": 6.0,
    "rate": 10.0,
    "events": [{"name": "throttle", "at": 2.0, "set": "Valve2.opening", "value": 0.3}],
    "expect": [{"attribute": "Pump.pressure", "exceeds": 0.2, "after": 2.0, "within": 1.0}],
}
GRID = {"Valve1.opening": [0.4, 0.7, 1.0], "events.throttle.value": [0.25, 0.9]}
WALL = ["wall_s", "run_s"]


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "throttle.yaml"
    import yaml

    p.write_text(yaml.safe_dump(SPEC))
    return p


def _table(out: Path):
    return pq.read_table(out / "results.parquet").to_pandas().drop(columns=WALL)


@pytest.fixture(scope="module")
def inline_sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweeps")
    spec = _spec(d)
    res = run_sweep(spec, d / "inline", grid=GRID, workers=0, progress=False)
    return d, spec, res


def test_inline_sweep_table_and_layers(inline_sweep):
    d, spec, res = inline_sweep
    df = _table(d / "inline")
    assert len(df) == 6 and (df["status"] == "ok").all()
    assert set(df.columns) >= {"run_id", "p:Valve1.opening", "p:events.throttle.value", "m:/Testbed/Pump.pressure:max", "recording_sha256"}
    # the weak throttle (0.9) does not raise pressure past 0.2 bar: those runs fail their expectation, the rest pass
    assert (df["passed"] == (df["p:events.throttle.value"] < 0.5)).all()
    from twinstage import Recording

    for _, row in df.iterrows():
        rec = Recording(d / "inline" / row["recording"])
        assert len(rec.times) == 60
        stamp = json.loads(rec.root.customLayerData["twinstage:scenario"])
        assert stamp["overrides"] == {"Valve1.opening": row["p:Valve1.opening"], "events.throttle.value": row["p:events.throttle.value"]}
    prov = json.loads(df["provenance"][0])
    assert prov["specDigest"] == parse_spec(SPEC).digest() and prov["seed"] == 0


def test_local_workers_and_dask_give_identical_results(inline_sweep):
    from distributed import LocalCluster

    d, spec, _ = inline_sweep
    base = _table(d / "inline")
    one = run_sweep(spec, d / "local1", grid=GRID, workers=1, progress=False)
    two = run_sweep(spec, d / "local2", grid=GRID, workers=2, progress=False)
    assert one.executor == "local[1]" and two.executor == "local[2]"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        dask = run_sweep(spec, d / "dasked", grid=GRID, scheduler=cluster.scheduler_address, progress=False)
    assert dask.executor == "dask"
    own = run_sweep(spec, d / "dask_own", grid=GRID, scheduler="local:2", progress=False)  # the tuned cluster run_sweep starts itself
    assert own.executor == "dask[local:2]" and not own.failed
    for name in ("local1", "local2", "dasked", "dask_own"):
        other = _table(d / name)
        assert other.equals(base), name  # bit-identical metrics, statuses, provenance and recording hashes
    assert base["recording_sha256"].str.len().eq(64).all() and base["recording_sha256"].nunique() == 6


def test_rerun_skips_finished_runs(inline_sweep, tmp_path):
    import shutil

    d, spec, _ = inline_sweep
    shutil.copytree(d / "inline", tmp_path / "inline")
    d = tmp_path
    again = run_sweep(spec, d / "inline", grid=GRID, workers=0, progress=False)
    assert again.skipped == 6 and not again.failed
    # a bigger grid reuses the finished points and runs only the new ones
    grid = {**GRID, "events.throttle.value": [0.25, 0.9, 0.5]}
    more = run_sweep(spec, d / "inline", grid=grid, workers=0, progress=False)
    assert len(more.rows) == 9 and more.skipped == 6  # run ids hash what determines a run, not its index
    assert all(r["status"] == "ok" for r in more.rows)
    assert [r["index"] for r in more.rows] == list(range(9))


def test_killed_worker_marks_that_run_failed(tmp_path):
    spec = _spec(tmp_path)
    res = run_sweep(spec, tmp_path / "out", grid=GRID, workers=2, progress=False, kill_runs=(2,))
    rows = {r["index"]: r for r in res.rows}
    assert len(rows) == 6
    assert rows[2]["status"] == "failed" and "worker process died" in rows[2]["error"] and "137" in rows[2]["error"]
    assert all(rows[i]["status"] == "ok" for i in rows if i != 2)
    df = pq.read_table(tmp_path / "out" / "results.parquet").to_pandas()
    assert list(df.sort_values("index")["status"]) == ["ok", "ok", "failed", "ok", "ok", "ok"]
    # the rerun retries the failed run only (here without the fault: it completes)
    again = run_sweep(spec, tmp_path / "out", grid=GRID, workers=1, progress=False)
    assert again.skipped == 5 and not again.failed


def test_cli_sweep_and_unreachable_scheduler(tmp_path):
    spec = _spec(tmp_path)
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "twinstage", "sweep", str(spec), "--grid", "Valve1.opening=0.5:1.0:2", "--grid",
                        "events.throttle.value=0.25", "--workers", "2", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "2 runs" in p.stdout and "sweep [" in p.stderr and "2/2" in p.stderr
    assert len(pq.read_table(out / "results.parquet")) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([sys.executable, "-m", "twinstage", "sweep", str(spec), "--grid", "Valve1.opening=0.5:1.0:2", "--scheduler",
                        f"tcp://127.0.0.1:{port}", "--connect-timeout", "2", "-o", str(tmp_path / "never")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot reach the Dask scheduler" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "twinstage", "sweep", str(spec), "--grid", "Valve1.opening=0.5", "--scheduler", "local:0",
                        "-o", str(tmp_path / "never")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "'local:0'" in p.stderr and "local:N" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(SweepError):
        run_sweep(spec, tmp_path / "never", grid={"Valve1.opening": [1.0]}, scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1, progress=False)


def test_sampling_is_seeded_latin_hypercube():
    pts = sweep_points(ranges={"a": (0.0, 1.0), "b": (10.0, 20.0)}, samples=10, method="lhs", seed=3)
    assert pts == sweep_points(ranges={"a": (0.0, 1.0), "b": (10.0, 20.0)}, samples=10, method="lhs", seed=3)
    a = np.array([p["a"] for p in pts])
    b = np.array([p["b"] for p in pts])
    assert sorted(np.floor(a * 10).astype(int).tolist()) == list(range(10))  # one point per stratum
    assert sorted(np.floor(b - 10).astype(int).tolist()) == list(range(10))
    assert pts != sweep_points(ranges={"a": (0.0, 1.0), "b": (10.0, 20.0)}, samples=10, method="lhs", seed=4)
    grid = sweep_points({"x": [1.0, 2.0]}, {"a": (0.0, 1.0)}, samples=3, method="random", seed=0)
    assert len(grid) == 6 and {p["x"] for p in grid} == {1.0, 2.0}


def test_dask_worker_death_fails_that_run_only(tmp_path):
    from distributed import LocalCluster

    spec = _spec(tmp_path)
    grid = {"Valve1.opening": [0.5, 1.0], "events.throttle.value": [0.25]}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        res = run_sweep(spec, tmp_path / "out", grid=grid, scheduler=cluster.scheduler_address, progress=False, kill_runs=(1,))
    rows = {r["index"]: r for r in res.rows}
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and "worker process died" in rows[1]["error"] and "KilledWorker" in rows[1]["error"]


def test_sweep_cluster_is_tuned_and_preload_tunes_any_worker():
    """local_cluster(): no profiler, relaxed monitors, glibc's own trimming, twinstage imported at worker
    start, and the nannies' environment variables not left in this process; the same preload on a stock
    cluster (what `dask worker --preload twinstage.scenarios._dask` does) removes the profiler too."""
    import os

    from distributed import Client, LocalCluster

    from twinstage.scenarios._dask import local_cluster

    def probe(dask_worker):
        import sys

        import dask

        return {"profile": "profile" in dask_worker.periodic_callbacks, "tick_ms": dask_worker.periodic_callbacks["tick"].callback_time,
                "profile_cfg": dask.config.get("distributed.worker.profile.enabled"), "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                "runtime": "twinstage.runtime" in sys.modules and "pxr" in sys.modules}

    env = dict(os.environ)
    with local_cluster(2) as cluster, Client(cluster.scheduler_address, set_as_default=False) as c:
        seen = c.run(probe)
        assert dict(os.environ) == env  # OMP_NUM_THREADS etc. went to the workers only
    assert len(seen) == 2
    for v in seen.values():
        assert v == {"profile": False, "tick_ms": 1000, "profile_cfg": False, "trim": env.get("MALLOC_TRIM_THRESHOLD_"), "runtime": True}, v
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address, set_as_default=False) as c:
        stock = next(iter(c.run(probe).values()))
        assert stock["profile"] and stock["tick_ms"] == 20 and not stock["runtime"]  # what a stock worker does
    os.environ.clear()
    os.environ.update(env)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      preload=["twinstage.scenarios._dask"]) as cluster, Client(cluster.scheduler_address, set_as_default=False) as c:
        tuned = next(iter(c.run(probe).values()))
        assert not tuned["profile"] and tuned["tick_ms"] == 1000 and tuned["runtime"]
    os.environ.clear()
    os.environ.update(env)
