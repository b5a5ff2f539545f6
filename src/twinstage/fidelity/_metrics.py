"""Error metrics of simulated vs measured values, with block-bootstrap confidence intervals.

Residuals of a twin against its plant are autocorrelated (a model error persists for
many ticks), so an i.i.d. bootstrap would give intervals far too narrow. The intervals
here come from a *circular block bootstrap* (Politis & Romano 1992): resample blocks
of ``b`` consecutive rows (wrapping around), recompute the metric, take percentiles.
The block length is chosen from the data (:func:`block_length`): the plug-in rule for
an AR(1)-like dependence, ``b = (2ρ / (1 − ρ²))^(2/3) · n^(1/3)`` with ρ the lag-1
autocorrelation of the residuals (Politis & White 2004's rate, AR(1) constant),
clipped to ``[1, n/4]``. The block bootstrap's variance of a mean is known to be low by
about ``Σ|k|γ(k) / (n·b)``; each interval is widened around the point estimate by that
factor, estimated from the metric's own series (error, |error|, error², |error|/|measured|).
``tests/fidelity/test_fidelity_metrics.py`` checks that the 95 % intervals cover the truth
at close to their stated rate on synthetic AR(1) residuals.

Alignment metrics (:func:`alignment`): time skew by cross-correlation, freshness
(age of the newest measurement and of samples at use) and the share of Good samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

METRICS = ("mae", "rmse", "mape", "bias")


class MetricsError(ValueError):
    """Metrics cannot be computed (shapes, no finite pairs); the message says which attribute."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A metric with its confidence interval (``lo``, ``hi``) at level ``conf``."""

    value: float
    lo: float
    hi: float
    conf: float

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "conf": self.conf}


