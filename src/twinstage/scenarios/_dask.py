"""Sweeps on Dask: :func:`run_dask` sends runs to a scheduler; :func:`local_cluster` starts a
``LocalCluster`` tuned for sweeps; :func:`dask_setup` is the worker preload for any cluster.

Where a stock 2-worker ``LocalCluster`` lost time against two local worker processes on 2 cores
(1.23× the wall; ``bench/sweep.py``, docs/performance.md): not in scheduling — a worker's gap
between one task's end and the next one's start was 1–3 ms (median) and batching 8 runs per task
changed nothing — but in the processes. Per 300-tick pump run a stock worker process used
152–184 ms of CPU where a local pool worker used 135 ms; its event-loop thread alone 0.6–1.0 s per
60-run sweep (0.23–0.32 s tuned), from periodic callbacks that run whatever the task does: the
statistical profiler (a stack walk every 10 ms), the blocked-loop tick monitor (every 20 ms), the
system monitor (psutil, every 500 ms); each wake-up takes the GIL from the task. Stock nannies
also poll their worker's memory every 100 ms, give it ``MALLOC_TRIM_THRESHOLD_=65536`` (glibc hands
freed memory back at once: ~5× the page faults per run here), and the worker imports twinstage
and pxr in the first task, inside the sweep, where a local pool forks from a server that imported
them once. Over 200-run sweeps (loaded machine) the stock cluster used 1.31–1.59× the CPU of the
local pool, the cluster :func:`local_cluster` starts 1.04–1.24× (the rest: scheduler, client and
nannies in the caller's process, ~12 ms per run, not decomposed further). :data:`WORKER_CONFIG` turns these down (a sweep of
short runs needs neither a 10 ms profile nor a 20 ms blocked-loop alarm); :func:`dask_setup` does
it on a running worker.

Determinism does not depend on any of it: a run's result is a function of its task alone.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from typing import Any, Callable, Iterator

from ._worker import failed_row, run_task

#: modules a sweep worker needs; imported once at worker start (forkserver preload / Dask preload)
PRELOAD = ("twinstage.scenarios._worker", "twinstage.scenarios._runner", "twinstage.runtime")

#: Dask config for a sweep's own cluster (set while :func:`local_cluster` starts it; the nannies pass
#: it on to their workers)
WORKER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,  # no statistical profiler (a stack walk every 10 ms on the event loop)
    "distributed.admin.tick.interval": "1s",  # event-loop blocked monitor: 20 ms by default
    "distributed.admin.system-monitor.interval": "2s",  # psutil CPU/memory/network poll: 500 ms by default
    "distributed.worker.memory.monitor-interval": "1s",  # the nanny's RSS poll of its worker: 100 ms by default
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,  # glibc's default trimming, as local workers have
    "distributed.scheduler.work-stealing": False,  # equal short tasks on equal workers: nothing to steal, only bookkeeping
}


class SweepError(RuntimeError):
    """The sweep cannot run at all (e.g. the Dask scheduler cannot be reached)."""


def dask_setup(worker: Any) -> None:
    """Dask preload (``dask worker tcp://… --preload twinstage.scenarios._dask``, or what
    :func:`local_cluster` passes): import twinstage and pxr now rather than in the first run, and
    turn down the worker's profiler and tick monitor as :data:`WORKER_CONFIG` does, for workers
    started without that config. Runs before the worker starts its periodic callbacks."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    pcs = getattr(worker, "periodic_callbacks", None)
    if not isinstance(pcs, dict):
        return
    for name in ("profile", "profile-cycle"):  # the per-worker statistical profiler
        pcs.pop(name, None)
    for name, ms in (("tick", 1000), ("monitor", 2000)):
        pc = pcs.get(name)
        if pc is not None and getattr(pc, "callback_time", ms) < ms:
            pc.callback_time = ms
    if "tick" in pcs and hasattr(worker, "_tick_interval"):
        worker._tick_interval = worker._tick_interval_observed = 1.0


@contextlib.contextmanager
def local_cluster(n_workers: int = 2, **kwargs: Any) -> Iterator[Any]:
    """A ``distributed.LocalCluster`` for sweeps: ``n_workers`` processes of one thread each on
    127.0.0.1, no dashboard, :data:`WORKER_CONFIG`, twinstage preloaded; the environment variables
    Dask's nannies put into this process while they start (``OMP_NUM_THREADS`` …) are taken out
    again. ``kwargs`` go to ``LocalCluster`` (e.g. ``silence_logs``)."""
    import dask
    from distributed import LocalCluster

    if n_workers < 1:
        raise ValueError(f"local_cluster: n_workers must be >= 1, got {n_workers}")
    opts: dict[str, Any] = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                            "dashboard_address": None, "preload": ["twinstage.scenarios._dask"], "silence_logs": logging.ERROR}
    opts.update(kwargs)
    env = dict(os.environ)
    dlog = logging.getLogger("distributed")  # LocalCluster restores its level before the nannies log their closing
    level = dlog.level
    if opts["silence_logs"]:
        dlog.setLevel(opts["silence_logs"])
    try:
        with dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(**opts)
        try:
            for k in [k for k in os.environ if k not in env]:
                del os.environ[k]
            os.environ.update(env)
            yield cluster
        finally:
            cluster.close()
    finally:
        dlog.setLevel(level)


def parse_local(scheduler: str) -> int | None:
    """``"local"`` → 2, ``"local:N"`` → N workers; anything else (an address) → None."""
    if scheduler != "local" and not scheduler.startswith("local:"):
        return None
    n = scheduler.partition(":")[2] or "2"
    if not n.isdigit() or int(n) < 1:
        raise SweepError(f"--scheduler {scheduler!r}: expected tcp://HOST:PORT, local or local:N (N >= 1 workers)")
    return int(n)


def run_dask(tasks: list[dict[str, Any]], address: str, done: Callable[..., None], timeout: float) -> None:
    """Runs on a Dask cluster. A worker that dies takes the tasks queued on it down too (Dask
    counts them all as suspects); a run that ends in ``KilledWorker`` is therefore retried once,
    alone in the queue's order, and only a second ``KilledWorker`` marks it failed."""
    try:
        from distributed import Client, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise SweepError("--scheduler needs dask[distributed]: pip install 'twinstage[scenarios]'") from None
    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {exc}") from None
    serial = itertools.count()
    nonce = f"{os.getpid():x}-{time.monotonic_ns() & 0xffffff:x}"

    def submit(t: dict[str, Any]) -> Any:
        return client.submit(run_task, t, key=f"twinstage-run-{t['run_id']}-{nonce}-{next(serial)}", pure=False)

    try:
        futs = {submit(t): (t, 0) for t in tasks}
        queue = as_completed(list(futs), loop=client.loop)
        for fut in queue:
            t, tries = futs.pop(fut)
            try:
                done(fut.result())
            except KilledWorker as exc:
                if tries == 0:
                    retry = submit(t)
                    futs[retry] = (t, 1)
                    queue.add(retry)
                else:
                    done(failed_row(t, f"worker process died while running this run (KilledWorker: {exc})"))
            except Exception as exc:  # the run's own error, raised in the worker
                done(failed_row(t, f"{type(exc).__name__}: {exc}"))
    finally:
        client.close()
