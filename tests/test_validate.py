"""Validation: our validate() (UsdValidation + conventions + twin schema) and NVIDIA's asset validator
on every kind of file twinstage writes."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
from usd_validators import asset_validator
from pxr import Sdf, Usd

import twinstage
from twinstage.scenes import build_pump_testbed, generate_factory
from twinstage.usd._validate import Finding, summary, validate


def _codes(findings: list[Finding], severity: str | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity == severity}


def _errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """One of every kind of file twinstage writes, in one folder (the demo's go in demo/)."""
    d = tmp_path_factory.mktemp("written")
    files: dict[str, Path] = {}
    files["scene"] = d / "pump_testbed.usda"
    build_pump_testbed(files["scene"])
    files["parts"] = d / "pump_testbed_parts.usdc"
    files["factory"] = d / "factory.usdc"
    generate_factory(50, files["factory"], items=20)

    twin = twinstage.open(files["scene"], rate=10.0)
    files["recording"] = d / "pump.rec.usdc"
    twin.record(files["recording"])
    twin.set("/Testbed/Valve1", opening=0.3)
    twin.run(ticks=30)
    twin.close()
    files["export"] = twinstage.Recording(files["recording"]).export_per_prim(d / "pump.anim.usdc")

    twin = twinstage.open(files["factory"], rate=5.0)
    files["factory_recording"] = d / "factory.rec.usdc"
    twin.record(files["factory_recording"], every=2)
    twin.run(ticks=12)
    twin.close()
    files["factory_export"] = twinstage.Recording(files["factory_recording"]).export_per_prim(d / "factory.anim.usdc")
    for p in files.values():
        assert p.is_file(), p
    return files


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    from twinstage.cli.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    assert run_demo(out, ticks=50) == 0
    return out


# -- our validate() ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["scene", "parts", "factory", "recording", "export", "factory_recording", "factory_export"])
def test_validate_clean_on_what_we_write(written, kind):
    findings = validate(written[kind])
    assert summary(findings) == {"errors": 0, "warnings": 0}, "\n".join(map(str, findings))


def test_validate_clean_on_demo_outputs(demo_dir):
    files = sorted(demo_dir.glob("*.usd*"))
    assert len(files) == 4
    for f in files:
        findings = validate(f)
        assert not _errors(findings), f"{f.name}:\n" + "\n".join(map(str, findings))


def test_validate_accepts_an_open_stage(written):
    stage = Usd.Stage.Open(str(written["scene"]))
    assert not _errors(validate(stage))


def test_bare_stage_reports_missing_metadata(tmp_path):
    p = tmp_path / "bare.usda"
    stage = Usd.Stage.CreateNew(str(p))
    stage.DefinePrim("/A", "Xform")
    stage.DefinePrim("/B", "Xform")
    stage.Save()
    findings = validate(p)
    errors = _codes(findings, "error")
    assert {"MissingMetersPerUnitMetadata", "MissingUpAxisMetadata", "MissingDefaultPrim"} <= errors
    assert "MetersPerUnit" in errors
    assert "SingleRootPrim" in _codes(findings, "warning")
    # without OpenUSD's validators our own checks still catch the unit problem
    own = validate(p, usd_validators=False)
    assert "MetersPerUnit" in _codes(own, "error")
    assert not {"MissingMetersPerUnitMetadata", "MissingUpAxisMetadata", "MissingDefaultPrim"} & _codes(own)
    # an in-memory stage works the same
    mem = Usd.Stage.CreateInMemory()
    mem.DefinePrim("/A")
    assert {"MissingMetersPerUnitMetadata", "MissingDefaultPrim"} <= _codes(validate(mem), "error")


def test_time_samples_need_time_codes_per_second(tmp_path):
    p = tmp_path / "sampled.usda"
    stage = twinstage.create_stage(p, root="World")
    attr = stage.GetDefaultPrim().CreateAttribute("x", Sdf.ValueTypeNames.Double)
    attr.Set(1.0, 1.0)
    attr.Set(2.0, 2.0)
    stage.Save()
    assert "TimeCodesPerSecond" in _codes(validate(p), "error")
    stage.SetTimeCodesPerSecond(24.0)
    stage.Save()
    assert "TimeCodesPerSecond" not in _codes(validate(p))


def test_metric_scale_and_absolute_paths_warn(tmp_path):
    other = tmp_path / "other.usda"
    twinstage.create_stage(other, root="Other").Save()
    p = tmp_path / "cm.usda"
    stage = twinstage.create_stage(p, root="World", meters_per_unit=0.01)
    stage.GetDefaultPrim().GetReferences().AddReference(str(other.resolve()))
    stage.Save()
    warnings = _codes(validate(p), "warning")
    assert {"MetersPerUnit", "AbsoluteAssetPath"} <= warnings


def _break(pump_scene: Path, edit) -> Path:
    layer = Sdf.Layer.FindOrOpen(str(pump_scene))
    edit(layer)
    layer.Save()
    return pump_scene


def _set(layer: Sdf.Layer, path: str, value) -> None:
    spec = layer.GetAttributeAtPath(path)
    assert spec is not None, path
    spec.default = value


@pytest.mark.parametrize(
    "edit,code,where",
    [
        (lambda lay: _set(lay, "/Testbed/Valve1.twin:opening", 5.0), "TwinLimits", "/Testbed/Valve1.twin:opening"),
        (lambda lay: _set(lay, "/Testbed/Pump.twin:pressure", -7.5), "TwinLimits", "/Testbed/Pump.twin:pressure"),
        (lambda lay: _set(lay, "/Testbed/Pump.twin:current:unit", "furlongs_per_blarg"), "TwinUnit", "/Testbed/Pump.twin:current"),
        (lambda lay: _set(lay, "/Testbed/Tank.twin:level:unit", ""), "TwinUnit", "/Testbed/Tank.twin:level"),
        (lambda lay: _set(lay, "/Testbed/Pump.twin:flowRate", math.nan), "TwinAttribute", "/Testbed/Pump"),
        (lambda lay: _set(lay, "/Testbed/Pump.twin:voltage:role", "output"), "TwinAttribute", "/Testbed/Pump"),
        (lambda lay: _set(lay, "/Testbed/Pump.twin:voltage:min", 500.0), "TwinAttribute", "/Testbed/Pump"),
    ],
    ids=["valve-over-max", "pressure-under-min", "unknown-unit", "empty-unit", "nan", "bad-role", "min-above-max"],
)
def test_hand_broken_twin_values(pump_scene, edit, code, where):
    assert not _errors(validate(pump_scene))
    findings = validate(_break(pump_scene, edit))
    hits = [f for f in findings if f.code == code and f.severity == "error"]
    assert hits, "\n".join(map(str, findings))
    assert any(where in f.where or where in f.message for f in hits), [str(f) for f in hits]


def test_state_without_asset_and_dangling_drives(pump_scene):
    def edit(layer: Sdf.Layer) -> None:
        tank = layer.GetPrimAtPath("/Testbed/Tank")
        tank.SetInfo("apiSchemas", Sdf.TokenListOp.Create(prependedItems=["TwinStateAPI:level"]))
        _set(layer, "/Testbed/Pump.twin:flowRate:drives", "xformOp:nothere")

    findings = validate(_break(pump_scene, edit))
    assert any(f.code == "TwinStateWithoutAsset" and f.where == "/Testbed/Tank" for f in findings)
    assert any(f.code == "TwinDrives" and "/Testbed/Pump.twin:flowRate" in f.where for f in findings)


@pytest.mark.parametrize(
    "content", [None, b"#usda 1.0\n", b"PXR-USDC" + bytes(range(200)), b"#usda 1.0\ndef Xform \"A\" {\n  double x = \n"]
)
def test_unopenable_file_is_one_open_error(tmp_path, content):
    suffix = ".usdc" if content and content.startswith(b"PXR") else ".usda"
    p = tmp_path / f"broken{suffix}"
    if content is not None:
        p.write_bytes(content)
    findings = validate(p)
    assert len(findings) == 1
    f = findings[0]
    assert (f.severity, f.code, f.where) == ("error", "Open", str(p))
    assert str(p) in f.message


# -- NVIDIA's omniverse-asset-validator --------------------------------------------------------


def _validated_assets(out: str) -> list[str]:
    return re.findall(r"Results for Asset '([^']+)'", out)


def _chunk_files(folder: Path) -> list[Path]:
    """The chunks of the recordings in ``folder`` (``<stem>_<ext>.chunks/*.usdc``): the validator checks them too."""
    return sorted(folder.glob("*.chunks/*.usdc"))


def test_asset_validator_catches_a_bare_stage(tmp_path):
    """Control: the helper really counts the validator's errors."""
    p = tmp_path / "bare.usda"
    stage = Usd.Stage.CreateNew(str(p))
    stage.DefinePrim("/A", "Xform")
    stage.Save()
    n, out = asset_validator(p)
    assert n >= 3, out[-3000:]


def test_asset_validator_clean_on_everything_we_write(written):
    folder = written["scene"].parent
    assert set(folder.glob("*.usd*")) == set(written.values())
    n, out = asset_validator(folder)
    expected = [*written.values(), *_chunk_files(folder)]
    assert sorted(Path(a).name for a in _validated_assets(out)) == sorted(p.name for p in expected), out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert n == 0, "\n".join(errors[:40])


def test_asset_validator_clean_on_demo_outputs(demo_dir):
    n, out = asset_validator(demo_dir)
    assert len(_validated_assets(out)) == 4 + len(_chunk_files(demo_dir)), out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert n == 0, "\n".join(errors[:40])



def test_asset_validator_on_usda_recordings(written, tmp_path):
    """A recording asked for as .usda (readable text) is valid too; NVIDIA's only complaint is
    UsdAsciiPerformanceChecker, which calls any text layer with more than 4 time samples
    on an attribute an error and advises crate (.usdc, the format the demo and docs use)."""
    shutil.copy(written["scene"], tmp_path / written["scene"].name)
    shutil.copy(written["parts"], tmp_path / written["parts"].name)
    scene = tmp_path / written["scene"].name
    twin = twinstage.open(scene)
    twin.record(tmp_path / "pump.rec.usda")
    twin.run(ticks=10)
    twin.close()
    twinstage.Recording(tmp_path / "pump.rec.usda").export_per_prim(tmp_path / "pump.anim.usda")
    for name in ("pump.rec.usda", "pump.anim.usda"):
        assert not _errors(validate(tmp_path / name))
    n, out = asset_validator(tmp_path)
    assert len(_validated_assets(out)) == 4 + len(_chunk_files(tmp_path)), out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    others = [ln for ln in errors if "[UsdAsciiPerformanceChecker]" not in ln]
    assert others == [], "\n".join(others[:40])
    assert all(".usda'" in ln for ln in errors)


def test_bindings_are_validated(pump_scene):
    """Telemetry bindings whose target or unit cannot work are validation errors naming the binding."""
    assert not [f for f in validate(pump_scene, usd_validators=False) if f.code.startswith("TwinBinding")]
    stage = Usd.Stage.Open(str(pump_scene))
    layer = stage.GetRootLayer()
    # hand-edit two existing bindings the way a text editor would: a wrong target and a wrong unit
    specs = [p for p in layer.GetPrimAtPath("/Testbed/Sensors/PressureSensor").properties if p.name.startswith("twin:binding:")]
    target = next(p for p in specs if p.name.endswith(":target"))
    unit = next(p for p in specs if p.name.endswith(":unit"))
    target.default = "nosuchattribute"
    layer.Save()
    found = [f for f in validate(pump_scene, usd_validators=False) if f.code.startswith("TwinBinding")]
    assert len(found) == 1 and "/Testbed/Sensors/PressureSensor" in found[0].message and "nosuchattribute" in found[0].message, found
    target.default = "pressure"
    unit.default = "degC"
    layer.Save()
    found = [f for f in validate(pump_scene, usd_validators=False) if f.code == "TwinBindingUnit"]
    assert len(found) == 1 and "degC" in found[0].message, found


def test_schema_on_an_instance_proxy_is_a_schema_error(tmp_path):
    from twinstage.usd import SchemaError, create_stage, declare_asset, declare_attribute

    stage = create_stage(str(tmp_path / "inst.usda"), root="Plant")
    proto = stage.DefinePrim("/Plant/Proto", "Xform")
    stage.DefinePrim("/Plant/Proto/Part", "Xform")
    inst = stage.DefinePrim("/Plant/Inst", "Xform")
    inst.GetReferences().AddInternalReference("/Plant/Proto")
    inst.SetInstanceable(True)
    part = stage.GetPrimAtPath("/Plant/Inst/Part")
    assert part.IsInstanceProxy()
    with pytest.raises(SchemaError, match="instance"):
        declare_asset(part, kind="x")
    with pytest.raises(SchemaError, match="instance"):
        declare_attribute(part, "temperature", "float", 1.0, unit="degC")
    assert proto


def test_binding_is_a_reserved_attribute_name(tmp_path):
    from twinstage.usd import SchemaError, create_stage, declare_asset, declare_attribute

    stage = create_stage(str(tmp_path / "r.usda"), root="Plant")
    p = declare_asset(stage.DefinePrim("/Plant/A", "Xform"), kind="x")
    with pytest.raises(SchemaError, match="reserved"):
        declare_attribute(p, "binding", "float", 1.0, unit="1")
