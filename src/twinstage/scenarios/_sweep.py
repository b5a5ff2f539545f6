"""Sweeps: many runs of one scenario over parameter points, on local processes or Dask.

Every point is checked against the scene before anything runs. Runs go to a
``ProcessPoolExecutor`` (forkserver: workers fork from a server that has imported
twinstage and pxr once) or, given ``scheduler="tcp://…"``, to a Dask cluster
(``"local:N"``: one started for the sweep; :mod:`._dask`). A
run that raises is a failed row; a worker that dies mid-run breaks the local pool:
the runs it was running are retried one by one in isolated child processes, so the
one that kills its process is marked failed with its exit status and the rest
complete. Results: ``DIR/results.parquet`` (one row per run) and per run
``DIR/runs/<run_id>/recording.usdc`` + ``result.json``. A rerun skips finished runs.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ._dask import PRELOAD, SweepError, local_cluster, parse_local, run_dask
from ._points import sweep_points
from ._runner import plan_for
from ._spec import ScenarioSpec, load_spec
from ._worker import child_entry, failed_row, run_id, run_task

__all__ = ["Progress", "SweepError", "SweepResult", "build_tasks", "run_sweep", "write_table"]


class Progress:
    """A plain progress bar on stderr (``\\r`` on a terminal, a line per 10 % otherwise)."""

    def __init__(self, total: int, stream: Any = None, enabled: bool = True):
        self.total, self.done, self.failed, self.skipped = total, 0, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last_decile = -1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, ok: bool, skipped: bool = False) -> None:
        self.done += 1
        self.failed += not ok
        self.skipped += skipped
        if not self.enabled:
            return
        frac = self.done / max(self.total, 1)
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * int(frac * 30)
        line = f"sweep [{bar:<30}] {self.done}/{self.total} failed {self.failed} skipped {self.skipped} {el:.0f}s eta {eta:.0f}s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        elif int(frac * 10) != self._last_decile or self.done == self.total:
            self._last_decile = int(frac * 10)
            self.stream.write(line + "\n")
        self.stream.flush()


@dataclass
class SweepResult:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    executor: str = "local"

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    def table(self) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(self.out / "results.parquet")


def build_tasks(spec: ScenarioSpec, points: list[dict[str, float]], out: Path, *, cache_dir: Any = None) -> list[dict[str, Any]]:
    """Check every point against the scene (errors name the spec and the axis) and make the tasks."""
    spec_data = spec.model_dump(mode="json", exclude_none=True)
    tasks = []
    for i, pt in enumerate(points):
        plan_for(spec, pt, cache_dir=cache_dir)  # raises ScenarioError before anything runs
        tasks.append({"index": i, "spec": spec_data, "spec_path": spec.path, "overrides": dict(pt), "seed": spec.seed,
                      "run_id": run_id(spec.digest(), pt, spec.seed), "out": str(out), "cache_dir": str(cache_dir) if cache_dir else None})
    return tasks


def _finished(task: dict[str, Any]) -> dict[str, Any] | None:
    p = Path(task["out"]) / "runs" / task["run_id"] / "result.json"
    try:
        row = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    rec = Path(task["out"]) / row.get("recording", "")
    return row if row.get("status") == "ok" and rec.is_file() else None


def run_sweep(spec: ScenarioSpec | str | Path, out: str | Path, *, grid: dict[str, Any] | None = None, ranges: dict[str, Any] | None = None,
              samples: int | None = None, method: str | None = None, seed: int = 0, workers: int = 1, scheduler: str | None = None,
              cache_dir: Any = None, progress: bool | Callable[[int, int, int], None] = True, connect_timeout: float = 5.0,
              kill_runs: tuple[int, ...] = (), on_progress: Callable[[int, int, int], None] | None = None) -> SweepResult:
    """Run ``spec`` over a grid and/or seeded samples; write ``out/results.parquet``.

    ``grid``: ``{"Valve2.opening": [0.2, 0.6, 1.0]}`` (or ``"lo:hi:n"`` text); ``ranges``:
    ``{"pump_loop.motor_tau": (600, 1200)}`` sampled ``samples`` times (``lhs``/``random``,
    seeded by ``seed``). Defaults come from the spec's ``[sweep]`` table. ``workers=0``
    runs in this process; ``scheduler`` sends the runs to that Dask scheduler (``tcp://…``), or
    ``"local"`` / ``"local:N"`` starts a Dask ``LocalCluster`` of N (2) workers for this sweep
    (:func:`~twinstage.scenarios.local_cluster`).
    ``progress``: True for the stderr bar, or a callback ``(done, total, failed)``; ``on_progress``:
    such a callback beside the bar (e.g. ``MetricsSink.sweep_progress``).
    ``kill_runs``: fault injection — the workers running these point indices die (``os._exit(137)``).
    """
    from ._points import parse_values

    n_local = parse_local(scheduler) if scheduler else None
    if not isinstance(spec, ScenarioSpec):
        spec = load_spec(spec)
    g = {k: parse_values(v, f"{spec.where()}: sweep.grid.{k}") for k, v in (grid if grid is not None else spec.sweep.grid).items()}
    r = dict(ranges if ranges is not None else spec.sweep.ranges)
    for k in [k for k, v in g.items() if isinstance(v, tuple)]:  # NAME=lo:hi in a grid is a range to sample
        r[k] = g.pop(k)
    n = spec.sweep.samples if samples is None else samples
    points = sweep_points(g, {k: tuple(v) for k, v in r.items()}, samples=n, method=method or spec.sweep.method, seed=seed)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(spec, points, out, cache_dir=cache_dir)
    for t in tasks:
        t["kill"] = t["index"] in kill_runs
    res = SweepResult(out, executor=(f"dask[local:{n_local}]" if n_local else "dask") if scheduler else ("inline" if workers == 0 else f"local[{workers}]"))
    bar = Progress(len(tasks), enabled=progress is True)
    callbacks = [c for c in (progress if callable(progress) else None, on_progress) if c is not None]

    def done(row: dict[str, Any], skipped: bool = False) -> None:
        res.rows.append(row)
        bar.update(row["status"] == "ok", skipped)
        for cb in callbacks:
            cb(bar.done, bar.total, bar.failed)

    todo = []
    for t in tasks:
        row = _finished(t)
        if row is not None:
            row["index"] = t["index"]
            res.skipped += 1
            done(row, skipped=True)
        else:
            (Path(t["out"]) / "runs" / t["run_id"] / ".started").unlink(missing_ok=True)
            todo.append(t)
    if n_local is not None:
        with local_cluster(n_local) as cluster:
            run_dask(todo, cluster.scheduler_address, done, connect_timeout)
    elif scheduler:
        run_dask(todo, scheduler, done, connect_timeout)
    elif workers == 0:
        if kill_runs:
            raise ValueError("kill_runs needs worker processes (workers >= 1 or a scheduler)")
        for t in todo:
            try:
                done(run_task(t))
            except Exception as exc:
                done(failed_row(t, f"{type(exc).__name__}: {exc}"))
    else:
        _run_local(todo, workers, done)
    res.rows.sort(key=lambda row: row["index"])
    write_table(res.rows, out / "results.parquet")
    (out / "sweep.json").write_text(json.dumps({"scenario": spec.name, "spec": spec.path, "specDigest": spec.digest(), "seed": seed,
                                                "points": len(tasks), "failed": len(res.failed), "skipped": res.skipped,
                                                "executor": res.executor}, indent=1))
    return res


FIXED = ["run_id", "index", "status", "passed", "error", "seed", "ticks", "wall_s", "run_s", "recording", "recording_sha256", "expectations", "provenance"]


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    fixed = [c for c in FIXED if c in cols] + [c for c in cols if c not in FIXED and not c.startswith(("p:", "m:"))]
    cols = fixed + sorted(c for c in cols if c.startswith("p:")) + sorted(c for c in cols if c.startswith("m:"))
    data = {c: [row.get(c) for row in rows] for c in cols}
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(data), tmp)
    os.replace(tmp, path)


def _context() -> Any:
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _run_local(tasks: list[dict[str, Any]], workers: int, done: Callable[..., None]) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = _context()
    pending = list(tasks)
    while pending:
        broken: list[dict[str, Any]] = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs = {pool.submit(run_task, t): t for t in pending}
            for fut in as_completed(futs):
                t = futs[fut]
                try:
                    done(fut.result())
                except BrokenProcessPool:
                    broken.append(t)
                except Exception as exc:
                    done(failed_row(t, f"{type(exc).__name__}: {exc}"))
        # a worker died: the runs it may have been running (started, unfinished) go one by
        # one to isolated children; the others return to a fresh pool
        started = [t for t in broken if (Path(t["out"]) / "runs" / t["run_id"] / ".started").exists()]
        if broken and not started:  # died before any run began (e.g. at start-up): isolate them all, never loop
            started = broken
        for t in started:
            _run_isolated(t, ctx, done)
        pending = [t for t in broken if t not in started]


def _run_isolated(task: dict[str, Any], ctx: Any, done: Callable[..., None]) -> None:
    import signal

    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=child_entry, args=(task, child), daemon=True)
    p.start()
    child.close()
    msg = None
    try:
        msg = parent.recv()
    except EOFError:
        pass
    p.join()
    if msg and msg[0] == "ok":
        done(msg[1])
        return
    if msg:
        done(failed_row(task, msg[1]))
        return
    code = p.exitcode
    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    done(failed_row(task, f"worker process died while running this run ({how})"))
