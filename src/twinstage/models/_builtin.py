"""Built-in vectorised behaviour models: thermal, pump loop, sensors, path motion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pxr import Sdf, Usd, UsdGeom

from ..state import StateTable
from ._base import ModelError, dataclass_params, register_model, require_unit, rows_for


def _relationship_targets(stage: Usd.Stage, prim_path: str, rel_name: str, model: str) -> list[Sdf.Path]:
    prim = stage.GetPrimAtPath(prim_path)
    rel = prim.GetRelationship(rel_name)
    targets = rel.GetForwardedTargets() if rel else []
    if not targets:
        raise ModelError(f"{prim_path}: model {model!r} needs relationship {rel_name} with a target")
    return list(targets)


@register_model
@dataclass
class ThermalModel:
    """First-order thermal body: ``tau dT/dt = T_amb + R·P − T``.

    Per prim: ``temperature`` (degC, state), ``ambientTemperature`` (degC),
    ``heatInput`` (W), ``thermalResistance`` (K/W), ``timeConstant`` (s). The step
    is the exact solution over ``dt``, so it is stable for any step size.
    """

    name: ClassVar[str] = "thermal"
    CHANNELS: ClassVar[dict[str, str]] = {
        "temperature": "degC",
        "ambientTemperature": "degC",
        "heatInput": "W",
        "thermalResistance": "K/W",
        "timeConstant": "s",
    }

    def bind(self, table: StateTable, prims: np.ndarray, stage: Any) -> None:
        self.rows = {}
        for ch, unit in self.CHANNELS.items():
            self.rows[ch] = rows_for(table, ch, prims, self.name)
            require_unit(table, ch, unit, self.name)

    def step(self, table: StateTable, t: float, dt: float, rng: np.random.Generator) -> None:
        r = self.rows
        temp = table["temperature"]
        tau = np.maximum(table["timeConstant"][r["timeConstant"]], 1e-9)
        target = table["ambientTemperature"][r["ambientTemperature"]] + table["thermalResistance"][r["thermalResistance"]] * table["heatInput"][r["heatInput"]]
        cur = temp[r["temperature"]]
        temp[r["temperature"]] = cur + (target - cur) * -np.expm1(-dt / tau)

    def parameters(self) -> dict[str, Any]:
        return {}


@dataclass
class PumpParams:
    """Constants of the SKAB water-circulation testbed (fitted to its anomaly-free run).

    At speed 1 with both valves open the model settles at the testbed's normal
    operation: 125 L/min, 0.11 bar, 2.4 A, 228.6 V, motor 89.5 °C, fluid 28.5 °C,
    vibration 0.213 / 0.268 g.
    """

    nominal_flow: float = 125.2  # L/min at speed 1, valves open
    valve_resistance: float = 0.05  # relative loop resistance added by a valve at 1/opening² - 1
    min_opening: float = 0.02
    shutoff_pressure: float = 0.40  # bar at speed 1 and zero flow
    nominal_pressure: float = 0.111  # bar at nominal flow
    noload_current: float = 0.95  # A
    nominal_current: float = 2.40  # A
    supply_voltage: float = 235.1  # V
    line_resistance: float = 2.7  # ohm
    motor_rise0: float = 45.8  # K, iron/friction losses while running
    motor_rise_i2: float = 3.24  # K/A², copper losses
    motor_tau: float = 900.0  # s
    fluid_rise: float = 3.5  # K at speed 1
    fluid_tau: float = 1800.0  # s
    vibration1: float = 0.213  # g at speed 1
    vibration2: float = 0.268  # g at speed 1
    cavitation_opening: float = 0.3  # inlet opening below which cavitation starts
    cavitation_gain1: float = 2.0
    cavitation_gain2: float = 1.0


@register_model
@dataclass
class PumpLoopModel:
    """A motor-driven centrifugal pump in a circulation loop with an inlet and an outlet valve.

    Pump prim channels: ``motorSpeed`` (1 = nominal, input), ``flowRate`` (L/min), ``pressure``
    (bar, after the pump), ``current`` (A), ``voltage`` (V), ``motorTemperature``
    and ``fluidTemperature`` (degC, first-order), ``vibration1``/``vibration2``
    (g0, RMS), ``ambientTemperature`` (degC). Relationships ``twin:inletValve`` and
    ``twin:outletValve`` target valve prims with ``opening`` (1, 0..1).

    Closing a valve raises the loop resistance, so flow falls and pressure after
    the pump rises along the pump curve; a nearly closed *inlet* valve starves
    the pump and vibration rises (cavitation), as in SKAB's valve1 and
    cavitation experiments.
    """

    name: ClassVar[str] = "pump_loop"
    params: PumpParams = field(default_factory=PumpParams)
    CHANNELS: ClassVar[dict[str, str]] = {
        "motorSpeed": "dimensionless",
        "flowRate": "L/min",
        "pressure": "bar",
        "current": "A",
        "voltage": "V",
        "motorTemperature": "degC",
        "fluidTemperature": "degC",
        "vibration1": "g0",
        "vibration2": "g0",
        "ambientTemperature": "degC",
    }

    def bind(self, table: StateTable, prims: np.ndarray, stage: Any) -> None:
        self.rows = {ch: rows_for(table, ch, prims, self.name) for ch in self.CHANNELS}
        for ch, unit in self.CHANNELS.items():
            if unit != "dimensionless":
                require_unit(table, ch, unit, self.name)
        valves = {}
        for rel in ("inletValve", "outletValve"):
            idx = []
            for pi in prims.tolist():
                target = _relationship_targets(stage, table.prims[pi], f"twin:{rel}", self.name)[0]
                ti = table.prim_index.get(str(target))
                if ti is None:
                    raise ModelError(f"{table.prims[pi]}: twin:{rel} targets {target}, which is not a twin prim")
                idx.append(ti)
            valves[rel] = rows_for(table, "opening", np.array(idx, dtype=np.int32), self.name)
        self.valves = valves

    def step(self, table: StateTable, t: float, dt: float, rng: np.random.Generator) -> None:
        p, r = self.params, self.rows
        s = np.clip(table["motorSpeed"][r["motorSpeed"]], 0.0, None)
        op = table["opening"]
        v1 = np.clip(op[self.valves["inletValve"]], p.min_opening, 1.0)
        v2 = np.clip(op[self.valves["outletValve"]], p.min_opening, 1.0)
        resistance = 1.0 + p.valve_resistance * ((1.0 / v1**2 - 1.0) + (1.0 / v2**2 - 1.0))
        q = p.nominal_flow * s / np.sqrt(resistance)
        a = (p.shutoff_pressure - p.nominal_pressure) / p.nominal_flow**2
        pressure = p.shutoff_pressure * s**2 - a * q**2
        current = p.noload_current + (p.nominal_current - p.noload_current) * s**2 * (q / p.nominal_flow)
        voltage = p.supply_voltage - p.line_resistance * current
        amb = table["ambientTemperature"][r["ambientTemperature"]]
        motor_target = amb + np.where(s > 0, p.motor_rise0 + p.motor_rise_i2 * current**2, 0.0)
        fluid_target = amb + p.fluid_rise * s
        mt = table["motorTemperature"]
        ft = table["fluidTemperature"]
        mt[r["motorTemperature"]] += (motor_target - mt[r["motorTemperature"]]) * -np.expm1(-dt / p.motor_tau)
        ft[r["fluidTemperature"]] += (fluid_target - ft[r["fluidTemperature"]]) * -np.expm1(-dt / p.fluid_tau)
        cav = np.clip((p.cavitation_opening - v1) / p.cavitation_opening, 0.0, 1.0)
        table["flowRate"][r["flowRate"]] = q
        table["pressure"][r["pressure"]] = pressure
        table["current"][r["current"]] = current
        table["voltage"][r["voltage"]] = voltage
        table["vibration1"][r["vibration1"]] = p.vibration1 * s**2 * (1.0 + p.cavitation_gain1 * cav)
        table["vibration2"][r["vibration2"]] = p.vibration2 * s**2 * (1.0 + p.cavitation_gain2 * cav)

    def parameters(self) -> dict[str, Any]:
        return dataclass_params(self.params)


@register_model
@dataclass
class SensorModel:
    """A sensor reads one attribute of another prim.

    A sensor prim declares exactly one twin attribute with role ``measured`` (its
    reading, e.g. ``twin:pressure`` in bar) and a relationship ``twin:measures`` to
    the attribute it observes (``</Testbed/Pump.twin:pressure>``). Each tick the
    reading follows the source, converted between the two units (checked with
    pint at bind: incompatible units are an error). Telemetry binds to the same
    reading: a reading fed by a source (:meth:`fed`) is measured and this model
    leaves it alone, so measured (sensor) and simulated (observed attribute)
    values sit side by side.
    """

    name: ClassVar[str] = "sensor"
    order: ClassVar[int] = 100  # after the models whose outputs sensors read

    def bind(self, table: StateTable, prims: np.ndarray, stage: Any) -> None:
        from ..units import UnitError, converter

        groups: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for pi in prims.tolist():
            path = table.prims[pi]
            readings = [n for n in table.attributes(path) if table.channels[n].role[table.row(path, n)] == "measured"]
            if len(readings) != 1:
                raise ModelError(f"{path}: a sensor declares exactly one twin attribute with role 'measured' (found {readings or 'none'})")
            dst = readings[0]
            target = _relationship_targets(stage, path, "twin:measures", self.name)[0]
            prop = target.name if target.IsPropertyPath() else ""
            src_prim, src = str(target.GetPrimPath()), prop[len("twin:") :]
            if not prop.startswith("twin:") or src_prim not in table.prim_index or src not in table.channels:
                raise ModelError(f"{path}: twin:measures must target a twin attribute (</Prim.twin:name>), not <{target}>")
            g = groups.setdefault((dst, src), ([], [], path))
            g[0].append(table.row(path, dst))
            g[1].append(table.row(src_prim, src))
        self.groups = []
        for (dst, src), (drows, srows, first) in groups.items():
            try:
                conv = converter(table.channels[src].unit, table.channels[dst].unit)
            except UnitError as exc:  # ModelError names the prim: the first sensor of this (reading, source) pair
                raise ModelError(f"{first}: sensor twin:{dst} reading twin:{src}: {exc}") from None
            self.groups.append((dst, src, np.array(drows), np.array(srows), conv))
        self._all_groups = list(self.groups)

    def fed(self, fed: dict[str, np.ndarray]) -> None:
        """Readings fed by telemetry (a bool mask per channel) are measured, not simulated: skip them."""
        groups = []
        for dst, src, drows, srows, conv in self._all_groups:
            mask = fed.get(dst)
            if mask is not None:
                keep = ~mask[drows]
                drows, srows = drows[keep], srows[keep]
            if len(drows):
                groups.append((dst, src, drows, srows, conv))
        self.groups = groups

    def step(self, table: StateTable, t: float, dt: float, rng: np.random.Generator) -> None:
        for dst, src, drows, srows, conv in self.groups:
            table[dst][drows] = conv(table[src][srows])

    def parameters(self) -> dict[str, Any]:
        return {}


@register_model
@dataclass
class PathMotionModel:
    """Moves prims along polyline paths (conveyor items, AGVs).

    Per prim: ``position`` (vec3, m, usually ``drives = xformOp:translate``),
    ``distance`` (m along the path), ``speed`` (m/s) and a relationship
    ``twin:path`` to a prim with ``points`` (a linear ``BasisCurves``). A closed
    path (last point = first) wraps around; an open one stops at its end.
    Positions are expressed in each prim's parent space.
    """

    name: ClassVar[str] = "path_motion"

    def bind(self, table: StateTable, prims: np.ndarray, stage: Any) -> None:
        pos_rows = rows_for(table, "position", prims, self.name)
        dist_rows = rows_for(table, "distance", prims, self.name)
        speed_rows = rows_for(table, "speed", prims, self.name)
        for ch, unit in (("position", "m"), ("distance", "m"), ("speed", "m/s")):
            require_unit(table, ch, unit, self.name)
        cache = UsdGeom.XformCache()
        by_path: dict[str, list[int]] = {}
        for k, pi in enumerate(prims.tolist()):
            target = str(_relationship_targets(stage, table.prims[pi], "twin:path", self.name)[0])
            by_path.setdefault(target, []).append(k)
        self.groups = []
        for target, ks in by_path.items():
            path_prim = stage.GetPrimAtPath(target)
            pts_attr = path_prim.GetAttribute("points") if path_prim else None
            pts = pts_attr.Get() if pts_attr else None
            if pts is None or len(pts) < 2:
                raise ModelError(f"{table.prims[int(prims[ks[0]])]}: twin:path {target} has no 'points' (need 2 or more)")
            world = np.array(cache.GetLocalToWorldTransform(path_prim), dtype=np.float64)
            p = np.asarray(pts, dtype=np.float64)
            p = np.c_[p, np.ones(len(p))] @ world
            p = p[:, :3]
            seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
            cum = np.r_[0.0, np.cumsum(seg)]
            closed = bool(np.allclose(p[0], p[-1]))
            inv = []
            for k in ks:
                parent = stage.GetPrimAtPath(table.prims[int(prims[k])]).GetParent()
                m = np.array(cache.GetLocalToWorldTransform(parent), dtype=np.float64)
                inv.append(np.linalg.inv(m))
            self.groups.append(
                {
                    "points": p,
                    "cum": cum,
                    "length": float(cum[-1]),
                    "closed": closed,
                    "pos": pos_rows[ks],
                    "dist": dist_rows[ks],
                    "speed": speed_rows[ks],
                    "inv": np.stack(inv),
                }
            )

    def step(self, table: StateTable, t: float, dt: float, rng: np.random.Generator) -> None:
        dist, speed, pos = table["distance"], table["speed"], table["position"]
        for g in self.groups:
            d = dist[g["dist"]] + speed[g["speed"]] * dt
            d = np.mod(d, g["length"]) if g["closed"] else np.clip(d, 0.0, g["length"])
            dist[g["dist"]] = d
            world = np.stack([np.interp(d, g["cum"], g["points"][:, i]) for i in range(3)], axis=1)
            local = np.einsum("ni,nij->nj", np.c_[world, np.ones(len(d))], g["inv"])
            pos[g["pos"]] = local[:, :3]

    def parameters(self) -> dict[str, Any]:
        return {}

