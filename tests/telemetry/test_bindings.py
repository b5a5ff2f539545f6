"""Telemetry bindings in USD (TwinBindingAPI): declare/read round trips, plain-pxr readers,
flattening, malformed specs, the pump testbed's SKAB bindings, `twinstage info`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pxr import Sdf, Tf, Usd

from twinstage.scenes import build_pump_testbed
from twinstage.scenes._pump_testbed import SENSORS, SKAB_UNITS
from twinstage.telemetry import Binding, TelemetryError, resolve
from twinstage.telemetry._mapping import scene_table
from twinstage.usd import BINDING_API, SchemaError, create_stage, declare_asset, declare_attribute, declare_binding, describe, open_stage, read_bindings, twin_prims
from twinstage.usd._binding import FIELDS, binding_name

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "twinstage"]


def _stage(path: Path | None = None) -> Usd.Stage:
    stage = create_stage(path, root="World")
    pump = stage.DefinePrim("/World/Pump", "Xform")
    declare_asset(pump, kind="pump")
    declare_attribute(pump, "pressure", "float", 1.0, unit="bar")
    declare_attribute(pump, "temperature", "float", 20.0, unit="degC")
    declare_attribute(pump, "accel", "float", 0.0, unit="m/s^2")
    declare_attribute(pump, "running", "bool", True, unit="1")
    return stage


BINDINGS = [
    Binding("/World/Pump", "pressure", "csv", "Pressure", unit="psi", scale=2.0, offset=-1.5, period=1.0, align="linear", stale_after=4.0, name="hist_pressure"),
    Binding("/World/Pump", "pressure", "mqtt", "plant/pump/p", unit="bar", period=0.1, name="live_pressure"),
    Binding("/World/Pump", "temperature", "opcua", "ns=2;s=Pump.T", unit="degF", align="mean"),
    Binding("/World/Pump", "accel", "sql", "PUMP.ACC", unit="g0", period=0.5),
    Binding("/World/Pump", "temperature", "ingest", "pump-t"),
    Binding("/World/Pump", "accel", "parquet", "acc rms [g]", unit="g0"),
]


def test_round_trip_declare_save_reopen(tmp_path):
    path = tmp_path / "twin.usda"
    stage = _stage(path)
    pump = stage.GetPrimAtPath("/World/Pump")
    declared = [declare_binding(pump, b) for b in BINDINGS]
    assert [b.name for b in declared] == ["hist_pressure", "live_pressure", "opcua_ns_2_s_Pump_T", "sql_PUMP_ACC", "ingest_pump_t", "parquet_acc_rms_g"]
    assert declared == [dataclasses.replace(b, name=binding_name(b)) for b in BINDINGS]
    stage.GetRootLayer().Save()
    again = read_bindings(open_stage(path))
    assert again == declared
    assert read_bindings(open_stage(path), kind="mqtt") == [declared[1]]
    assert read_bindings(open_stage(path), kind="csv") == [declared[0]]
    reopened = open_stage(path)
    assert read_bindings(reopened, prims=twin_prims(reopened)) == declared
    assert read_bindings(reopened, prims=[reopened.GetPrimAtPath("/World")]) == []


def test_every_property_is_authored_explicitly():
    stage = _stage()
    pump = stage.GetPrimAtPath("/World/Pump")
    b = declare_binding(pump, Binding("/World/Pump", "pressure", "mqtt", "t/p"))  # all defaults
    assert f"{BINDING_API}:{b.name}" in pump.GetAppliedSchemas()
    for prop in FIELDS:
        attr = pump.GetAttribute(f"twin:binding:{b.name}:{prop}")
        assert attr.HasAuthoredValue(), prop
        assert attr.GetVariability() == Sdf.VariabilityUniform


def test_redeclare_updates_values_and_keeps_one_instance():
    stage = _stage()
    pump = stage.GetPrimAtPath("/World/Pump")
    declare_binding(pump, Binding("", "pressure", "mqtt", "t/p", name="p"))
    declare_binding(pump, Binding("", "pressure", "mqtt", "t/p2", period=2.0, name="p"))
    schemas = list(pump.GetMetadata("apiSchemas").ApplyOperations([]))
    assert schemas.count(f"{BINDING_API}:p") == 1
    (b,) = read_bindings(stage)
    assert (b.key, b.period) == ("t/p2", 2.0)


_READER = r"""
import json, sys
from pxr import Tf, Usd
stage = Usd.Stage.Open(sys.argv[1])
prim = stage.GetPrimAtPath("/World/Pump")
out = {"apiSchemas": list(prim.GetMetadata("apiSchemas").ApplyOperations([])),
       "known": Usd.SchemaRegistry.GetTypeFromSchemaTypeName("TwinBindingAPI") != Tf.Type.Unknown,
       "attrs": {a.GetName(): [str(a.GetTypeName()), a.Get(), a.HasAuthoredValue()]
                 for a in prim.GetAttributes() if a.GetName().startswith("twin:binding:")},
       "leaked": "twinstage" in sys.modules}
