"""Data assimilation inside the tick: an engine stage (``engine.add_stage(Assimilator())``).

Pairs come from the scene: every sensor — a prim with a ``measured`` attribute and a
``twin:measures`` relationship to the simulated attribute it observes — pairs its
reading with that attribute (units converted once, at start). Each tick, after the
models stepped and before the quality checks, the simulated attribute's value becomes
the Kalman estimate and its quality ``ESTIMATED``:

* a measurement enters only on the tick its sample arrives (telemetry age < one tick:
  a 1 Hz sensor held over ten 10 Hz ticks is one measurement, not ten), never when it
  is BAD or non-finite; UNCERTAIN enters with ``uncertain_factor`` × its variance;
* rows no telemetry source feeds are not measurements (a sensor model reading the
  simulated value back would be the model confirming itself);
* two kinds of attribute. *Algebraic* ones (flow, pressure… the model recomputes them
  from its inputs every tick) carry a model-error (bias) filter: the estimate is
  ``model + b̂`` with ``b`` a random walk, so the correction persists between samples.
  *States* the model integrates from their previous value (temperatures with a time
  constant) are filtered directly: the estimate is written back and the model
  propagates it (the classic Kalman predict). By default an attribute whose unit is a
  temperature is a state (``states=`` overrides).

Noise: ``meas_std`` (the sensor's standard deviation, attribute's unit) and
``process_std`` (how fast the model error wanders, unit per √s); by default both are
``rel_std`` (1 %) of the attribute's declared range. The standard deviation of each
estimate is twin state when the simulated prim declares ``twin:<name>Std`` (same unit;
``delta_degC`` for temperatures): the bridge and the viewer then show it. Everything
else (per-pair model value, measurement, gain) is on :attr:`Assimilator.last`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from twinstage.state import Quality

from ._kalman import AssimilationStage
from ._monitor import _is_temperature
from ._residuals import measured_pairs

log = logging.getLogger(__name__)
_EST = np.uint8(Quality.ESTIMATED)
_CLEAR = np.uint8(~(int(Quality.ESTIMATED) | int(Quality.BAD)) & 0xFF)


class _Group:
    """All pairs of one (simulated channel, sensor channel), filtered together."""

    def __init__(self, target: str, sensor: str, trows, srows, scale, offset, std_rows, state: bool, names):
        self.target, self.sensor = target, sensor
        self.trows = np.asarray(trows, dtype=np.int64)
        self.srows = np.asarray(srows, dtype=np.int64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)
        self.std_rows = std_rows  # (channel, rows, mask) or None
        self.state = state
        self.names = names
        self.kf: AssimilationStage | None = None
        self.bias = np.zeros(len(self.trows))


class Assimilator:
    """Kalman data assimilation of a running twin's sensor pairs (an engine stage)."""

    def __init__(self, *, attributes: list[str] | None = None, meas_std: dict[str, float] | None = None,
                 process_std: dict[str, float] | None = None, rel_std: float = 0.01, states: list[str] | None = None,
                 uncertain_factor: float = 10.0, keep_trace: bool = False) -> None:
        if not (math.isfinite(rel_std) and rel_std > 0):
            raise ValueError(f"rel_std must be finite > 0, got {rel_std!r}")
        self.attributes = None if attributes is None else set(attributes)
        self.meas_std = dict(meas_std or {})
        self.process_std = dict(process_std or {})
        self.rel_std = float(rel_std)
        self.states = None if states is None else set(states)
        self.uncertain_factor = float(uncertain_factor)
        self.keep_trace = keep_trace
        self.trace: list[dict[str, np.ndarray]] = []  #: per tick (keep_trace): model, prior, measured, used, estimate, std per pair
        self.groups: list[_Group] = []
        self.last: dict[str, dict[str, float]] = {}
        self.status = "not started"
        self.updates = 0  #: measurements that entered

    # -- stage protocol ------------------------------------------------------------------
    def start(self, ctx: Any) -> None:
        from twinstage.units import converter

        self.ctx = ctx
        table, stage = ctx.table, ctx.stage
        found: dict[tuple[str, str], list] = {}
        taken: dict[tuple[str, int], str] = {}
        for name, ch, row, path, tprim, tname in measured_pairs(table, stage):
            if self.attributes is not None and tname not in self.attributes:
                continue
            try:
                trow = table.row(tprim, tname)
                tch = table.channels[tname]
                conv = converter(ch.unit, tch.unit, f"{path}.twin:{name}")
            except Exception as exc:
                log.warning("assimilation: %s.%s vs %s.%s skipped: %s", path, name, tprim, tname, exc)
                continue
            if tch.type != "float" or tch.role[trow] == "measured":
                continue
            if (tname, trow) in taken:  # one filter per attribute: a second sensor on it is not fused (yet)
                log.warning("assimilation: %s.%s also measures %s.%s; only %s is assimilated", path, name, tprim, tname, taken[(tname, trow)])
                continue
            taken[(tname, trow)] = path
            off = float(conv(0.0))
            found.setdefault((tname, name), []).append((trow, row, float(conv(1.0)) - off, off, tprim, path))
        for (tname, sname), items in sorted(found.items()):
            tch = table.channels[tname]
            std_name = f"{tname}Std"
            std = None
            if std_name in table.channels:
                rows, mask = [], []
                for trow, *_ , tprim, _ in items:
                    try:
                        rows.append(table.row(tprim, std_name))
                        mask.append(True)
                    except Exception:
                        rows.append(0)
                        mask.append(False)
                if any(mask):
                    std = (std_name, np.array(rows), np.array(mask))
            state = (tname in self.states) if self.states is not None else _is_temperature(tch.unit)
            self.groups.append(_Group(tname, sname, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items],
                                      [i[3] for i in items], std, state, [f"{i[4]}.{tname}" for i in items]))
        self.status = "assimilating" if self.groups else "no sensor with twin:measures to assimilate"
        if not self.groups:
            log.warning("assimilation: %s", self.status)

    def _noise(self, g: _Group, dt: float) -> tuple[np.ndarray, np.ndarray]:
        ch = self.ctx.table.channels[g.target]
        span = ch.hi[g.trows] - ch.lo[g.trows]
        scale = np.where(np.isfinite(span) & (span > 0), span, np.maximum(np.abs(self.ctx.table[g.target][g.trows]), 1.0))
        r = np.full(len(g.trows), float(self.meas_std[g.target])) if g.target in self.meas_std else self.rel_std * scale
        p = np.full(len(g.trows), float(self.process_std[g.target])) if g.target in self.process_std else self.rel_std * scale
        if (r <= 0).any() or (p < 0).any() or not (np.isfinite(r).all() and np.isfinite(p).all()):
            raise ValueError(f"assimilation of twin:{g.target}: meas_std must be > 0 and process_std >= 0")
        return r * r, p * p * dt

    def step(self, t: float, dt: float) -> None:
        table = self.ctx.table
        fresh_all = self.ctx.freshness()
        row_trace: dict[str, list] = {k: [] for k in ("model", "prior", "measured", "used", "estimate", "std")}
        for g in self.groups:
            if g.kf is None:
                r, q = self._noise(g, dt)
                g.kf = AssimilationStage(len(g.trows), process_var=q, meas_var=r, initial_var=r, uncertain_factor=self.uncertain_factor)
            vals = table[g.target]
            model = vals[g.trows].astype(np.float64)
            z = table[g.sensor][g.srows].astype(np.float64) * g.scale + g.offset
            qual = table.quality(g.sensor)[g.srows].copy()
            age = fresh_all.get(g.sensor)
            fresh = np.zeros(len(g.srows), bool) if age is None else (age[g.srows] < dt * (1 - 1e-9))
            use = fresh & ((qual & np.uint8(Quality.BAD)) == 0) & np.isfinite(z)
            qual[~fresh] |= np.uint8(Quality.BAD)  # not a new sample: it does not enter (the filter skips BAD)
            prior = model if g.state else model + g.bias
            if g.state:
                est, var, flags = g.kf.step(model, z, qual)
            else:
                g.bias, var, flags = g.kf.step(g.bias, z - model, qual)
                est = model + g.bias
            self.updates += int(use.sum())
            ok = np.isfinite(est)
            vals[g.trows[ok]] = est[ok]
            tq = table.quality(g.target)
            tq[g.trows] = (tq[g.trows] & _CLEAR) | flags
            sd = np.sqrt(var)
            if g.std_rows is not None:
                name, rows, mask = g.std_rows
                table[name][rows[mask]] = sd[mask]
                table.quality(name)[rows[mask]] = _EST
            for i, nm in enumerate(g.names):
                self.last[nm] = {"model": float(model[i]), "measured": float(z[i]), "used": bool(use[i]),
                                 "estimate": float(est[i]), "std": float(sd[i])}
            if self.keep_trace:
                for k, v in (("model", model), ("prior", prior), ("measured", z), ("used", use), ("estimate", est), ("std", sd)):
                    row_trace[k].append(v)
        if self.keep_trace and self.groups:
            self.trace.append({k: np.concatenate(v) for k, v in row_trace.items()})

    @property
    def names(self) -> list[str]:
        return [n for g in self.groups for n in g.names]

    def std(self, path: str, name: str) -> float:
        """Standard deviation of the estimate of ``path``'s ``twin:<name>`` (NaN: not assimilated)."""
        return self.last.get(f"{path}.{name}", {}).get("std", float("nan"))

    def describe(self) -> dict[str, Any]:
        return {"stage": "assimilation", "method": "scalar Kalman filter per sensor pair (bias random walk; states filtered directly)",
                "pairs": self.names, "relStd": self.rel_std, "measStd": dict(self.meas_std), "processStd": dict(self.process_std),
                "states": sorted(g.target for g in self.groups if g.state), "uncertainFactor": self.uncertain_factor}

    def close(self) -> None:
        pass
