"""The twin schema: declare/read round trips, explicit authoring, the registered plugin, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxr import Sdf, Tf, Usd

import twinstage.usd as tusd
from twinstage.units import UnitError
from twinstage.usd import (
    ASSET_API,
    STATE_API,
    SchemaError,
    create_stage,
    declare_asset,
    declare_attribute,
    is_twin_asset,
    read_asset,
    read_attributes,
)
from twinstage.usd._genschema import SCHEMA_DIR, generate

META_FIELDS = ("unit", "min", "max", "description", "role", "drives")

#: name, type, value, keyword arguments
DECLS = [
    ("temperature", "float", 21.5, dict(unit="degC", min=-40.0, max=150.0, description="Body temperature", role="state")),
    ("count", "int", 7, dict(unit="1", min=0, max=100, role="input")),
    ("running", "bool", True, dict(unit="1", role="parameter")),
    ("position", "vec3", (1.0, -2.5, 3.25), dict(unit="m", description="Where it is", drives="xformOp:translate")),
    ("pressure", "float", 0.0, dict(unit="bar")),  # all defaults: still authored explicitly
]


def _prim(stage: Usd.Stage, path: str = "/World/Pump") -> Usd.Prim:
    prim = stage.DefinePrim(path, "Xform")
    prim.CreateAttribute("xformOp:translate", Sdf.ValueTypeNames.Double3).Set((0.0, 0.0, 0.0))
    return prim


def _declared_stage(path: Path | None = None) -> Usd.Stage:
    stage = create_stage(path, root="World")
    prim = _prim(stage)
    declare_asset(prim, kind="pump", asset_id="P-101", model="pump_loop")
    for name, type_, value, kw in DECLS:
        declare_attribute(prim, name, type_, value, **kw)
    return stage


def test_round_trip():
    stage = _declared_stage()
    prim = stage.GetPrimAtPath("/World/Pump")
    assert is_twin_asset(prim)
    asset = read_asset(prim)
    assert (asset.path, asset.kind, asset.asset_id, asset.model) == ("/World/Pump", "pump", "P-101", "pump_loop")
    got = {d.name: (d, v) for d, v in read_attributes(prim)}
    assert set(got) == {d[0] for d in DECLS}
    for name, type_, value, kw in DECLS:
        decl, v = got[name]
        assert decl.type == type_
        assert decl.unit == kw["unit"]
        assert decl.min == float(kw.get("min", -math.inf))
        assert decl.max == float(kw.get("max", math.inf))
        assert decl.role == kw.get("role", "state")
        assert decl.description == kw.get("description", "")
        assert decl.drives == kw.get("drives", "")
        assert decl.attr_name == f"twin:{name}"
        assert v == value and type(v) is type(value), (name, v, value)
    # USD value types
    types = {n: str(prim.GetAttribute(f"twin:{n}").GetTypeName()) for n, *_ in DECLS}
    assert types == {"temperature": "double", "count": "int64", "running": "bool", "position": "double3", "pressure": "double"}


def test_non_twin_prim_reads_as_nothing():
    stage = create_stage(None)
    prim = stage.DefinePrim("/World/Plain", "Xform")
    assert read_asset(prim) is None
    assert read_attributes(prim) == []
    assert not is_twin_asset(prim)


def test_everything_authored_explicitly():
    stage = _declared_stage()
    prim = stage.GetPrimAtPath("/World/Pump")
    layer = stage.GetRootLayer()
    for name in ("twin:assetId", "twin:kind", "twin:model"):
        assert prim.GetAttribute(name).HasAuthoredValue(), name
        assert layer.GetAttributeAtPath(f"/World/Pump.{name}") is not None
    for name, *_ in DECLS:
        assert prim.GetAttribute(f"twin:{name}").HasAuthoredValue(), name
        for field in META_FIELDS:
            attr = prim.GetAttribute(f"twin:{name}:{field}")
            assert attr.HasAuthoredValue(), f"twin:{name}:{field} not authored"
            assert attr.GetVariability() == Sdf.VariabilityUniform
    # the defaults, too (role "state", limits ±inf) are written, not left to fallbacks
    assert prim.GetAttribute("twin:pressure:role").Get() == "state"
    assert prim.GetAttribute("twin:pressure:min").Get() == -math.inf
    assert prim.GetAttribute("twin:pressure:max").Get() == math.inf
    schemas = list(prim.GetMetadata("apiSchemas").ApplyOperations([]))
    assert ASSET_API in schemas
    assert {f"{STATE_API}:{n}" for n, *_ in DECLS} <= set(schemas)
    # description doubles as the attribute's documentation
    assert prim.GetAttribute("twin:temperature").GetDocumentation() == "Body temperature"


def test_redeclare_same_type_updates_value_and_keeps_one_schema_instance():
    stage = _declared_stage()
    prim = stage.GetPrimAtPath("/World/Pump")
    declare_attribute(prim, "temperature", "float", 30.0, unit="degC", min=-40.0, max=150.0)
    declare_asset(prim, kind="pump", asset_id="P-102")
    schemas = list(prim.GetMetadata("apiSchemas").ApplyOperations([]))
    assert schemas.count(f"{STATE_API}:temperature") == 1
    assert schemas.count(ASSET_API) == 1
    assert prim.GetAttribute("twin:temperature").Get() == 30.0
    assert read_asset(prim).asset_id == "P-102"


_READER = r"""
import json, math, sys
from pxr import Sdf, Usd, Tf
assert "twinstage" not in sys.modules
stage = Usd.Stage.Open(sys.argv[1])
prim = stage.GetPrimAtPath("/World/Pump")
out = {"apiSchemas": list(prim.GetMetadata("apiSchemas").ApplyOperations([])),
       "appliedSchemas": list(prim.GetAppliedSchemas()),
       "known": Usd.SchemaRegistry.GetTypeFromSchemaTypeName("TwinAssetAPI") != Tf.Type.Unknown,
       "attrs": {}}
