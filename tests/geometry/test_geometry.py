"""The GPU-free geometry module: sidedness, opacity, up axis, per-object meshes, no GPU imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade

from twinstage.geometry import MeshData, axis_conversion, extract, merge, object_meshes, style_key


def stage(up: str = "Z") -> Usd.Stage:
    s = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(s, up)
    s.SetDefaultPrim(UsdGeom.Xform.Define(s, "/W").GetPrim())
    return s


def one(geo, name: str) -> MeshData:
    meshes = [p.mesh for p in geo.parts if p.source.endswith("/" + name)]
    assert len(meshes) == 1, [p.source for p in geo.parts]
    return meshes[0]


def test_double_sided_follows_the_gprim():
    s = stage()
    UsdGeom.Cube.Define(s, "/W/Solid")
    UsdGeom.Plane.Define(s, "/W/Leaf").CreateDoubleSidedAttr(True)
    geo = extract(s)
    assert one(geo, "Solid").double_sided is False
    assert one(geo, "Leaf").double_sided is True


def test_display_opacity_constant_and_per_vertex():
    s = stage()
    a = UsdGeom.Sphere.Define(s, "/W/Glass")
    a.CreateDisplayOpacityPrimvar().Set([0.3])
    m = UsdGeom.Mesh.Define(s, "/W/Fade")
    m.CreatePointsAttr([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
    m.CreateFaceVertexCountsAttr([4])
    m.CreateFaceVertexIndicesAttr([0, 1, 2, 3])
    m.CreateDisplayOpacityPrimvar(UsdGeom.Tokens.vertex).Set([1.0, 0.5, 0.0, 0.25])
    f = UsdGeom.Mesh.Define(s, "/W/Faces")
    f.CreatePointsAttr([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
    f.CreateFaceVertexCountsAttr([3, 3])
    f.CreateFaceVertexIndicesAttr([0, 1, 2, 0, 2, 3])
    f.CreateDisplayOpacityPrimvar(UsdGeom.Tokens.uniform).Set([0.2, 0.9])
    UsdGeom.Cube.Define(s, "/W/Opaque")
    geo = extract(s)
    glass = one(geo, "Glass")
    assert glass.translucent and np.allclose(glass.alpha, 0.3)
    fade = one(geo, "Fade")
    np.testing.assert_allclose(sorted(fade.alpha), [0.0, 0.25, 0.5, 1.0], atol=1e-6)
    faces = one(geo, "Faces")
    per_tri = faces.alpha[faces.triangles].mean(axis=1)
    np.testing.assert_allclose(sorted(per_tri), [0.2, 0.9], atol=1e-6)
    assert one(geo, "Opaque").alpha is None and not one(geo, "Opaque").translucent


def test_preview_surface_opacity_wins_over_display_opacity():
    s = stage()
    cube = UsdGeom.Cube.Define(s, "/W/Box")
    cube.CreateDisplayOpacityPrimvar().Set([1.0])
    mat = UsdShade.Material.Define(s, "/W/M")
    sh = UsdShade.Shader.Define(s, "/W/M/S")
    sh.CreateIdAttr("UsdPreviewSurface")
    sh.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set((0.1, 0.2, 0.3))
    sh.CreateInput("opacity", Sdf.ValueTypeNames.Float).Set(0.4)
    mat.CreateSurfaceOutput().ConnectToSource(sh.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(cube.GetPrim()).Bind(mat)
    m = one(extract(s), "Box")
    assert np.allclose(m.alpha, 0.4) and np.allclose(m.colors, (0.1, 0.2, 0.3))


def test_mirroring_transform_keeps_front_faces_outward():
    s = stage()
    c = UsdGeom.Cube.Define(s, "/W/Mirrored")
    c.AddScaleOp().Set(Gf.Vec3f(-1, 1, 1))
    geo = extract(s)
    m = merge(object_meshes(geo, world=True)[0])
    a, b, cc = (m.positions[m.triangles[:, i]] for i in range(3))
    fn = np.cross(b - a, cc - a)
    assert (np.einsum("ij,ij->i", fn, (a + b + cc) / 3) > 0).all()


@pytest.mark.parametrize("up, mpu", [("Z", 1.0), ("Z", 0.01), ("Y", 1.0), ("Y", 0.001)])
def test_axis_conversion_is_a_proper_rotation_and_scale(up, mpu):
    m = axis_conversion(up, mpu, to="Y")
    lin = m[:3, :3] / mpu
    np.testing.assert_allclose(lin @ lin.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(lin) == pytest.approx(1.0)  # no mirror: handedness kept
    up_vec = np.array([0.0, 0.0, 1.0]) if up == "Z" else np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(up_vec @ m[:3, :3], [0.0, mpu, 0.0], atol=1e-12)  # the stage's up is glTF's +Y
    with pytest.raises(ValueError):
        axis_conversion("X")
    with pytest.raises(ValueError):
        axis_conversion("Z", 0.0)


def test_object_meshes_group_by_style_and_bake_instances():
    s = stage()
    pi = UsdGeom.PointInstancer.Define(s, "/W/Crates")
    UsdGeom.Cube.Define(s, "/W/Crates/P/Crate")
    pi.CreatePrototypesRel().SetTargets(["/W/Crates/P/Crate"])
    pi.CreatePositionsAttr([(0, 0, 0), (3, 0, 0)])
    pi.CreateProtoIndicesAttr([0, 0])
    geo = extract(s)
    meshes = object_meshes(geo, world=True)
    (o, ms), = meshes.items()
    assert geo.objects[o].path == "/W/Crates" and len(ms) == 1 and style_key(ms[0]) == (False, False)
    assert ms[0].n_triangles == 24
    np.testing.assert_allclose(ms[0].bounds(), [[-1, -1, -1], [4, 1, 1]])


def test_importing_geometry_loads_no_gpu_code():
    code = ("import sys; from pxr import Usd; import twinstage.geometry as g; "
            "s = Usd.Stage.Open('scenes/pump_testbed.usda'); geo = g.extract(s); assert geo.stats()['triangles'] > 0; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pygfx', 'wgpu', 'rendercanvas', 'glfw', 'trimesh')]; "
            "assert not bad, bad")
    from pathlib import Path

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