print(json.dumps(out))
"""


def test_readable_by_plain_pxr_without_the_plugin(tmp_path):
    path = tmp_path / "twin.usda"
    stage = _stage(path)
    declare_binding(stage.GetPrimAtPath("/World/Pump"), BINDINGS[0])
    stage.GetRootLayer().Save()
    env = {k: v for k, v in os.environ.items() if k not in ("PXR_PLUGINPATH_NAME", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["known"] is False and out["leaked"] is False
    assert "TwinBindingAPI:hist_pressure" in out["apiSchemas"]
    p = "twin:binding:hist_pressure:"
    assert out["attrs"] == {
        p + "target": ["token", "pressure", True],
        p + "kind": ["token", "csv", True],
        p + "key": ["string", "Pressure", True],
        p + "unit": ["string", "psi", True],
        p + "scale": ["double", 2.0, True],
        p + "offset": ["double", -1.5, True],
        p + "period": ["double", 1.0, True],
        p + "align": ["token", "linear", True],
        p + "staleAfter": ["double", 4.0, True],
    }


def test_registered_plugin_knows_the_binding_schema():
    reg = Usd.SchemaRegistry()
    t = Usd.SchemaRegistry.GetTypeFromSchemaTypeName(BINDING_API)
    assert t != Tf.Type.Unknown and Usd.SchemaRegistry.IsMultipleApplyAPISchema(t)
    names = set(reg.FindAppliedAPIPrimDefinition(BINDING_API).GetPropertyNames())
    assert names == {f"twin:binding:__INSTANCE_NAME__:{f}" for f in FIELDS}
    stage = Usd.Stage.CreateInMemory()
    prim = stage.DefinePrim("/A")
    prim.AddAppliedSchema(f"{BINDING_API}:x")
    align = prim.GetAttribute("twin:binding:x:align")
    assert align.Get() == "hold" and not align.HasAuthoredValue()
    assert list(align.GetMetadata("allowedTokens")) == ["hold", "linear", "mean"]
    assert prim.GetAttribute("twin:binding:x:staleAfter").Get() == Binding("", "", "", "").stale_after
    assert prim.GetAttribute("twin:binding:x:scale").Get() == 1.0


def test_flattened_and_exported_stage_keeps_the_bindings(tmp_path):
    stage = _stage(tmp_path / "base.usda")
    declared = [declare_binding(stage.GetPrimAtPath("/World/Pump"), b) for b in BINDINGS]
    stage.GetRootLayer().Save()
    # bindings in a stronger layer over the asset, then flattened into one file
    over = Sdf.Layer.CreateNew(str(tmp_path / "over.usda"))
    over.subLayerPaths.append("./base.usda")
    top = Usd.Stage.Open(over)
    extra = declare_binding(top.GetPrimAtPath("/World/Pump"), Binding("", "temperature", "csv", "T", unit="K", name="extra"))
    flat = tmp_path / "flat.usdc"
    top.Export(str(flat))
    assert read_bindings(open_stage(flat)) == [extra, *declared]
    assert read_bindings(open_stage(tmp_path / "base.usda")) == declared


@pytest.mark.parametrize("ext", ["usdc", "usdz"])
def test_twinstage_export_keeps_the_bindings(pump_scene, tmp_path, ext):
    from twinstage.export import export_usd

    out = tmp_path / f"exported.{ext}"
    export_usd(pump_scene, out)
    assert read_bindings(open_stage(out)) == read_bindings(open_stage(pump_scene))


def _retype(prim: Usd.Prim, name: str, vtype, value) -> None:
    """Author ``name`` with the wrong type, as another tool writing the file by hand could."""
    prim.RemoveProperty(name)
    spec = prim.GetStage().GetRootLayer().GetPrimAtPath(prim.GetPath())
    Sdf.AttributeSpec(spec, name, vtype, Sdf.VariabilityUniform).default = value


def _malformed(edit) -> Usd.Stage:
    stage = _stage()
    pump = stage.GetPrimAtPath("/World/Pump")
    declare_binding(pump, Binding("", "pressure", "mqtt", "t/p", name="bad"))
    edit(pump, "twin:binding:bad:")
    return stage


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda p, n: p.GetAttribute(n + "key").Clear(), "key is (not authored|empty)"),  # fallback '' with the plugin
        (lambda p, n: p.GetAttribute(n + "key").Set(""), "key is empty"),
        (lambda p, n: p.GetAttribute(n + "target").Clear(), "target (is not authored|'' must be)"),
        (lambda p, n: p.GetAttribute(n + "kind").Set("ftp"), "kind 'ftp'"),
        (lambda p, n: p.GetAttribute(n + "align").Set("cubic"), "align 'cubic'"),
        (lambda p, n: p.GetAttribute(n + "period").Set(-1.0), "period must be >= 0"),
        (lambda p, n: p.GetAttribute(n + "staleAfter").Set(0.0), "staleAfter must be > 0"),
        (lambda p, n: p.GetAttribute(n + "scale").Set(float("nan")), "scale must be a finite number"),
        (lambda p, n: p.GetAttribute(n + "target").Set("flow"), "target twin:flow is not a twin attribute"),
        (lambda p, n: _retype(p, n + "period", Sdf.ValueTypeNames.String, "1 s"), "period must be a number, got str"),
        (lambda p, n: _retype(p, n + "key", Sdf.ValueTypeNames.Double, 3.0), "key must be a string or token, got float"),
    ],
)
def test_malformed_specs_name_prim_and_binding(edit, expect):
    stage = _malformed(edit)
    with pytest.raises(SchemaError, match=expect) as err:
        read_bindings(stage)
    assert "/World/Pump" in str(err.value) and "'bad'" in str(err.value)


def test_unauthored_optional_fields_read_as_defaults():
    stage = _malformed(lambda p, n: [p.RemoveProperty(n + f) for f in ("unit", "scale", "offset", "period", "align", "staleAfter")])
    (b,) = read_bindings(stage)
    assert b == Binding("/World/Pump", "pressure", "mqtt", "t/p", name="bad")


@pytest.mark.parametrize(
    "binding, expect",
    [
        (Binding("", "flow", "csv", "F"), "target twin:flow is not declared on /World/Pump"),
        (Binding("", "pressure", "csv", "P", unit="degC"), "cannot convert"),
        (Binding("", "accel", "csv", "A", unit="g"), r"'g' \(\[mass\]\)"),  # pint's g is the gram
        (Binding("", "pressure", "csv", "P", unit="furlongz"), "unknown unit"),
        (Binding("/World/Other", "pressure", "csv", "P"), "binding is for prim /World/Other"),
        (Binding("", "pressure", "csv", "P", name="has space"), "must be an identifier"),
        (Binding("", "pressure", "kafka", "P"), "kind 'kafka'"),
        (Binding("", "pressure", "csv", "P", period=-1.0), "period must be >= 0"),
        (Binding("", "pressure", "csv", "P", stale_after=float("inf")), "stale_after must be a finite"),
        (Binding("", "pressure", "csv", "   "), "key is empty"),
    ],
)
def test_declare_rejects_bad_bindings_naming_prim_and_binding(binding, expect):
    stage = _stage()
    pump = stage.GetPrimAtPath("/World/Pump")
    with pytest.raises(SchemaError, match=expect) as err:
        declare_binding(pump, binding)
    assert "/World/Pump" in str(err.value)
    assert not [s for s in pump.GetAppliedSchemas() if s.startswith(BINDING_API)], "nothing is applied on error"


def test_read_bindings_rejects_an_unknown_kind_filter():
    with pytest.raises(SchemaError, match="kind 'foo'"):
        read_bindings(_stage(), kind="foo")


# -- the pump testbed ---------------------------------------------------------


def test_pump_testbed_ships_one_skab_csv_binding_per_sensor():
    stage = build_pump_testbed()
    bindings = read_bindings(stage)
    assert len(bindings) == len(SENSORS) == 8
    by_prim = {b.prim: b for b in bindings}
    for name, column, attr, unit, *_ in SENSORS:
        b = by_prim[f"/Testbed/Sensors/{name}"]
        assert (b.attribute, b.kind, b.key, b.unit, b.period, b.align, b.name) == (attr, "csv", column, SKAB_UNITS[column], 1.0, "hold", f"skab_{attr}")
    # every one resolves against the twin's state table with an identity conversion
    table = scene_table(stage)
    for b in bindings:
        r = resolve(table, b)
        assert r.apply([1.0, 2.5]).tolist() == [1.0, 2.5], b


def test_skab_units_convert_right():
    """SKAB's accelerometer 'g' is standard gravity (pint: g0); pint's 'g' is the gram."""
    stage = _stage()
    table = scene_table(stage)
    r = resolve(table, Binding("/World/Pump", "accel", "csv", "Accelerometer1RMS", unit="g0"))
    assert r.apply([1.0, 0.5]).tolist() == pytest.approx([9.80665, 4.903325])
    with pytest.raises(TelemetryError, match=r"'g' \(\[mass\]\)"):
        resolve(table, Binding("/World/Pump", "accel", "csv", "Accelerometer1RMS", unit="g"))
    r = resolve(table, Binding("/World/Pump", "pressure", "csv", "Pressure", unit="psi"))
    assert r.apply([14.5037738])[0] == pytest.approx(1.0)


def test_skab_binding_keys_are_columns_of_every_skab_file(shared_data):
    files = sorted((shared_data / "skab").rglob("*.csv"))
    assert len(files) >= 10
    keys = {b.key for b in read_bindings(build_pump_testbed())}
    for f in files:
        with f.open(newline="") as fh:
            header = next(csv.reader(fh, delimiter=";"))
        assert keys <= set(header), f"{f}: missing {keys - set(header)}"


def test_committed_pump_scene_is_fresh_and_carries_the_bindings(tmp_path):
    """scenes/pump_testbed.usda is what build_pump_testbed writes (regenerate with
    `twinstage scene pump -o scenes/pump_testbed.usda --parts assets/pump_testbed_parts.usdc`)."""
    (tmp_path / "scenes").mkdir()
    fresh = tmp_path / "scenes" / "pump_testbed.usda"
    build_pump_testbed(fresh, parts=tmp_path / "assets" / "pump_testbed_parts.usdc")
    assert fresh.read_text() == (ROOT / "scenes" / "pump_testbed.usda").read_text()
    assert (tmp_path / "assets" / "pump_testbed_parts.usdc").read_bytes() == (ROOT / "assets" / "pump_testbed_parts.usdc").read_bytes()
    assert len(read_bindings(open_stage(ROOT / "scenes" / "pump_testbed.usda"), kind="csv")) == 8


def test_describe_and_info_list_the_bindings(pump_scene):
    info = describe(open_stage(pump_scene))
    assert len(info["bindings"]) == 8
    first = info["bindings"][0]
    assert first == {"prim": "/Testbed/Sensors/Accelerometer1", "name": "skab_vibration1", "attribute": "vibration1", "kind": "csv",
                     "key": "Accelerometer1RMS", "unit": "g0", "scale": 1.0, "offset": 0.0, "period": 1.0, "align": "hold", "staleAfter": 3.0}
    proc = subprocess.run([*CLI, "info", "--json", str(pump_scene)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bindings"] == info["bindings"]
    proc = subprocess.run([*CLI, "info", str(pump_scene)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "telemetry bindings (8):" in proc.stdout
    assert "/Testbed/Sensors/FlowMeter.twin:flowRate ← csv 'Volume Flow RateRMS' [L/min]" in proc.stdout
    assert "/Testbed/Sensors/Accelerometer1.twin:vibration1 ← csv 'Accelerometer1RMS' [g]" in proc.stdout  # g0 as a person writes it


def test_info_on_a_scene_without_bindings_has_an_empty_list():
    assert describe(_stage())["bindings"] == []