for a in prim.GetAttributes():
    if a.GetName().startswith("twin:"):
        v = a.Get()
        if hasattr(v, "__len__") and not isinstance(v, str):
            v = list(v)
        if isinstance(v, float) and math.isinf(v):
            v = "inf" if v > 0 else "-inf"
        out["attrs"][a.GetName()] = [str(a.GetTypeName()), v, a.HasAuthoredValue()]
out["leaked"] = "twinstage" in sys.modules
print(json.dumps(out))
"""


def test_readable_without_plugin(tmp_path):
    path = tmp_path / "twin.usda"
    stage = _declared_stage(path)
    stage.GetRootLayer().Save()
    env = {k: v for k, v in os.environ.items() if k not in ("PXR_PLUGINPATH_NAME", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["known"] is False, "the reader must not have the twin schema plugin"
    assert out["leaked"] is False
    assert ASSET_API in out["apiSchemas"]
    for name, *_ in DECLS:
        assert f"{STATE_API}:{name}" in out["apiSchemas"]
    attrs = out["attrs"]
    assert attrs["twin:assetId"] == ["string", "P-101", True]
    assert attrs["twin:kind"] == ["token", "pump", True]
    assert attrs["twin:model"] == ["token", "pump_loop", True]
    assert attrs["twin:temperature"] == ["double", 21.5, True]
    assert attrs["twin:count"] == ["int64", 7, True]
    assert attrs["twin:running"] == ["bool", True, True]
    assert attrs["twin:position"] == ["double3", [1.0, -2.5, 3.25], True]
    assert attrs["twin:temperature:unit"] == ["string", "degC", True]
    assert attrs["twin:temperature:min"] == ["double", -40.0, True]
    assert attrs["twin:temperature:max"] == ["double", 150.0, True]
    assert attrs["twin:count:role"] == ["token", "input", True]
    assert attrs["twin:pressure:role"] == ["token", "state", True]  # a fallback would be lost without the plugin
    assert attrs["twin:pressure:min"] == ["double", "-inf", True]
    assert attrs["twin:position:drives"] == ["token", "xformOp:translate", True]
    assert attrs["twin:temperature:description"] == ["string", "Body temperature", True]


def test_registered_plugin_knows_the_schemas():
    tusd.register()
    tusd.register()  # idempotent
    asset_t = Usd.SchemaRegistry.GetTypeFromSchemaTypeName(ASSET_API)
    state_t = Usd.SchemaRegistry.GetTypeFromSchemaTypeName(STATE_API)
    assert asset_t != Tf.Type.Unknown and state_t != Tf.Type.Unknown
    assert Usd.SchemaRegistry.IsAppliedAPISchema(asset_t)
    assert Usd.SchemaRegistry.IsAppliedAPISchema(state_t)
    assert not Usd.SchemaRegistry.IsMultipleApplyAPISchema(asset_t)
    assert Usd.SchemaRegistry.IsMultipleApplyAPISchema(state_t)
    assert Usd.SchemaRegistry.GetSchemaKind(asset_t) == Usd.SchemaKind.SingleApplyAPI
    assert Usd.SchemaRegistry.GetSchemaKind(state_t) == Usd.SchemaKind.MultipleApplyAPI
    reg = Usd.SchemaRegistry()
    asset_def = reg.FindAppliedAPIPrimDefinition(ASSET_API)
    assert set(asset_def.GetPropertyNames()) == {"twin:assetId", "twin:kind", "twin:model"}
    state_def = reg.FindAppliedAPIPrimDefinition(STATE_API)
    assert {f"twin:__INSTANCE_NAME__:{f}" for f in META_FIELDS} == set(state_def.GetPropertyNames())

    # fallbacks through an applied (but not authored) instance
    stage = Usd.Stage.CreateInMemory()
    prim = stage.DefinePrim("/A", "Xform")
    prim.AddAppliedSchema(ASSET_API)
    prim.AddAppliedSchema(f"{STATE_API}:flow")
    assert prim.HasAPI(ASSET_API)
    assert f"{STATE_API}:flow" in prim.GetAppliedSchemas()
    role = prim.GetAttribute("twin:flow:role")
    assert role and not role.HasAuthoredValue()
    assert role.Get() == "state"
    assert list(role.GetMetadata("allowedTokens")) == ["state", "input", "parameter", "measured"]
    assert prim.GetAttribute("twin:flow:min").Get() == -math.inf
    assert prim.GetAttribute("twin:flow:max").Get() == math.inf
    assert prim.GetAttribute("twin:flow:unit").Get() == ""
    assert prim.GetAttribute("twin:kind").Get() == ""
    assert not prim.GetAttribute("twin:kind").HasAuthoredValue()


def test_generated_schema_files_are_up_to_date(tmp_path):
    generate(tmp_path)
    for name in ("plugInfo.json", "generatedSchema.usda"):
        fresh = (tmp_path / name).read_text()
        committed = (SCHEMA_DIR / name).read_text()
        assert fresh == committed, f"src/twinstage/usd/schema/{name} is stale: run python -m twinstage.usd._genschema"
    info = (SCHEMA_DIR / "plugInfo.json").read_text()
    assert "@PLUG_INFO" not in info
    types = json.loads("\n".join(ln for ln in info.splitlines() if not ln.lstrip().startswith("#")))["Plugins"][0]["Info"]["Types"]
    assert {"TwinstageTwinAssetAPI", "TwinstageTwinStateAPI"} <= set(types)


def test_schema_files_ship_as_package_data():
    from importlib import resources

    base = resources.files("twinstage.usd") / "schema"
    for name in ("plugInfo.json", "generatedSchema.usda", "schema.usda"):
        assert (base / name).is_file(), name


# -- bad input ---------------------------------------------------------------------------

BAD = [
    # (name, type, value, kwargs, error type, text expected in the message)
    ("1abc", "float", 1.0, dict(unit="m"), SchemaError, "1abc"),
    ("a:b", "float", 1.0, dict(unit="m"), SchemaError, "a:b"),
    ("a b", "float", 1.0, dict(unit="m"), SchemaError, "a b"),
    ("", "float", 1.0, dict(unit="m"), SchemaError, "''"),
    ("x", "double", 1.0, dict(unit="m"), SchemaError, "double"),
    ("x", "string", "hi", dict(unit="m"), SchemaError, "string"),
    ("x", "float", 1.0, dict(unit="m", role="output"), SchemaError, "output"),
    ("x", "float", 1.0, dict(unit="m", min=2.0, max=1.0), SchemaError, "min"),
    ("x", "float", 1.0, dict(unit="m", min=math.nan), SchemaError, "min"),
    ("x", "float", math.nan, dict(unit="m"), SchemaError, "finite"),
    ("x", "float", math.inf, dict(unit="m"), SchemaError, "finite"),
    ("x", "float", -math.inf, dict(unit="m"), SchemaError, "finite"),
    ("x", "float", 5.0, dict(unit="m", min=0.0, max=1.0), SchemaError, "limits"),
    ("x", "float", -0.5, dict(unit="m", min=0.0, max=1.0), SchemaError, "limits"),
    ("x", "int", 5, dict(unit="1", min=0, max=3), SchemaError, "limits"),
    ("x", "int", 1.5, dict(unit="1"), SchemaError, "integer"),
    ("x", "int", math.nan, dict(unit="1"), SchemaError, "integer"),
    ("x", "int", "3", dict(unit="1"), SchemaError, "integer"),
    ("x", "int", True, dict(unit="1"), SchemaError, "integer"),
    ("x", "float", "abc", dict(unit="m"), SchemaError, "number"),
    ("x", "float", "1.5", dict(unit="m"), SchemaError, "number"),
    ("x", "float", None, dict(unit="m"), SchemaError, "number"),
    ("x", "float", True, dict(unit="m"), SchemaError, "number"),
    ("x", "float", (1.0, 2.0), dict(unit="m"), SchemaError, "number"),
    ("x", "bool", 2, dict(unit="1"), SchemaError, "bool"),
    ("x", "bool", "yes", dict(unit="1"), SchemaError, "bool"),
    ("x", "vec3", (1.0, 2.0), dict(unit="m"), SchemaError, "3"),
    ("x", "vec3", (1.0, 2.0, 3.0, 4.0), dict(unit="m"), SchemaError, "3"),
    ("x", "vec3", (1.0, 2.0, math.nan), dict(unit="m"), SchemaError, "finite"),
    ("x", "vec3", 5.0, dict(unit="m"), SchemaError, "3"),
    ("x", "vec3", "123", dict(unit="m"), SchemaError, "3"),
    ("x", "vec3", ("a", "b", "c"), dict(unit="m"), SchemaError, "3"),
    ("x", "float", 1.0, dict(unit="furlongs_per_blarg"), UnitError, "furlongs_per_blarg"),
    ("x", "float", 1.0, dict(unit=""), UnitError, "unit"),
    ("x", "float", 1.0, dict(unit="   "), UnitError, "unit"),
]


@pytest.mark.parametrize("name,type_,value,kw,exc,text", BAD, ids=[f"{i}-{b[1]}-{b[0] or 'empty'}" for i, b in enumerate(BAD)])
def test_bad_declarations_raise_naming_prim_and_attribute(name, type_, value, kw, exc, text):
    stage = create_stage(None, root="World")
    prim = _prim(stage)
    declare_asset(prim, kind="pump")
    before = stage.GetRootLayer().ExportToString()
    with pytest.raises(exc) as info:
        declare_attribute(prim, name, type_, value, **kw)
    msg = str(info.value)
    assert "/World/Pump" in msg, msg
    if _valid_name(name):
        assert f"twin:{name}" in msg, msg
    else:
        assert repr(name) in msg, msg
    assert text in msg, msg
    # nothing half-written
    assert stage.GetRootLayer().ExportToString() == before


def _valid_name(name: str) -> bool:
    return bool(name) and name.isidentifier()


def test_numpy_values_are_accepted():
    stage = create_stage(None, root="World")
    prim = _prim(stage)
    declare_asset(prim)
    declare_attribute(prim, "a", "float", np.float32(1.5), unit="m")
    declare_attribute(prim, "b", "int", np.int64(3), unit="1")
    declare_attribute(prim, "c", "vec3", np.array([1.0, 2.0, 3.0]), unit="m")
    got = {d.name: v for d, v in read_attributes(prim)}
    assert got == {"a": 1.5, "b": 3, "c": (1.0, 2.0, 3.0)}


def test_redeclare_with_another_type_is_an_error():
    stage = create_stage(None, root="World")
    prim = _prim(stage)
    declare_asset(prim)
    declare_attribute(prim, "x", "int", 1, unit="1")
    for type_, value in (("float", 1.5), ("vec3", (1.0, 2.0, 3.0)), ("bool", True)):
        with pytest.raises(SchemaError, match=r"/World/Pump\.twin:x"):
            declare_attribute(prim, "x", type_, value, unit="1")
    assert prim.GetAttribute("twin:x").Get() == 1


def test_declare_asset_on_invalid_prim():
    stage = create_stage(None, root="World")
    with pytest.raises(SchemaError):
        declare_asset(stage.GetPrimAtPath("/World/Nope"))


def _raw_state(prim: Usd.Prim, name: str, vtype, value, **meta) -> None:
    prim.AddAppliedSchema(f"{STATE_API}:{name}")
    if vtype is not None:
        prim.CreateAttribute(f"twin:{name}", vtype, custom=False).Set(value)
    for field, (t, v) in meta.items():
        prim.CreateAttribute(f"twin:{name}:{field}", t, custom=False).Set(v)


@pytest.mark.parametrize(
    "case",
    ["no_value", "string_type", "nan", "inf_vec3", "bad_role", "min_above_max"],
)
def test_read_attributes_rejects_hand_broken_prims(case):
    stage = create_stage(None, root="World")
    prim = _prim(stage)
    declare_asset(prim)
    T = Sdf.ValueTypeNames
    if case == "no_value":
        _raw_state(prim, "x", None, None)
    elif case == "string_type":
        _raw_state(prim, "x", T.String, "hot")
    elif case == "nan":
        _raw_state(prim, "x", T.Double, math.nan)
    elif case == "inf_vec3":
        _raw_state(prim, "x", T.Double3, (1.0, math.inf, 0.0))
    elif case == "bad_role":
        _raw_state(prim, "x", T.Double, 1.0, role=(T.Token, "output"))
    elif case == "min_above_max":
        _raw_state(prim, "x", T.Double, 1.0, min=(T.Double, 5.0), max=(T.Double, 1.0))
    with pytest.raises(SchemaError, match=r"/World/Pump\.twin:x"):
        read_attributes(prim)


def test_read_attributes_accepts_other_tools_value_types():
    """float/int/point3f written by another tool read as the twin's float/int/vec3."""
    stage = create_stage(None, root="World")
    prim = _prim(stage)
    declare_asset(prim)
    T = Sdf.ValueTypeNames
    _raw_state(prim, "f", T.Float, 1.5, unit=(T.String, "m"))
    _raw_state(prim, "i", T.Int, 4, unit=(T.String, "1"))
    _raw_state(prim, "p", T.Point3f, (1.0, 2.0, 3.0), unit=(T.String, "m"))
    got = {d.name: (d.type, v) for d, v in read_attributes(prim)}
    assert got == {"f": ("float", 1.5), "i": ("int", 4), "p": ("vec3", (1.0, 2.0, 3.0))}
