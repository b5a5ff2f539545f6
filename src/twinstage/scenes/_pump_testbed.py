"""The SKAB water-circulation testbed as a twin scene.

A pump driven by an electric motor circulates water from a tank through the
inlet valve (Valve1), the pump, the outlet valve (Valve2) and back. Eight sensors
match the columns of the Skoltech Anomaly Benchmark (SKAB) CSVs; each sensor's
``twin:assetId`` is its SKAB column name, and each carries a csv telemetry binding
(``TwinBindingAPI:skab_<attribute>``: key = the SKAB column, source unit from the
SKAB README, period 1 s, align hold), so the scene replays SKAB files as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from pxr import Gf, Kind, Sdf, Usd, UsdGeom

from ..telemetry._binding import Binding
from ..usd import create_stage, declare_asset, declare_attribute, declare_binding
from ._meshes import box, cylinder

#: (prim name, SKAB column, twin attribute it reads on the pump, unit, min, max, position, description)
SENSORS = [
    ("Accelerometer1", "Accelerometer1RMS", "vibration1", "g0", 0.0, 10.0, (0.15, 0.22, 0.62), "Vibration acceleration RMS on the pump (1)"),
    ("Accelerometer2", "Accelerometer2RMS", "vibration2", "g0", 0.0, 10.0, (0.15, -0.22, 0.62), "Vibration acceleration RMS on the pump (2)"),
    ("CurrentSensor", "Current", "current", "A", 0.0, 20.0, (-0.55, 0.45, 0.9), "Motor current"),
    ("PressureSensor", "Pressure", "pressure", "bar", -1.0, 10.0, (0.75, 0.0, 0.62), "Loop pressure after the pump"),
    ("MotorTemperatureSensor", "Temperature", "motorTemperature", "degC", -40.0, 200.0, (-0.45, 0.0, 0.82), "Motor body temperature"),
    ("Thermocouple", "Thermocouple", "fluidTemperature", "degC", -10.0, 110.0, (1.6, 0.0, 0.52), "Fluid temperature in the loop"),
    ("VoltageSensor", "Voltage", "voltage", "V", 0.0, 400.0, (-0.55, 0.6, 0.9), "Motor voltage"),
    ("FlowMeter", "Volume Flow RateRMS", "flowRate", "L/min", 0.0, 300.0, (2.3, -0.9, 0.35), "Circulation flow rate"),
]

#: SKAB column → its unit as the SKAB README gives it, spelled for pint. SKAB's "g" is
#: standard gravity, which pint calls ``g0`` (pint's ``g`` is the gram: a binding with
#: unit "g" into a ``g0`` attribute fails at bind time as mass vs acceleration).
SKAB_UNITS = {
    "Accelerometer1RMS": "g0",
    "Accelerometer2RMS": "g0",
    "Current": "A",
    "Pressure": "bar",
    "Temperature": "degC",
    "Thermocouple": "degC",
    "Voltage": "V",
    "Volume Flow RateRMS": "L/min",
}
SKAB_PERIOD_S = 1.0  # SKAB samples at 1 Hz

#: fidelity state on the pump: the live anomaly detector's score and alarm (``twinstage
#: run --detect``; the viewer pulses the pump while ``anomalyAlarm`` is set), the drift
#: monitor's verdict that the model needs recalibrating (``ResidualMonitor``), and one
#: standard deviation per assimilated attribute (``twinstage run --assimilate``)
ANOMALY_ATTRS = [
    ("anomalyScore", "float", 0.0, "1", 0.0, float("inf"), "Live anomaly score (windowed detector on the sensors; docs/fidelity.md)"),
    ("anomalyAlarm", "bool", False, "1", float("-inf"), float("inf"), "Anomaly alarm (with hysteresis) raised by the live detector"),
    ("needsRecalibration", "bool", False, "1", float("-inf"), float("inf"),
     "The drift monitor on model residuals says the calibrated model no longer matches the plant (docs/fidelity.md)"),
]

#: pump twin attributes: name, unit, initial value, min, max, role, description
PUMP_ATTRS = [
    ("motorSpeed", "1", 1.0, 0.0, 1.2, "input", "Motor speed as a fraction of nominal"),
    ("flowRate", "L/min", 125.2, 0.0, 300.0, "state", "Circulation flow rate"),
    ("pressure", "bar", 0.111, -1.0, 10.0, "state", "Pressure after the pump"),
    ("current", "A", 2.4, 0.0, 20.0, "state", "Motor current"),
    ("voltage", "V", 228.6, 0.0, 400.0, "state", "Motor voltage"),
    ("motorTemperature", "degC", 89.5, -40.0, 200.0, "state", "Motor body temperature"),
    ("fluidTemperature", "degC", 28.5, -10.0, 110.0, "state", "Fluid temperature in the loop"),
    ("vibration1", "g0", 0.213, 0.0, 10.0, "state", "Vibration acceleration RMS (1)"),
    ("vibration2", "g0", 0.268, 0.0, 10.0, "state", "Vibration acceleration RMS (2)"),
    ("ambientTemperature", "degC", 25.0, -40.0, 60.0, "parameter", "Room temperature"),
]

STEEL = (0.55, 0.58, 0.62)
BLUE = (0.12, 0.35, 0.75)
PIPE = (0.7, 0.7, 0.72)
VALVE = (0.85, 0.15, 0.12)
SENSOR = (0.95, 0.75, 0.1)
TANK = (0.35, 0.6, 0.8)


def _asset(stage: Usd.Stage, path: str, translate: tuple[float, float, float]) -> Usd.Prim:
    xf = UsdGeom.Xform.Define(stage, path)
    xf.AddTranslateOp().Set(Gf.Vec3d(*translate))
    Usd.ModelAPI(xf.GetPrim()).SetKind(Kind.Tokens.component)
    return xf.GetPrim()


class _Parts:
    """Meshes go to a parts layer (crate: compact, fast) that the scene references
    by a relative path; in memory they are authored in place."""

    def __init__(self, stage: Usd.Stage, scene_path: Path | None, parts_path: Path | None):
        self.stage = stage
        self.parts = None
        if scene_path is not None:
            parts_path = parts_path or scene_path.with_name(scene_path.stem + "_parts.usdc")
            parts_path.parent.mkdir(parents=True, exist_ok=True)
            if parts_path.exists():
                parts_path.unlink()
            self.parts = create_stage(parts_path, root="Parts", root_type="Scope", kind="")
            rel = os.path.relpath(parts_path.resolve(), scene_path.parent.resolve())
            self.ref = rel if rel.startswith(".") else f"./{rel}"
            self.path = parts_path

    def __call__(self, fn, path: str, *args, **kwargs) -> None:
        if self.parts is None:
            fn(self.stage, path, *args, **kwargs)
            return
        part = "/Parts/" + path.strip("/").replace("/", "_")
        fn(self.parts, part, *args, **kwargs)
        self.stage.DefinePrim(path).GetReferences().AddReference(self.ref, part)

    def save(self) -> None:
        if self.parts is not None:
            self.parts.GetRootLayer().Save()


def build_pump_testbed(path: str | os.PathLike[str] | None = None, *, parts: str | os.PathLike[str] | None = None) -> Usd.Stage:
    """Build the testbed scene; save it to ``path`` if given.

    Saved scenes keep their meshes in a crate parts file (``parts``, default
    ``<scene>_parts.usdc`` beside the scene) referenced by a relative path, so the
    scene itself stays small readable USDA.
    """
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
    stage = create_stage(path, root="Testbed")
    geom = _Parts(stage, path, Path(parts) if parts is not None else None)
    root = stage.GetDefaultPrim()
    root.SetDocumentation("SKAB water-circulation testbed (Skoltech Anomaly Benchmark): pump, motor, two valves, tank, eight sensors")
    stage.SetMetadata("comment", "Generated by twinstage.scenes.build_pump_testbed; do not edit by hand")
    geom(box, "/Testbed/Base", (4.0, 2.4, 0.1), STEEL, center=(0.4, 0.0, 0.05))

    tank = _asset(stage, "/Testbed/Tank", (-1.3, 0.0, 0.1))
    declare_asset(tank, kind="tank", asset_id="Tank")
    geom(cylinder, "/Testbed/Tank/Geom", 0.45, 1.1, TANK, center=(0, 0, 0.55))
    declare_attribute(tank, "level", "float", 0.8, unit="1", min=0.0, max=1.0, role="input", description="Fill level as a fraction of the tank height")

    pump = _asset(stage, "/Testbed/Pump", (0.2, 0.0, 0.1))
    declare_asset(pump, kind="pump", asset_id="Pump", model="pump_loop")
    geom(cylinder, "/Testbed/Pump/Housing", 0.25, 0.3, BLUE, axis="Y", center=(0.15, 0, 0.42))
    geom(cylinder, "/Testbed/Pump/Motor", 0.2, 0.55, STEEL, axis="X", center=(-0.35, 0, 0.42))
    geom(box, "/Testbed/Pump/Foot", (1.1, 0.4, 0.2), STEEL, center=(-0.1, 0, 0.1))
    for name, unit, value, lo, hi, role, doc in PUMP_ATTRS:
        declare_attribute(pump, name, "float", value, unit=unit, min=lo, max=hi, role=role, description=doc)
    for name, typ, value, unit, lo, hi, doc in ANOMALY_ATTRS:
        declare_attribute(pump, name, typ, value, unit=unit, min=lo, max=hi, role="state", description=doc)
    pump.CreateAttribute("twin:anomalyAlarm:alarmHigh", Sdf.ValueTypeNames.Double, custom=True).Set(1.0)  # the viewer's alarm level
    for _, _, attr, unit, *_ in SENSORS:  # the assimilated attributes' uncertainty (0 until assimilation runs)
        std_unit = "delta_degC" if unit == "degC" else unit
        declare_attribute(pump, f"{attr}Std", "float", 0.0, unit=std_unit, min=0.0, role="state",
                          description=f"One standard deviation of the assimilated {attr} (ESTIMATED)")

    for name, x, asset_id, doc in (("Valve1", -0.55, "valve1", "Inlet valve (tank → pump)"), ("Valve2", 1.15, "valve2", "Outlet valve (pump → loop)")):
        valve = _asset(stage, f"/Testbed/{name}", (x, -0.9 if name == "Valve2" else 0.0, 0.1))
        declare_asset(valve, kind="valve", asset_id=asset_id)
        valve.SetDocumentation(doc)
        geom(cylinder, f"/Testbed/{name}/Body", 0.1, 0.22, VALVE, axis="X", center=(0, 0, 0.42))
        geom(cylinder, f"/Testbed/{name}/Stem", 0.02, 0.2, STEEL, center=(0, 0, 0.62))
        geom(box, f"/Testbed/{name}/Handle", (0.04, 0.25, 0.03), VALVE, center=(0, 0, 0.73))
        declare_attribute(valve, "opening", "float", 1.0, unit="1", min=0.0, max=1.0, role="input", description="Valve opening (0 closed, 1 fully open)")

    pump.CreateRelationship("twin:inletValve", custom=False).SetTargets([Sdf.Path("/Testbed/Valve1")])
    pump.CreateRelationship("twin:outletValve", custom=False).SetTargets([Sdf.Path("/Testbed/Valve2")])

    pipes = UsdGeom.Xform.Define(stage, "/Testbed/Pipes").GetPrim()
    z = 0.52
    for i, ((x0, y0), (x1, y1)) in enumerate(
        [((-0.85, 0.0), (-0.66, 0.0)), ((-0.44, 0.0), (0.12, 0.0)), ((0.45, 0.0), (1.6, 0.0)), ((1.6, 0.0), (1.6, -0.9)), ((1.6, -0.9), (1.26, -0.9)), ((1.04, -0.9), (-1.3, -0.9)), ((-1.3, -0.9), (-1.3, -0.46))]
    ):
        length = abs(x1 - x0) + abs(y1 - y0)
        axis = "X" if y0 == y1 else "Y"
        geom(cylinder, f"/Testbed/Pipes/Pipe{i}", 0.05, length, PIPE, axis=axis, center=((x0 + x1) / 2, (y0 + y1) / 2, z), segments=16)
    Usd.ModelAPI(pipes).SetKind(Kind.Tokens.group)

    sensors = UsdGeom.Xform.Define(stage, "/Testbed/Sensors").GetPrim()
    Usd.ModelAPI(sensors).SetKind(Kind.Tokens.group)
    for name, column, attr, unit, lo, hi, pos, doc in SENSORS:
        s = UsdGeom.Xform.Define(stage, f"/Testbed/Sensors/{name}")
        s.AddTranslateOp().Set(Gf.Vec3d(*pos))
        prim = s.GetPrim()
        Usd.ModelAPI(prim).SetKind(Kind.Tokens.component)
        declare_asset(prim, kind="sensor", asset_id=column, model="sensor")
        prim.SetDocumentation(doc)
        geom(box, f"/Testbed/Sensors/{name}/Geom", (0.08, 0.08, 0.08), SENSOR)
        initial = dict((a[0], a[2]) for a in PUMP_ATTRS)[attr]
        declare_attribute(prim, attr, "float", initial, unit=unit, min=lo, max=hi, role="measured", description=doc)
        prim.CreateRelationship("twin:measures", custom=False).SetTargets([Sdf.Path(f"/Testbed/Pump.twin:{attr}")])
        # the SKAB CSV column that feeds this sensor: travels with the scene (TwinBindingAPI)
        declare_binding(prim, Binding(str(prim.GetPath()), attr, "csv", column, unit=SKAB_UNITS[column], period=SKAB_PERIOD_S, align="hold", name=f"skab_{attr}"))

    if path is not None:
        geom.save()
        stage.GetRootLayer().Save()
    return stage