def block_length(residual) -> int:
    """Block length for the circular block bootstrap, from the lag-1 autocorrelation."""
    r = np.asarray(residual, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = r.size
    if n < 4:
        return 1
    d = r - r.mean()
    den = float(d @ d)
    rho = float(d[1:] @ d[:-1]) / den if den > 0 else 0.0
    rho = min(max(rho, 0.0), 0.99)
    b = (2 * rho / (1 - rho * rho)) ** (2 / 3) * n ** (1 / 3) if rho > 0 else 1.0
    return int(min(max(1, round(b)), max(1, n // 4)))


def block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row indices of circular block bootstrap resamples."""
    k = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, k))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(n_boot, k * block)[:, :n]


def _bias_term(h: np.ndarray, block: int) -> float:
    """``G = Σ_k |k| γ(k)`` (flat-top lag window, lags up to ``2·block``) of series ``h``.

    The circular block bootstrap's variance of a mean is low by about ``G / (n·block)``
    (Künsch 1989; the bias term of Politis & White 2004); intervals are widened by it.
    """
    n = h.size
    d = h - h.mean()
    m = int(min(max(2 * block, 4), n // 4))
    if m < 1:
        return 0.0
    k = np.arange(1, m + 1)
    gamma = np.array([d[j:] @ d[:-j] / n for j in k])
    lam = np.clip(2 * (1 - k / m), 0, 1)
    return float(max(2 * np.sum(lam * k * gamma), 0.0))


def _stats(sim: np.ndarray, meas: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics along the last axis (works on (n,) and on bootstrap (B, n) arrays)."""
    e = sim - meas
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.abs(e) / np.abs(meas)
    ape = np.where(np.isfinite(ape), ape, np.nan)
    cnt = np.isfinite(ape).sum(axis=-1)
    with np.errstate(all="ignore"):
        mape = np.where(cnt > 0, 100.0 * np.nansum(ape, axis=-1) / np.maximum(cnt, 1), np.nan)
    return {
        "mae": np.abs(e).mean(axis=-1),
        "rmse": np.sqrt((e * e).mean(axis=-1)),
        "mape": mape,
        "bias": e.mean(axis=-1),
    }


def error_metrics(
    simulated,
    measured,
    *,
    names: Sequence[str] | None = None,
    regimes=None,
    conf: float = 0.95,
    n_boot: int = 1000,
    block: int | None = None,
    seed: int = 0,
) -> dict:
    """MAE, RMSE, MAPE (%) and bias (sim − meas) per attribute (column) and per regime.

    ``simulated``/``measured``: (n,) or (n, k) aligned on the same rows. ``regimes``:
    optional (n,) labels (e.g. an operating mode per row); metrics are reported for
    ``"all"`` rows and for each regime. Non-finite pairs are dropped and counted. Returns
    ``{attribute: {regime: {"n", "dropped", "block", "mae": Estimate, …}}}``.
    Deterministic for a given ``seed``.
    """
    sim = np.asarray(simulated, dtype=np.float64)
    meas = np.asarray(measured, dtype=np.float64)
    if sim.shape != meas.shape:
        raise MetricsError(f"simulated shape {sim.shape} != measured shape {meas.shape}")
    if sim.ndim == 1:
        sim, meas = sim[:, None], meas[:, None]
    if sim.ndim != 2:
        raise MetricsError(f"expected (n,) or (n, k) arrays, got shape {sim.shape}")
    if not 0 < conf < 1:
        raise MetricsError(f"conf must be in (0, 1), got {conf!r}")
    cols = list(names) if names is not None else [f"a{j}" for j in range(sim.shape[1])]
    if len(cols) != sim.shape[1]:
        raise MetricsError(f"{len(cols)} names for {sim.shape[1]} attributes")
    groups: dict[str, np.ndarray] = {"all": np.ones(sim.shape[0], dtype=bool)}
    if regimes is not None:
        reg = np.asarray(regimes)
        if reg.shape != (sim.shape[0],):
            raise MetricsError(f"regimes must have shape ({sim.shape[0]},), got {reg.shape}")
        for label in np.unique(reg):
            groups[str(label)] = reg == label
    rng = np.random.default_rng(seed)
    alpha = (1 - conf) / 2
    out: dict = {}
    for j, name in enumerate(cols):
        out[name] = {}
        for g, mask in groups.items():
            s, m = sim[mask, j], meas[mask, j]
            ok = np.isfinite(s) & np.isfinite(m)
            s, m = s[ok], m[ok]
            if s.size < 2:
                raise MetricsError(f"attribute {name!r}, regime {g!r}: {s.size} finite pairs (need >= 2)")
            b = block if block is not None else block_length(s - m)
            idx = block_indices(s.size, b, n_boot, rng)
            point, boot = _stats(s, m), _stats(s[idx], m[idx])
            entry: dict = {"n": int(s.size), "dropped": int((~ok).sum()), "block": int(b)}
            e = s - m
            with np.errstate(divide="ignore", invalid="ignore"):
                ape = np.abs(e) / np.abs(m)
            base = {"bias": e, "mae": np.abs(e), "rmse": e * e, "mape": ape[np.isfinite(ape)]}
            for key in METRICS:
                bs = boot[key][np.isfinite(boot[key])]
                if bs.size == 0 or not np.isfinite(point[key]):
                    entry[key] = Estimate(float("nan"), float("nan"), float("nan"), conf)
                    continue
                lo, hi = np.quantile(bs, [alpha, 1 - alpha])
                h = base[key]
                if h.size > 8 and b > 1:  # widen by the block bootstrap's known variance deficit
                    hb = h[block_indices(h.size, b, min(n_boot, 200), np.random.default_rng(seed))].mean(axis=1)
                    vb = float(hb.var())
                    f = float(np.sqrt(1 + _bias_term(h, b) / (h.size * b * vb))) if vb > 0 else 1.0
                    f = min(f, 2.0)
                    pv = float(point[key])
                    lo, hi = pv - f * (pv - lo), pv + f * (hi - pv)
                entry[key] = Estimate(float(point[key]), float(lo), float(hi), conf)
            out[name][g] = entry
    return out


def time_skew(reference, delayed, max_lag: int, dt: float = 1.0, min_corr: float = 0.3) -> float:
    """Delay (seconds) of ``delayed`` behind ``reference`` by cross-correlation, both on one grid of step ``dt``.

    Positive: ``delayed`` lags. Searches lags in ``[-max_lag, max_lag]`` samples. NaN when
    the best correlation is below ``min_corr`` (e.g. a constant simulation): no skew can
    be read from series that do not move together.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(delayed, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MetricsError(f"need two 1-D series of equal length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 * max_lag + 3:
        raise MetricsError(f"{int(ok.sum())} finite samples are too few for max_lag={max_lag}")
    a = np.where(ok, a - a[ok].mean(), 0.0)
    b = np.where(ok, b - b[ok].mean(), 0.0)
    n = a.size
    best, best_c = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            x, y = a[: n - lag], b[lag:]
        else:
            x, y = a[-lag:], b[: n + lag]
        den = np.sqrt((x @ x) * (y @ y))
        c = (x @ y) / den if den > 0 else -np.inf
        if c > best_c:
            best, best_c = lag, c
    return best * dt if best_c >= min_corr else float("nan")


def alignment(
    event_time, quality, *, now: float, reference=None, measured=None, max_lag: int = 0, dt: float = 1.0
) -> Mapping[str, float]:
    """Freshness and quality share of one measured channel; time skew if series are given.

    ``event_time``: sample times (s); ``quality``: uint8 Quality flags (0 = Good);
    ``now``: the time the twin uses them. Returns ``freshness_s`` (age of the newest
    sample), ``median_age_s``, ``good_share``, and ``skew_s`` when ``reference`` and
    ``measured`` series (one grid) and ``max_lag`` > 0 are given.
    """
    t = np.asarray(event_time, dtype=np.float64)
    q = np.asarray(quality, dtype=np.uint8)
    if t.shape != q.shape:
        raise MetricsError(f"event_time shape {t.shape} != quality shape {q.shape}")
    if t.size == 0:
        return {"freshness_s": float("inf"), "median_age_s": float("inf"), "good_share": 0.0}
    out = {
        "freshness_s": float(now - np.nanmax(t)),
        "median_age_s": float(np.nanmedian(now - t)),
        "good_share": float((q == 0).mean()),
    }
    if reference is not None and measured is not None and max_lag > 0:
        out["skew_s"] = time_skew(reference, measured, max_lag, dt)
    return out
