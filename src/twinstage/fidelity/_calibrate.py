"""Calibration: fit pump-loop model parameters to measured data, with uncertainty.

The model runs headless: :class:`PumpLoopSimulator` builds a small in-memory stage
and :class:`~twinstage.state.StateTable` holding ``K`` independent copies of the pump
loop (one per candidate parameter vector), binds the real
:class:`~twinstage.models._builtin.PumpLoopModel` to it and steps it with parameter
*arrays* — so the ``1 + p`` parameter vectors of a finite-difference Jacobian are
simulated in one vectorised pass.

:func:`calibrate` minimises weighted residuals (each measured channel divided by its
noise level, estimated from its first differences unless given) with scipy's bounded
``least_squares`` (trust-region reflective) and reports:

* the estimate and its covariance ``s² (JᵀJ)⁻¹`` from the Jacobian at the optimum;
* the spread of estimates refitted on ``windows`` consecutive parts of the data
  (stability; the Jacobian covariance assumes independent residuals, which plant
  residuals are not — read both);
* identifiability: singular values of the parameter-scaled Jacobian; a parameter
  whose relative standard deviation exceeds ``max_rel_std`` or that lies in a
  near-null direction (singular value < ``1e-6`` × the largest) is reported as
  *not identifiable* and its value must not be trusted.

:func:`write_params_layer` stores a result as a USD layer of ``over`` opinions
(``twin:param:<name>`` on the model's prim) with provenance in ``customLayerData``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..models._builtin import PumpLoopModel

INPUTS = ("motorSpeed", "inletOpening", "outletOpening", "ambientTemperature")
#: measured channels the simulator produces, with their units: the model's channels that are not inputs
OUTPUTS = {ch: unit for ch, unit in PumpLoopModel.CHANNELS.items() if ch not in INPUTS}


class CalibrationError(ValueError):
    """Calibration cannot run or its result is unusable (too little data, bad input, diverged)."""


class PumpLoopSimulator:
    """``K`` copies of the pump loop stepped together, each with its own parameters."""

    def __init__(self, k: int) -> None:
        from pxr import Sdf, Usd

        from twinstage.state import Declaration, StateTable

        self.k = int(k)
        stage = Usd.Stage.CreateInMemory()
        prims, decls = [], []
        pumps = []
        for i in range(self.k):
            pump, inlet, outlet = f"/C{i}/Pump", f"/C{i}/Inlet", f"/C{i}/Outlet"
            for p in (f"/C{i}", pump, inlet, outlet):
                stage.DefinePrim(p)
                prims.append(p)
            stage.GetPrimAtPath(pump).CreateRelationship("twin:inletValve").AddTarget(Sdf.Path(inlet))
            stage.GetPrimAtPath(pump).CreateRelationship("twin:outletValve").AddTarget(Sdf.Path(outlet))
            for ch, unit in PumpLoopModel.CHANNELS.items():
                decls.append(Declaration(pump, ch, "float", 0.0, "" if unit == "dimensionless" else unit))
            decls += [Declaration(inlet, "opening", "float", 1.0), Declaration(outlet, "opening", "float", 1.0)]
            pumps.append(len(prims) - 3)
        self.table = StateTable(prims, decls)
        self.model = PumpLoopModel()
        self.model.bind(self.table, np.array(pumps, dtype=np.int32), stage)

    def simulate(self, params, inputs: Mapping[str, np.ndarray], dt: float, initial, starts: Sequence[int] = (0,)) -> dict[str, np.ndarray]:
        """Outputs (channel → (T, K)) for ``K`` parameter sets (``PumpParams`` with scalar or (K,) fields).

        ``starts``: rows where an experiment begins; there the thermal states are reset
        to ``initial`` (one mapping, or a list with one mapping per start).
        """
        from twinstage.models._builtin import PumpParams

        t = self.table
        m = self.model
        p = params if isinstance(params, PumpParams) else PumpParams()
        m.params = p
        n = len(inputs["motorSpeed"])
        r = m.rows
        inits = list(initial) if isinstance(initial, (list, tuple)) else [initial] * len(starts)
        reset = dict(zip((int(a) for a in starts), inits))
        out = {ch: np.empty((n, self.k)) for ch in OUTPUTS}
        rng = np.random.default_rng(0)
        for i in range(n):
            if i in reset:
                t["motorTemperature"][r["motorTemperature"]] = reset[i].get("motorTemperature", 0.0)
                t["fluidTemperature"][r["fluidTemperature"]] = reset[i].get("fluidTemperature", 0.0)
            t["motorSpeed"][r["motorSpeed"]] = inputs["motorSpeed"][i]
            t["ambientTemperature"][r["ambientTemperature"]] = inputs["ambientTemperature"][i]
            t["opening"][m.valves["inletValve"]] = inputs["inletOpening"][i]
            t["opening"][m.valves["outletValve"]] = inputs["outletOpening"][i]
            m.step(t, i * dt, dt, rng)
            for ch in OUTPUTS:
                out[ch][i] = t[ch][r[ch]]
        return out


@dataclass
class CalibrationResult:
    names: tuple[str, ...]
    values: np.ndarray
    std: np.ndarray
    covariance: np.ndarray
    window_spread: np.ndarray  #: std of estimates refitted on consecutive windows (nan: not run)
    identifiable: np.ndarray  #: bool per parameter
    at_bound: np.ndarray  #: bool per parameter: the estimate sits on a bound (its std is not meaningful)
    singular_values: np.ndarray
    cost: float
    rms_weighted_residual: float
    n_residuals: int
    success: bool
    message: str
    provenance: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        return [
            {"name": n, "value": float(v), "std": float(s), "window_spread": float(w), "identifiable": bool(i), "at_bound": bool(b)}
            for n, v, s, w, i, b in zip(self.names, self.values, self.std, self.window_spread, self.identifiable, self.at_bound)
        ]


def _noise(y: np.ndarray) -> float:
    d = np.diff(y[np.isfinite(y)])
    if d.size < 2:
        return float("nan")
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


def calibrate(
    inputs: Mapping[str, np.ndarray],
    measured: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    dt: float = 1.0,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    base=None,
    sigma: Mapping[str, float] | None = None,
    windows: int = 0,
    max_rel_std: float = 0.5,
    max_nfev: int = 200,
    sources: Sequence[str | Path] = (),
    initial: Mapping[str, float] | None = None,
    starts: Sequence[int] = (0,),
) -> CalibrationResult:
    """Fit ``names`` (``PumpParams`` fields) so the simulated outputs match ``measured``.

    ``inputs``: per-row arrays of :data:`INPUTS`; ``measured``: per-row arrays of any
    :data:`OUTPUTS` channels (NaN = no sample). Parameters not fitted keep ``base``'s
    values (default ``PumpParams()``). Bounds default to [0.2×, 5×] the base value.
    ``initial``: starting motor/fluid temperatures (default: the first measured sample,
    else ambient) — a noisy first sample biases thermal time constants, pass it when known.
    ``starts``: rows where separate experiments begin (thermal states restart there from
    that experiment's first samples); window refits use whole experiments when there
    are several.
    """
    from scipy.optimize import least_squares

    from twinstage.models._builtin import PumpParams

    base = base or PumpParams()
    known = {f.name for f in fields(PumpParams)}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise CalibrationError(f"unknown parameter(s) {bad or '(none given)'}; PumpParams has {sorted(known)}")
    missing = [k for k in INPUTS if k not in inputs]
    if missing:
        raise CalibrationError(f"inputs missing {missing}")
    n = len(inputs["motorSpeed"])
    unknown = [c for c in measured if c not in OUTPUTS]
    if unknown:
        raise CalibrationError(f"measured channel(s) {unknown} not produced by the pump loop {sorted(OUTPUTS)}")
    if not measured:
        raise CalibrationError("no measured channels: nothing to calibrate against")
    ys, ws = {}, {}
    for ch, y in measured.items():
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise CalibrationError(f"measured {ch!r} has shape {y.shape}, inputs have {n} rows")
        s = (sigma or {}).get(ch) or _noise(y)
        if not np.isfinite(s) or s <= 0:
            s = max(float(np.nanstd(y)) * 0.01, 1e-9) if np.isfinite(y).sum() > 1 else float("nan")
        if not np.isfinite(s):
            raise CalibrationError(f"measured {ch!r} has fewer than 2 finite samples")
        ys[ch], ws[ch] = y, 1.0 / s
    n_obs = int(sum(np.isfinite(y).sum() for y in ys.values()))
    p = len(names)
    if n_obs < 3 * p:
        raise CalibrationError(f"{n_obs} finite measurements are too few to fit {p} parameters (need >= {3 * p})")
    for k in INPUTS:
        if not np.isfinite(np.asarray(inputs[k], dtype=float)).all():
            raise CalibrationError(f"input {k!r} has non-finite values")
    x0 = np.array([float(getattr(base, nm)) for nm in names])
    lo = np.array([(bounds or {}).get(nm, (0.2 * v if v > 0 else 5 * v, 5 * v if v > 0 else 0.2 * v))[0] for nm, v in zip(names, x0)])
    hi = np.array([(bounds or {}).get(nm, (0.2 * v if v > 0 else 5 * v, 5 * v if v > 0 else 0.2 * v))[1] for nm, v in zip(names, x0)])
    if not (lo < hi).all():
        raise CalibrationError(f"empty bounds for {[nm for nm, a, b in zip(names, lo, hi) if not a < b]}")
    x0 = np.clip(x0, lo, hi)
    scale = np.maximum(np.abs(x0), 1e-12)
    starts = sorted({int(a) for a in starts} | {0})
    if starts[-1] >= n or starts[0] < 0:
        raise CalibrationError(f"experiment starts {starts} outside the {n} rows")
    bounds_rows = list(zip(starts, starts[1:] + [n]))

    def first_state(a: int, b: int) -> dict[str, float]:
        init = dict(initial or {})
        for c in ("motorTemperature", "fluidTemperature"):
            y = ys.get(c)
            if c not in init and y is not None and np.isfinite(y[a:b]).any():
                init[c] = float(y[a:b][np.isfinite(y[a:b])][0])
            init.setdefault(c, float(inputs["ambientTemperature"][a]))
        return init

    inits = {a: first_state(a, b) for a, b in bounds_rows}
    sims: dict[int, PumpLoopSimulator] = {}

    def run(X: np.ndarray, rows: slice) -> np.ndarray:
        """Weighted residuals (K, m) for parameter rows X (K, p) over data rows ``rows``."""
        k = X.shape[0]
        sim = sims.get(k) or sims.setdefault(k, PumpLoopSimulator(k))
        prm = replace(base, **{nm: X[:, j].copy() for j, nm in enumerate(names)})
        inp = {kk: np.asarray(v, dtype=np.float64)[rows] for kk, v in inputs.items()}
        r0 = rows.start or 0
        seg = [a for a in starts if r0 <= a < (rows.stop if rows.stop is not None else n)]
        if r0 not in seg:
            seg = [r0] + seg
        with np.errstate(all="ignore"):  # a parameter set that breaks the model shows as non-finite residuals
            out = sim.simulate(prm, inp, dt, [inits.get(a) or first_state(a, n) for a in seg], [a - r0 for a in seg])
        res = []
        for ch, y in ys.items():
            yy = y[rows]
            ok = np.isfinite(yy)
            res.append(((out[ch][ok] - yy[ok, None]) * ws[ch]).T)
        r = np.concatenate(res, axis=1)
        if not np.isfinite(r).all():
            r = np.where(np.isfinite(r), r, 1e6)
        return r

    def fit(rows: slice, start: np.ndarray):
        def fun(z):
            return run((z * scale)[None, :], rows)[0]

        def jac(z):
            h = 1e-6 * np.maximum(np.abs(z), 1.0)
            Z = np.vstack([z, z + np.diag(h)])
            R = run(Z * scale, rows)
            return ((R[1:] - R[0]) / h[:, None]).T

        return least_squares(fun, start / scale, jac=jac, bounds=(lo / scale, hi / scale), method="trf", x_scale="jac", max_nfev=max_nfev)

    t0 = time.time()
    sol = fit(slice(None), x0)
    if not np.isfinite(sol.fun).all() or (sol.fun == 1e6).any():
        raise CalibrationError("the model diverged (non-finite outputs) inside the bounds; tighten them")
    J = sol.jac  # in scaled units
    m = sol.fun.size
    dof = max(m - p, 1)
    s2 = 2 * sol.cost / dof
    U, sv, Vt = np.linalg.svd(J, full_matrices=False)
    tol = 1e-6 * (sv.max() if sv.size else 0.0)
    keep = sv > tol
    inv_sv2 = np.zeros_like(sv)
    inv_sv2[keep] = 1.0 / sv[keep] ** 2
    cov_scaled = (Vt.T * inv_sv2) @ Vt * s2  # pseudo-inverse; null directions flagged below
    null_dir = np.zeros(p, dtype=bool)
    for i in np.flatnonzero(sv <= tol):
        null_dir |= np.abs(Vt[i]) > 0.1
    cov = cov_scaled * np.outer(scale, scale)
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    std[null_dir] = np.inf
    values = sol.x * scale
    rel = std / np.maximum(np.abs(values), 1e-300)
    identifiable = (rel <= max_rel_std) & ~null_dir
    at_bound = (np.abs(values - lo) <= 1e-6 * (hi - lo)) | (np.abs(hi - values) <= 1e-6 * (hi - lo))
    spread = np.full(p, np.nan)
    if windows >= 2:
        if len(bounds_rows) >= windows:  # whole experiments, grouped into ``windows`` parts
            groups = np.array_split(np.arange(len(bounds_rows)), windows)
            parts = [(bounds_rows[g[0]][0], bounds_rows[g[-1]][1]) for g in groups if len(g)]
        else:
            edges = np.linspace(0, n, windows + 1).astype(int)
            parts = list(zip(edges[:-1], edges[1:]))
        est = [fit(slice(a, b), values).x * scale for a, b in parts if b - a >= 10]
        if len(est) >= 2:
            spread = np.std(np.array(est), axis=0, ddof=1)
    prov = {
        "method": "scipy.optimize.least_squares(trf, bounded), weighted by per-channel noise",
        "parameters": list(names),
        "measured_channels": sorted(ys),
        "noise_sigma": {c: 1.0 / w for c, w in ws.items()},
        "rows": n,
        "dt_s": dt,
        "time_window_s": [0.0, n * dt],
        "experiment_starts": starts,
        "cost": float(sol.cost),
        "nfev": int(sol.nfev),
        "seconds": round(time.time() - t0, 3),
        "data_sha256": {str(s): hashlib.sha256(Path(s).read_bytes()).hexdigest() for s in sources},
    }
    return CalibrationResult(
        names=tuple(names), values=values, std=std, covariance=cov, window_spread=spread,
        identifiable=identifiable, at_bound=at_bound, singular_values=sv, cost=float(sol.cost),
        rms_weighted_residual=float(np.sqrt(2 * sol.cost / m)), n_residuals=m,
        success=bool(sol.success), message=str(sol.message), provenance=prov,
    )


def write_params_layer(result: CalibrationResult, path, prim_path: str = "/Testbed/Pump") -> Path:
    """Write ``result`` as a USD layer of ``over`` opinions with provenance; returns the path."""
    import json

    from pxr import Sdf

    from twinstage import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layer = Sdf.Layer.FindOrOpen(str(path)) if path.exists() else None
    if layer is not None:
        layer.Clear()  # rewriting a layer this process already opened (CreateNew would refuse)
    else:
        layer = Sdf.Layer.CreateNew(str(path))
    spec = Sdf.CreatePrimInLayer(layer, Sdf.Path(prim_path))
    spec.specifier = Sdf.SpecifierOver
    for i, nm in enumerate(result.names):
        attr = Sdf.AttributeSpec(spec, f"twin:param:{nm}", Sdf.ValueTypeNames.Double)
        attr.default = float(result.values[i])
        attr.customData = {"std": float(result.std[i]), "identifiable": bool(result.identifiable[i]),
                           "at_bound": bool(result.at_bound[i]), "window_spread": float(result.window_spread[i])}
    layer.defaultPrim = Sdf.Path(prim_path).GetPrefixes()[0].name  # the scene's root prim
    layer.customLayerData = {
        "twinstage:calibration": json.dumps({**result.provenance, "covariance": result.covariance.tolist(), "names": list(result.names),
                                             "identifiable": result.identifiable.tolist(), "at_bound": result.at_bound.tolist(),
                                             "success": result.success}),
        "twinstage:kind": "calibration",
        "twinstage:tool": f"twinstage {__version__}",
    }
    layer.Save()
    return path
