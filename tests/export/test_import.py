"""Mesh import (trimesh → UsdGeom.Mesh assets) and the round trip USD → GLB → import → USD."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Usd, UsdGeom

from twinstage.export import ExportError, import_mesh, to_glb
from twinstage.geometry import extract
from twinstage.usd import create_stage, is_twin_asset, twin_prims
from twinstage.usd._validate import validate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scene(tmp_path) -> Path:
    path = tmp_path / "plant.usda"
    stage = create_stage(path, root="Plant", up_axis="Z")
    stage.Save()
    return path


def world_box(stage: Usd.Stage, path: str) -> np.ndarray:
    r = UsdGeom.BBoxCache(Usd.TimeCode.Default(), ["default", "render"]).ComputeWorldBound(stage.GetPrimAtPath(path)).ComputeAlignedRange()
    return np.array([r.GetMin(), r.GetMax()])


def test_round_trip_keeps_geometry_and_twin_ids(tmp_path):
    shutil.copytree(ROOT / "scenes", tmp_path / "scenes")
    shutil.copytree(ROOT / "assets", tmp_path / "assets")
    src = tmp_path / "scenes" / "pump_testbed.usda"
    source = Usd.Stage.Open(str(src))
    twins = [str(p.GetPath()) for p in twin_prims(source)]
    geo = extract(source, twin_paths=twins)
    glb = to_glb(src, tmp_path / "testbed.glb")
    target = tmp_path / "copy" / "plant.usda"
    target.parent.mkdir()
    create_stage(target, root="Plant", up_axis="Z").Save()
    res = import_mesh(glb, target, "/Plant/Testbed")
    assert any("Y-up" in n and "Z-up" in n for n in res.notes)  # the user is told
    stats = geo.stats()
    assert res.faces == stats["triangles"]
    assert res.vertices == sum(p.mesh.n_vertices for p in geo.parts)
    stage = Usd.Stage.Open(str(target))
    got = world_box(stage, "/Plant/Testbed")
    want = geo.world_bounds()
    np.testing.assert_allclose(got, want, atol=1e-5)  # stands upright, same size, same place
    ids = {p.GetCustomDataByKey("twinstage:twinId") for p in stage.Traverse()} - {None}
    assert ids == set(twins)
    assert [f for f in validate(target) if f.severity == "error"] == []
    asset = Usd.Stage.Open(str(res.asset))
    assert UsdGeom.GetStageUpAxis(asset) == "Z" and UsdGeom.GetStageMetersPerUnit(asset) == 1.0
    for prim in asset.Traverse():
        if prim.IsA(UsdGeom.Mesh):
            m = UsdGeom.Mesh(prim)
            assert m.GetExtentAttr().HasAuthoredValue() and len(m.GetNormalsAttr().Get()) == len(m.GetPointsAttr().Get())


@pytest.mark.parametrize("ext, up, height_axis", [(".obj", "Y", 2), (".stl", "Z", 2), (".ply", "Z", 2)])
def test_formats_and_up_axis(tmp_path, scene, ext, up, height_axis):
    box = trimesh.creation.box(extents=(1.0, 3.0, 2.0) if up == "Y" else (1.0, 2.0, 3.0))  # 3 m tall along the file's up axis
    mesh = tmp_path / f"crate{ext}"
    box.export(mesh)
    res = import_mesh(mesh, scene, "/Plant/Crate", as_twin="crate")
    assert res.faces == 12
    stage = Usd.Stage.Open(str(scene))
    size = np.diff(world_box(stage, "/Plant/Crate"), axis=0)[0]
    np.testing.assert_allclose(size, [1.0, 2.0, 3.0], atol=1e-6)  # upright in the Z-up twin
    prim = stage.GetPrimAtPath("/Plant/Crate")
    assert is_twin_asset(prim) and prim.GetAttribute("twin:kind").Get() == "crate"
    ref = prim.GetPrimStack()[0].referenceList.GetAddedOrExplicitItems()[0]
    assert ref.assetPath == "./assets/crate.usdc"


def test_units_option(tmp_path, scene):
    mesh = tmp_path / "part.stl"
    trimesh.creation.box(extents=(100.0, 200.0, 300.0)).export(mesh)
    import_mesh(mesh, scene, "/Plant/Part", unit="mm")
    size = np.diff(world_box(Usd.Stage.Open(str(scene)), "/Plant/Part"), axis=0)[0]
    np.testing.assert_allclose(size, [0.1, 0.2, 0.3], atol=1e-9)


def test_cli_tells_the_user(tmp_path, scene):
    mesh = tmp_path / "tank.obj"
    trimesh.creation.cylinder(radius=0.5, height=2.0).export(mesh)
    r = subprocess.run([sys.executable, "-m", "twinstage", "import", str(mesh), "--into", str(scene), "--at", "/Plant/Tank",
                        "--as-twin", "tank"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Y-up" in r.stdout and "converted" in r.stdout and "/Plant/Tank" in r.stdout


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name, content, at, message", [
    ("junk.glb", b"glTF\x02\x00\x00\x00garbage", "/Plant/X", "cannot be read as GLB"),
    ("empty.obj", b"# nothing here\n", "/Plant/X", "no triangles"),
    ("pts.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n",
     "/Plant/X", "no triangles"),
    ("model.fbx", b"x", "/Plant/X", "unsupported mesh format"),
    ("ok.obj", None, "Plant/X", "not an absolute USD prim path"),
    ("ok.obj", None, "/Elsewhere/X", "does not exist"),
    ("ok.obj", None, "/Plant", "under the scene's root prim"),
])
def test_bad_input_writes_nothing(tmp_path, scene, name, content, at, message):
    mesh = tmp_path / "in" / name
    mesh.parent.mkdir()
    if content is None:
        trimesh.creation.box().export(mesh)
    else:
        mesh.write_bytes(content)
    before = _digest(scene.parent)
    with pytest.raises(ExportError, match=message) as info:
        import_mesh(mesh, scene, at)
    assert name in str(info.value) or at in str(info.value)
    assert _digest(scene.parent) == before  # scene untouched, no asset, no temp files


def test_second_import_at_the_same_path_is_refused(tmp_path, scene):
    mesh = tmp_path / "box.stl"
    trimesh.creation.box().export(mesh)
    import_mesh(mesh, scene, "/Plant/Box")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(mesh, other / "box.stl")
    before = _digest(scene.parent)
    with pytest.raises(ExportError, match="a prim exists there already"):
        import_mesh(mesh, scene, "/Plant/Box")
    with pytest.raises(ExportError, match="exists already"):  # the asset file name is taken
        import_mesh(other / "box.stl", scene, "/Plant/Box2")
    assert _digest(scene.parent) == before


def test_gltf_node_hierarchy_is_kept(tmp_path, scene):
    src = tmp_path / "crates.usda"
    st = create_stage(src, root="Yard", up_axis="Z")
    pi = UsdGeom.PointInstancer.Define(st, "/Yard/Crates")
    UsdGeom.Cube.Define(st, "/Yard/Crates/P/Crate").CreateSizeAttr(0.5)
    pi.CreatePrototypesRel().SetTargets(["/Yard/Crates/P/Crate"])
    pi.CreatePositionsAttr([(x, 0, 0) for x in range(3)])
    pi.CreateProtoIndicesAttr([0, 0, 0])
    st.Save()
    glb = to_glb(src, tmp_path / "crates.glb")  # root node → Crates node → 3 instance nodes
    res = import_mesh(glb, scene, "/Plant/Yard")
    stage = Usd.Stage.Open(str(scene))
    crates = stage.GetPrimAtPath("/Plant/Yard/Yard/Crates")
    assert crates and crates.IsA(UsdGeom.Xform)
    kids = [c for c in crates.GetChildren() if c.IsA(UsdGeom.Mesh)]
    assert len(kids) == 3 and res.faces == 36
    xs = sorted(round(UsdGeom.Xformable(k).ComputeLocalToWorldTransform(Usd.TimeCode.Default()).ExtractTranslation()[0], 6) for k in kids)
    assert xs == [0.0, 1.0, 2.0]


def test_invalid_node_names_are_made_valid_with_a_mapping(tmp_path, scene):
    s = trimesh.Scene()
    s.add_geometry(trimesh.creation.box(), node_name="1 pump-housing!", geom_name="g0")
    s.add_geometry(trimesh.creation.icosphere(), node_name="Gauge", geom_name="g1")
    glb = tmp_path / "named.glb"
    glb.write_bytes(s.export(file_type="glb"))
    res = import_mesh(glb, scene, "/Plant/Named")
    assert res.names == {"1 pump-housing!": "_1_pump_housing_"}
    asset = Usd.Stage.Open(str(res.asset))
    assert asset.GetPrimAtPath("/Named/_1_pump_housing_").IsA(UsdGeom.Mesh)
    assert asset.GetRootLayer().customLayerData["twinstage"]["renamed"] == {"1 pump-housing!": "_1_pump_housing_"}
    assert asset.GetPrimAtPath("/Named/_1_pump_housing_").GetCustomDataByKey("twinstage:sourceNode") == "1 pump-housing!"

_HEADERS = {".obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", ".stl": b"solid x\n", ".ply": b"ply\nformat ascii 1.0\n",
            ".glb": b"glTF\x02\x00\x00\x00"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(sorted(_HEADERS)), tail=st.binary(max_size=300), keep_header=st.booleans())
def test_hostile_mesh_files_fail_cleanly(tmp_path, ext, tail, keep_header):
    """Whatever the bytes: an import either succeeds or raises ExportError naming the file, and a failure writes nothing."""
    work = tmp_path / f"w{abs(hash((ext, tail, keep_header)))}"
    work.mkdir()
    scene = work / "s.usda"
    create_stage(scene, root="Plant", up_axis="Z").Save()
    mesh = work / "in" / f"m{ext}"
    mesh.parent.mkdir()
    mesh.write_bytes((_HEADERS[ext] if keep_header else b"") + tail)
    before = _digest(work)
    try:
        res = import_mesh(mesh, scene, "/Plant/M")
    except ExportError as exc:
        assert mesh.name in str(exc)
        assert _digest(work) == before
    else:
        assert res.faces > 0 and res.asset.exists()
