"""Sweep points: grids (``lo:hi:n`` or explicit values) crossed with seeded random or
Latin-hypercube samples over ranges (``lo:hi``)."""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np

from ._spec import ScenarioError

MAX_POINTS = 1_000_000


def parse_axis(text: str, where: str = "--grid") -> tuple[str, list[float] | tuple[float, float]]:
    """``NAME=lo:hi:n`` → (NAME, n values); ``NAME=a,b,c`` → (NAME, [a, b, c]); ``NAME=lo:hi`` → (NAME, (lo, hi))."""
    name, eq, rhs = text.partition("=")
    name = name.strip()
    if not eq or not name or not rhs.strip():
        raise ScenarioError(f"{where} {text!r}: expected NAME=lo:hi:n, NAME=lo:hi or NAME=v1,v2,…")
    return name, parse_values(rhs, f"{where} {name}")


def _num(s: str, where: str) -> float:
    try:
        x = float(s)
    except ValueError:
        raise ScenarioError(f"{where}: {s!r} is not a number") from None
    if not math.isfinite(x):
        raise ScenarioError(f"{where}: {s!r} is not finite")
    return x


def parse_values(rhs: Any, where: str) -> list[float] | tuple[float, float]:
    if isinstance(rhs, (list, tuple)):
        vals = [_num(str(v), where) for v in rhs]
        if not vals:
            raise ScenarioError(f"{where}: a grid with zero points")
        return vals
    rhs = str(rhs).strip()
    if ":" in rhs:
        parts = rhs.split(":")
        if len(parts) == 2:
            lo, hi = (_num(p, where) for p in parts)
            if hi < lo:
                raise ScenarioError(f"{where}: range {rhs!r} has hi < lo")
            return (lo, hi)
        if len(parts) != 3:
            raise ScenarioError(f"{where}: expected lo:hi:n, got {rhs!r}")
        lo, hi = _num(parts[0], where), _num(parts[1], where)
        try:
            n = int(parts[2])
        except ValueError:
            raise ScenarioError(f"{where}: the number of points {parts[2]!r} is not an integer") from None
        if n <= 0:
            raise ScenarioError(f"{where}: a grid with zero points ({rhs!r}); n must be >= 1")
        if n > MAX_POINTS:
            raise ScenarioError(f"{where}: {n} points is more than {MAX_POINTS}")
        return [lo] if n == 1 else np.linspace(lo, hi, n).tolist()
    vals = [_num(v, where) for v in rhs.split(",") if v.strip()]
    if not vals:
        raise ScenarioError(f"{where}: a grid with zero points")
    return vals


def sample(ranges: dict[str, tuple[float, float]], n: int, method: str, seed: int) -> list[dict[str, float]]:
    """``n`` seeded points over ``ranges``: ``random`` (uniform) or ``lhs`` (Latin hypercube)."""
    if n <= 0 or not ranges:
        return []
    rng = np.random.default_rng(seed)
    names = list(ranges)
    d = len(names)
    if method == "lhs":  # one point per stratum in every dimension, strata shuffled per dimension
        u = (np.stack([rng.permutation(n) for _ in range(d)], axis=1) + rng.random((n, d))) / n
    elif method == "random":
        u = rng.random((n, d))
    else:
        raise ScenarioError(f"--method {method!r}: expected lhs or random")
    lo = np.array([ranges[k][0] for k in names])
    hi = np.array([ranges[k][1] for k in names])
    pts = lo + u * (hi - lo)
    return [{k: float(v) for k, v in zip(names, row)} for row in pts]


def sweep_points(grid: dict[str, Sequence[float]] | None = None, ranges: dict[str, tuple[float, float]] | None = None, *,
                 samples: int = 0, method: str = "lhs", seed: int = 0) -> list[dict[str, float]]:
    """Every grid combination (Cartesian product) crossed with ``samples`` points over ``ranges``."""
    grid = dict(grid or {})
    ranges = dict(ranges or {})
    for k, v in grid.items():
        if len(v) == 0:
            raise ScenarioError(f"grid axis {k!r}: a grid with zero points")
    if samples and not ranges:
        raise ScenarioError("--samples needs ranges to sample (NAME=lo:hi)")
    if ranges and not samples:
        raise ScenarioError(f"ranges {', '.join(ranges)} need --samples N")
    total = math.prod(len(v) for v in grid.values()) * max(samples, 1)
    if total > MAX_POINTS:
        raise ScenarioError(f"the sweep has {total} points, more than {MAX_POINTS}")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] if grid else [{}]
    drawn = sample(ranges, samples, method, seed) or [{}]
    return [{**g, **s} for g in combos for s in drawn]
