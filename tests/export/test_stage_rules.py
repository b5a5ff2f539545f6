"""``twinstage validate`` rules added with the exporters: bad stage metadata, Y-up references into a
Z-up twin, twin schema inside instances, and what is missing (references, MaterialX) in ``info``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pxr import Usd, UsdGeom

from twinstage.usd import create_stage, declare_asset
from twinstage.usd._validate import validate


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinstage", *args], capture_output=True, text=True, timeout=300)


def scene(tmp_path: Path, header: str, body: str = 'def Xform "World" {}') -> Path:
    p = tmp_path / "s.usda"
    p.write_text(f'#usda 1.0\n(\n    defaultPrim = "World"\n    metersPerUnit = 1\n{header}\n)\n{body}\n')
    return p


@pytest.mark.parametrize("header, code", [
    ('    upAxis = "invalid"', "UpAxis"),
    ('    upAxis = "Z"\n    timeCodesPerSecond = 0', "TimeCodesPerSecond"),
    ('    upAxis = "Z"\n    timeCodesPerSecond = -1', "TimeCodesPerSecond"),
    ('    upAxis = "Z"\n    startTimeCode = 10\n    endTimeCode = 1', "TimeCodeRange"),
])
def test_bad_stage_metadata_is_an_error(tmp_path, header, code):
    p = scene(tmp_path, header)
    codes = [f.code for f in validate(p, usd_validators=False) if f.severity == "error"]
    assert code in codes
    r = cli("validate", str(p), "--json", "--no-usd-validators")
    assert r.returncode == 1 and code in {f["code"] for f in json.loads(r.stdout)["findings"]}


def test_good_metadata_passes(tmp_path):
    p = scene(tmp_path, '    upAxis = "Z"\n    timeCodesPerSecond = 24\n    startTimeCode = 1\n    endTimeCode = 10')
    assert [f for f in validate(p, usd_validators=False) if f.code in ("UpAxis", "TimeCodesPerSecond", "TimeCodeRange")] == []


def test_y_up_reference_into_z_up_twin_warns(tmp_path):
    asset = Usd.Stage.CreateNew(str(tmp_path / "chair.usda"))
    UsdGeom.SetStageUpAxis(asset, "Y")
    asset.SetDefaultPrim(UsdGeom.Cube.Define(asset, "/Chair").GetPrim())
    asset.Save()
    p = tmp_path / "room.usda"
    stage = create_stage(p, root="Room", up_axis="Z")
    stage.DefinePrim("/Room/Chair").GetReferences().AddReference("./chair.usda")
    stage.Save()
    found = [f for f in validate(p, usd_validators=False) if f.code == "UpAxisMismatch"]
    assert len(found) == 1 and found[0].where == "/Room/Chair" and "Y-up" in found[0].message
    stage.GetPrimAtPath("/Room/Chair").SetCustomDataByKey("twinstage:upAxisCorrected", True)
    stage.Save()
    assert [f for f in validate(p, usd_validators=False) if f.code == "UpAxisMismatch"] == []


def test_twin_schema_inside_an_instance_is_reported(tmp_path):
    proto = tmp_path / "pump.usda"
    ps = create_stage(proto, root="Pump", up_axis="Z")
    UsdGeom.Cube.Define(ps, "/Pump/Motor")
    declare_asset(ps.GetPrimAtPath("/Pump/Motor"), kind="motor")
    ps.Save()
    p = tmp_path / "plant.usda"
    stage = create_stage(p, root="Plant", up_axis="Z")
    prim = stage.DefinePrim("/Plant/P1")
    prim.GetReferences().AddReference("./pump.usda")
    prim.SetInstanceable(True)
    stage.Save()
    found = [f for f in validate(p, usd_validators=False) if f.code == "TwinOnInstanceProxy"]
    assert [f.where for f in found] == ["/Plant/P1/Motor"]


def test_info_says_what_is_missing(tmp_path):
    p = tmp_path / "s.usda"
    stage = create_stage(p, root="World", up_axis="Z")
    stage.DefinePrim("/World/Cookie").GetReferences().AddReference("./gone.usda")
    (tmp_path / "look.mtlx").write_text("<?xml version='1.0'?><materialx version='1.38'/>")
    stage.DefinePrim("/World/Look").GetReferences().AddReference("./look.mtlx")
    stage.Save()
    r = cli("info", str(p), "--json")
    assert r.returncode == 0, r.stderr
    missing = json.loads(r.stdout)["missing"]
    assert any("gone.usda" in m and "missing referenced file" in m for m in missing)
    assert any("look.mtlx" in m and "MaterialX" in m for m in missing)
    r = cli("info", str(p))
    assert "gone.usda" in r.stdout and "MaterialX" in r.stdout
    codes = {f.code for f in validate(p, usd_validators=False)}
    assert "Composition" in codes
