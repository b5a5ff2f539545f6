"""What a sweep worker runs: one task → one result row (and the run's files).

Top-level and picklable, so local process pools and Dask workers run the same
function. Each run writes ``runs/<run_id>/recording.usdc`` (reproducible bytes) and
``runs/<run_id>/result.json``; a rerun of the sweep skips runs whose result says ok.

Fault injection (tests, demos of worker loss): a task with ``kill = True`` makes
the process running it die with ``os._exit(137)``, as if the kernel had killed it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any


def run_id(digest: str, overrides: dict[str, float], seed: int) -> str:
    """A run's id: a hash of what determines it (spec digest, overrides, seed), not of its place in
    the sweep, so a grown or reordered sweep reuses the runs it already has."""
    return hashlib.sha256(json.dumps([digest, sorted(overrides.items()), seed]).encode()).hexdigest()[:12]


def tree_sha256(recording: Path) -> str:
    """SHA-256 over a recording's root and chunk files (names and bytes, in name order)."""
    h = hashlib.sha256()
    files = [recording]
    chunks = recording.with_name(f"{recording.stem}_{recording.suffix.lstrip('.')}.chunks")
    if chunks.is_dir():
        files += sorted(p for p in chunks.iterdir() if p.is_file() and not p.name.startswith("."))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, default=str, allow_nan=True))
    os.replace(tmp, path)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point. ``task``: spec (a dict), spec_path, overrides, seed, run_id, out (folder), cache_dir."""
    from ._runner import run_scenario
    from ._spec import parse_spec

    rid = task["run_id"]
    run_dir = Path(task["out"]) / "runs" / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".started").write_text(str(os.getpid()))
    if task.get("kill"):
        os._exit(137)
    t0 = time.perf_counter()
    spec = parse_spec(task["spec"], task.get("spec_path") or "<spec>")
    rec = run_dir / "recording.usdc"
    res = run_scenario(spec, overrides=task["overrides"], seed=task["seed"], record=rec, cache_dir=task.get("cache_dir"))
    row: dict[str, Any] = {
        "run_id": rid, "index": task["index"], "status": res.status, "error": res.error, "seed": res.seed,
        "passed": res.passed, "ticks": res.ticks, "wall_s": time.perf_counter() - t0, "run_s": res.wall_s,
        "recording": f"runs/{rid}/recording.usdc" if res.status == "ok" else "",
        "recording_sha256": tree_sha256(rec) if res.status == "ok" and rec.exists() else "",
        "expectations": json.dumps(res.expectations),
    }
    for k, v in task["overrides"].items():
        row[f"p:{k}"] = float(v)
    for k, v in res.metrics.items():
        row[f"m:{k}"] = float(v) if v is not None else math.nan
    row["provenance"] = json.dumps(res.provenance, sort_keys=True, default=str)
    _write_json(run_dir / "result.json", row)
    (run_dir / ".started").unlink(missing_ok=True)
    return row


def failed_row(task: dict[str, Any], error: str) -> dict[str, Any]:
    row = {"run_id": task["run_id"], "index": task["index"], "status": "failed", "error": error, "seed": task["seed"],
           "passed": False, "ticks": 0, "wall_s": 0.0, "run_s": 0.0, "recording": "", "recording_sha256": "", "expectations": "[]",
           "provenance": ""}
    for k, v in task["overrides"].items():
        row[f"p:{k}"] = float(v)
    run_dir = Path(task["out"]) / "runs" / task["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "result.json", row)
    (run_dir / ".started").unlink(missing_ok=True)
    return row


def child_entry(task: dict[str, Any], conn: Any) -> None:
    """Entry of an isolated child process (a suspect rerun after a worker died)."""
    try:
        conn.send(("ok", run_task(task)))
    except BaseException as exc:  # report, then die like any failed run
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
