"""Shared helpers for the benchmarks in ``bench/``.

Benchmarks are not tests: each prints a table of medians and of ratios against a
baseline measured *in the same run* (never a hard-coded figure), the target each
ratio is held to, and PASS/MISS. ``--json`` prints one JSON object instead
(ratios are named ``*_ratio``); ``--quick`` runs smaller sizes and fewer repeats.

The machines these run on are shared and noisy, so candidate and baseline are
timed *interleaved* (A, B, C, A, B, C, …, with the order rotated every round)
and summarised by their medians: a burst of noise then hits both sides alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

# Benchmarks run from a checkout (``python bench/writer.py``); prefer its sources.
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object of the figures instead of a table")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under a minute)")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per measurement (default depends on size)")
    if extra:
        extra(p)
    return p.parse_args()


def log(args: argparse.Namespace, msg: str) -> None:
    """Progress goes to stderr so that ``--json`` output stays one clean object."""
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    from pxr import Usd

    import numpy

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    return {
        "cores": cores,
        "python": platform.python_version(),
        "usd_core": ".".join(str(v) for v in Usd.GetVersion()),
        "numpy": numpy.__version__,
        "platform": platform.platform(terse=True),
    }


def interleaved(fns: dict[str, Callable[[], Any]], *, repeat: int, warmup: int = 1,
                before: Callable[[int], Any] | None = None, samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved, rotated rounds.

    ``before(round)`` runs untimed at the start of every round (e.g. to make the
    next Frame); warm-up rounds run the same way and are discarded. GC is off
    while timing (a collection in the middle of one side's run is noise). Pass a
    dict as ``samples`` to get every timed sample too (appended per name).
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + repeat):
            if before is not None:
                before(r)
            k = r % len(names)
            for n in names[k:] + names[:k]:
                t0 = time.perf_counter()
                fns[n]()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[n].append(dt)
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    if samples is not None:
        for n, v in times.items():
            samples.setdefault(n, []).extend(v)
    return {n: statistics.median(v) for n, v in times.items()}


def median_time(fn: Callable[[], Any], *, repeat: int, warmup: int = 1, before: Callable[[int], Any] | None = None) -> float:
    """Median seconds of one callable (warm-up rounds discarded)."""
    return interleaved({"x": fn}, repeat=repeat, warmup=warmup, before=before)["x"]


def verdict(ratio: float, limit: float) -> str:
    return "PASS" if ratio <= limit else "MISS"


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def xform_layer(n: int, root: str, prefix: str, label: str) -> tuple[Any, list[str]]:
    """An anonymous root layer (twin stage metadata) with ``n`` Xform prims ``/<root>/<prefix>NNN``,
    authored through Sdf in one change block (fast at 100k). Returns the layer and the prim paths."""
    from pxr import Sdf

    from twinstage.usd import create_stage

    stage0 = create_stage(None, root=root)
    layer = Sdf.Layer.CreateAnonymous(label)
    layer.TransferContent(stage0.GetRootLayer())
    width = len(str(n))
    paths = [f"/{root}/{prefix}{i:0{width}d}" for i in range(n)]
    with Sdf.ChangeBlock():
        for p in paths:
            ps = Sdf.CreatePrimInLayer(layer, p)
            ps.specifier = Sdf.SpecifierDef
            ps.typeName = "Xform"
    return layer, paths


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


class Report:
    """Collects figures, targets and tables; prints either tables or one JSON object."""

    def __init__(self, bench: str, args: argparse.Namespace):
        self.bench = bench
        self.args = args
        self.figures: dict[str, Any] = {}
        self.targets: list[dict[str, Any]] = []
        self.tables: list[tuple[str, Sequence[str], list[Sequence[Any]]]] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()

    def figure(self, key: str, value: Any) -> Any:
        if isinstance(value, float):
            value = round(value, 6)
        self.figures[key] = value
        return value

    def target(self, name: str, key: str, value: float, limit: float, *, higher_is_better: bool = False, text: str = "") -> str:
        """Record a target on figure ``key``; ``value <= limit`` passes (``>=`` if higher_is_better)."""
        ok = value >= limit if higher_is_better else value <= limit
        self.targets.append({"target": name, "figure": key, "value": round(float(value), 4), "limit": limit,
                             "op": ">=" if higher_is_better else "<=", "result": "PASS" if ok else "MISS", "text": text})
        return "PASS" if ok else "MISS"

    def table(self, title: str, headers: Sequence[str], rows: list[Sequence[Any]]) -> None:
        self.tables.append((title, headers, rows))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> int:
        elapsed = time.perf_counter() - self.t0
        passed = all(t["result"] == "PASS" for t in self.targets)
        if self.args.json:
            out = {
                "bench": self.bench,
                "quick": bool(self.args.quick),
                "machine": machine(),
                "elapsed_s": round(elapsed, 1),
                "figures": self.figures,
                "targets": self.targets,
                "all_pass": passed,
                "notes": self.notes,
            }
            print(json.dumps(out, indent=1, default=float))
            return 0
        m = machine()
        print(f"twinstage bench/{self.bench}.py{' --quick' if self.args.quick else ''} — {m['cores']} cores, "
              f"usd-core {m['usd_core']}, Python {m['python']}, numpy {m['numpy']}")
        for title, headers, rows in self.tables:
            print_table(title, headers, rows)
        print_table("Targets", ["target", "measured", "limit", "result"],
                    [[t["target"], t["value"], f"{t['op']} {t['limit']}", t["result"]] for t in self.targets])
        for n in self.notes:
            print(f"note: {n}")
        print(f"\n{'all targets met' if passed else 'some targets MISSED'} ({elapsed:.0f} s)")
        return 0
