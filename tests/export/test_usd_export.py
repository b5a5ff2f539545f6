"""USD/USDA/USDC/USDZ export: stage metadata, twin values, recordings, kept layers, no partial outputs —
every file checked by NVIDIA's asset validator and OpenUSD's UsdValidation."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pxr import Sdf, Usd, UsdGeom

from twinstage.export import ExportError, export_usd

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "scenes" / "pump_testbed.usda"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinstage", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run.usdc"
    r = cli("run", str(SCENE), "--ticks", "12", "--record", str(out), "--reproducible")
    assert r.returncode == 0, r.stderr
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["usda", "usdc", "usdz"])
def test_scene_export_is_a_good_usd_citizen(tmp_path, fmt, usd_checks):
    before = sha(SCENE)
    out = tmp_path / f"testbed.{fmt}"
    r = cli("export", str(SCENE), "--format", fmt, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sha(SCENE) == before  # the source is never touched
    nv, ours = usd_checks(out)
    assert nv == [] and ours == [], (nv, ours)
    stage = Usd.Stage.Open(str(out))
    assert stage.GetDefaultPrim().GetPath() == Sdf.Path("/Testbed")
    assert [p.GetName() for p in stage.GetPseudoRoot().GetChildren()] == ["Testbed"]
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and stage.GetRootLayer().pseudoRoot.GetInfo("metersPerUnit") == 1.0
    # every twin schema value is authored in the file itself (a reader without our plugin sees them)
    src = Usd.Stage.Open(str(SCENE))
    for path in ("/Testbed/Pump", "/Testbed/Tank"):
        want = {a.GetName(): a.Get() for a in src.GetPrimAtPath(path).GetAttributes() if a.GetName().startswith("twin:")}
        got = stage.GetPrimAtPath(path)
        for name, value in want.items():
            assert got.GetAttribute(name).HasAuthoredValue(), name
            assert got.GetAttribute(name).Get() == value, name
    # the same geometry as the source: same number of mesh points
    def points(s):
        return sum(len(UsdGeom.Mesh(p).GetPointsAttr().Get() or []) for p in s.Traverse() if p.IsA(UsdGeom.Mesh))
    assert points(stage) == points(src) > 0


def test_usda_keeps_large_arrays_in_a_crate_sidecar(tmp_path):
    out = tmp_path / "t.usda"
    export_usd(SCENE, out)
    text = out.read_text()
    layer = Sdf.Layer.FindOrOpen(str(out))
    longest = 0
    stack = list(layer.rootPrims)
    while stack:
        ps = stack.pop()
        stack.extend(ps.nameChildren)
        for a in ps.attributes:
            if a.typeName.isArray and a.HasDefaultValue():
                longest = max(longest, len(a.default))
    assert 0 < longest <= 64  # long arrays moved to the sidecar (NVIDIA's UsdAsciiPerformanceChecker)
    assert "./t_assets/t_data.usdc" in text
    assert "twin:motorTemperature" in text  # the readable part stays in the .usda
    side = Sdf.Layer.FindOrOpen(str(tmp_path / "t_assets" / "t_data.usdc"))
    assert side is not None and side.GetFileFormat().formatId == "usdc"


@pytest.mark.parametrize("fmt", ["usda", "usdz"])
def test_recording_becomes_per_prim_animation(tmp_path, run_file, fmt, usd_checks):
    out = tmp_path / f"anim.{fmt}"
    r = cli("export", str(run_file), "-o", str(out))
    assert r.returncode == 0, r.stderr
    nv, ours = usd_checks(out)
    assert nv == [] and ours == [], (nv, ours)
    stage = Usd.Stage.Open(str(out))
    assert stage.GetTimeCodesPerSecond() == 10.0
    assert stage.GetStartTimeCode() < stage.GetEndTimeCode()
    attr = stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature")
    times = attr.GetTimeSamples()
    assert len(times) == 12
    from twinstage.usd._recorder import Recording

    rec = Recording(run_file)
    series = rec.series("/Testbed/Pump", "motorTemperature")
    np.testing.assert_allclose([attr.Get(t) for t in times], series)
    assert attr.Get() == pytest.approx(series[-1])  # the live (default) value is the last recorded one


def test_final_state_only(tmp_path, run_file):
    out = tmp_path / "final.usdc"
    r = cli("export", str(run_file), "-o", str(out), "--no-animation")
    assert r.returncode == 0, r.stderr
    stage = Usd.Stage.Open(str(out))
    attr = stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature")
    assert attr.GetNumTimeSamples() == 0
    assert not stage.GetRootLayer().HasStartTimeCode()


@pytest.mark.parametrize("fmt", ["usda", "usdz"])
def test_kept_layers_sit_over_the_untouched_base(tmp_path, run_file, fmt, usd_checks):
    before = sha(SCENE)
    out = tmp_path / "session" / f"state.{fmt}"
    r = cli("export", str(run_file), "-o", str(out), "--layers", "keep")
    assert r.returncode == 0, r.stderr
    assert sha(SCENE) == before
    nv, ours = usd_checks(out)
    assert nv == [] and ours == [], (nv, ours)
    stage = Usd.Stage.Open(str(out))
    root = stage.GetRootLayer()
    if fmt == "usda":
        assert len(root.subLayerPaths) >= 1
        base = [p for p in root.subLayerPaths if p.endswith("pump_testbed.usda")]
        assert base and not Path(base[0]).is_absolute() and base[0].startswith(".")
        # only overs: the layer adds no prims of its own, so paths are the base scene's (and the bridge's)
        stack = list(root.rootPrims)
        while stack:
            ps = stack.pop()
            assert ps.specifier == Sdf.SpecifierOver, ps.path
            stack.extend(ps.nameChildren)
    else:
        names = zipfile.ZipFile(out).namelist()
        assert names[0] == "state.usdc" and any(n.endswith("pump_testbed.usda") for n in names)
    base = Usd.Stage.Open(str(SCENE))
    base_paths = {str(p.GetPath()) for p in base.Traverse()}
    assert base_paths <= {str(p.GetPath()) for p in stage.Traverse()}
    assert stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature").GetNumTimeSamples() == 12


def test_live_twin_state_exports(tmp_path, usd_checks):
    import twinstage

    twin = twinstage.open(str(SCENE), rate=10.0)
    twin.set("/Testbed/Valve1", opening=0.25)
    with twin:
        twin.run(ticks=3)
    out = export_usd(twin.stage, tmp_path / "live.usdc").path
    stage = Usd.Stage.Open(str(out))
    assert stage.GetPrimAtPath("/Testbed/Valve1").GetAttribute("twin:opening").Get() == pytest.approx(0.25)
    nv, ours = usd_checks(out)
    assert nv == [] and ours == [], (nv, ours)


def test_centimetre_multi_root_source_is_scaled_and_wrapped(tmp_path, usd_checks):
    src = tmp_path / "cm.usda"
    stage = Usd.Stage.CreateNew(str(src))
    UsdGeom.SetStageMetersPerUnit(stage, 0.01)
    UsdGeom.SetStageUpAxis(stage, "Y")
    UsdGeom.Cube.Define(stage, "/A").CreateSizeAttr(100.0)  # a 1 m cube, in cm
    UsdGeom.Xform.Define(stage, "/B")
    stage.SetDefaultPrim(stage.GetPrimAtPath("/A"))
    stage.Save()
    res = export_usd(src, tmp_path / "m.usdc")
    assert any("metersPerUnit 0.01" in n for n in res.notes) and any("moved under" in n for n in res.notes)
    out = Usd.Stage.Open(str(res.path))
    assert UsdGeom.GetStageMetersPerUnit(out) == 1.0
    assert len(out.GetPseudoRoot().GetChildren()) == 1
    box = UsdGeom.BBoxCache(Usd.TimeCode.Default(), ["default"]).ComputeWorldBound(out.GetPseudoRoot()).ComputeAlignedRange()
    np.testing.assert_allclose(np.array(box.GetSize()), [1.0, 1.0, 1.0], atol=1e-9)
    nv, ours = usd_checks(res.path)
    assert nv == [] and ours == [], (nv, ours)


def test_failure_leaves_no_partial_output(tmp_path):
    src = tmp_path / "overs.usda"
    src.write_text('#usda 1.0\n(\n    upAxis = "Z"\n)\nover "World"\n{\n    over "Ball" {}\n}\n')
    out = tmp_path / "out.usdz"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="only overs"):
        export_usd(src, out)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.usdz", "overs.usda"]  # no temp files left
    r = cli("export", str(src), "-o", str(tmp_path / "new.usdc"))
    assert r.returncode == 2 and "only overs" in r.stderr and "overs.usda" in r.stderr
    assert not (tmp_path / "new.usdc").exists()


@pytest.mark.parametrize("args, message", [
    (["-o", "x.obj"], "cannot tell the format"),
    (["-o", "x.usda", "--format", "usdc"], "must end in .usdc"),
    (["-o", "x.glb", "--layers", "keep"], "USD formats only"),
])
def test_bad_options_are_clear(tmp_path, args, message):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    r = cli("export", str(SCENE), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def _textured(tmp_path: Path, texture: str) -> Path:
    from pxr import Sdf, UsdShade

    src = tmp_path / "src" / "tex.usda"
    src.parent.mkdir(exist_ok=True)
    stage = Usd.Stage.CreateNew(str(src))
    UsdGeom.SetStageUpAxis(stage, "Z")
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, "/W").GetPrim())
    cube = UsdGeom.Cube.Define(stage, "/W/Box")
    mat = UsdShade.Material.Define(stage, "/W/M")
    sh = UsdShade.Shader.Define(stage, "/W/M/S")
    sh.CreateIdAttr("UsdPreviewSurface")
    tex = UsdShade.Shader.Define(stage, "/W/M/T")
    tex.CreateIdAttr("UsdUVTexture")
    tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture)
    out = tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
    sh.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(out)
    mat.CreateSurfaceOutput().ConnectToSource(sh.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(cube.GetPrim()).Bind(mat)
    stage.Save()
    return src


def test_absolute_texture_path_becomes_packaged_and_relative(tmp_path, usd_checks):
    png = tmp_path / "elsewhere" / "paint.png"
    png.parent.mkdir()
    import imageio.v3 as iio

    iio.imwrite(png, np.full((4, 4, 3), 200, np.uint8))
    src = _textured(tmp_path, str(png.resolve()))  # an absolute path in the source
    res = export_usd(src, tmp_path / "out" / "tex.usdc")
    text = Sdf.Layer.FindOrOpen(str(res.path)).ExportToString()
    assert str(png.resolve()) not in text and res.assets and res.assets[0].startswith("./tex_assets/")
    assert (tmp_path / "out" / res.assets[0]).read_bytes() == png.read_bytes()
    nv, ours = usd_checks(res.path)
    assert nv == [] and ours == [], (nv, ours)
    z = export_usd(src, tmp_path / "out" / "tex.usdz")
    assert any(n.endswith(".png") for n in zipfile.ZipFile(z.path).namelist())


def test_unresolved_texture_is_reported(tmp_path):
    src = _textured(tmp_path, "./textures/missing.png")
    res = export_usd(src, tmp_path / "out.usdz")
    assert any("missing.png" in n and "does not resolve" in n for n in res.notes)
    r = cli("export", str(src), "-o", str(tmp_path / "cli.usdc"))
    assert r.returncode == 0 and "missing.png" in r.stdout


def test_scene_with_recording_option(tmp_path, run_file):
    out = tmp_path / "with_rec.usdc"
    r = cli("export", str(SCENE), "--recording", str(run_file), "-o", str(out))
    assert r.returncode == 0, r.stderr
    stage = Usd.Stage.Open(str(out))
    assert stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature").GetNumTimeSamples() == 12
    r = cli("export", str(run_file), "--recording", str(run_file), "-o", str(tmp_path / "twice.usdc"))
    assert r.returncode == 2 and "already a recording" in r.stderr
    other = tmp_path / "other.usda"
    other.write_text(SCENE.read_text())
    r = cli("export", str(other), "--recording", str(run_file), "-o", str(tmp_path / "wrong.usdc"))
    assert r.returncode == 2 and "is a recording of" in r.stderr and not (tmp_path / "wrong.usdc").exists()
