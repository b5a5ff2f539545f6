"""USD → viewer geometry (numpy only, no GPU): shapes, meshes, instancing, bad input, the usd-wg files."""

from __future__ import annotations

import numpy as np
import pytest
from _scenes import bad_stage, usd_wg_files
from pxr import Gf, Sdf, Usd, UsdGeom, Vt

from twinstage.geometry import _mesh, _shapes
from twinstage.geometry import extract


def test_fan_triangulation_of_ngons():
    corners, face = _mesh.triangulate(np.array([3, 4, 5, 2, 0]))
    assert len(corners) == 1 + 2 + 3
    assert face.tolist() == [0, 1, 1, 2, 2, 2]
    assert corners[1].tolist() == [3, 4, 5] and corners[2].tolist() == [3, 5, 6]
    assert corners[3].tolist() == [7, 8, 9] and corners[5].tolist() == [7, 10, 11]


@pytest.mark.parametrize("make, lo, hi", [
    (lambda: _shapes.cube(3.0, (1, 0, 0)), (-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)),
    (lambda: _shapes.sphere(2.0, (1, 0, 0), 16), (-2, -2, -2), (2, 2, 2)),
    (lambda: _shapes.cylinder(1.0, 4.0, "X", (1, 0, 0), 16), (-2, -1, -1), (2, 1, 1)),
    (lambda: _shapes.cone(1.0, 2.0, "Y", (1, 0, 0), 16), (-1, -1, -1), (1, 1, 1)),
    (lambda: _shapes.capsule(0.5, 1.0, "Z", (1, 0, 0), 16), (-0.5, -0.5, -1.0), (0.5, 0.5, 1.0)),
    (lambda: _shapes.plane(2.0, 4.0, "Z", (1, 0, 0)), (-1, -2, 0), (1, 2, 0)),
])
def test_shapes_have_usd_dimensions_and_outward_normals(make, lo, hi):
    m = make()
    np.testing.assert_allclose(m.bounds(), [lo, hi], atol=1e-6)
    assert np.allclose(np.linalg.norm(m.normals, axis=1), 1.0, atol=1e-5)
    fn = _mesh.face_normals(m.positions, m.triangles)
    big = np.linalg.norm(fn, axis=1) > 1e-9
    agree = (fn[big] * m.normals[m.triangles[big, 0]]).sum(axis=1) > 0
    assert agree.mean() > 0.99  # winding matches the normals (front faces point out)


def _mesh_stage(*edits):
    stage = Usd.Stage.CreateInMemory()
    m = UsdGeom.Mesh.Define(stage, "/M")
    m.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(*p) for p in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (2, 0, 0), (2, 1, 0)]]))
    m.CreateFaceVertexCountsAttr(Vt.IntArray([4, 4]))
    m.CreateFaceVertexIndicesAttr(Vt.IntArray([0, 1, 2, 3, 1, 4, 5, 2]))
    for edit in edits:
        edit(m)
    return stage


def test_mesh_without_normals_gets_computed_unit_normals():
    geo = extract(_mesh_stage())
    (part,) = geo.parts
    assert part.mesh.n_triangles == 4
    np.testing.assert_allclose(part.mesh.normals, np.tile([0, 0, 1], (part.mesh.n_vertices, 1)), atol=1e-6)


def test_face_varying_and_uniform_primvars():
    def uniform_colors(m):
        pv = UsdGeom.PrimvarsAPI(m).CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.uniform)
        pv.Set(Vt.Vec3fArray([Gf.Vec3f(1, 0, 0), Gf.Vec3f(0, 0, 1)]))

    def fv_normals(m):
        m.CreateNormalsAttr(Vt.Vec3fArray([Gf.Vec3f(0, 0, 1)] * 4 + [Gf.Vec3f(0, 0, -1)] * 4))
        m.SetNormalsInterpolation(UsdGeom.Tokens.faceVarying)

    geo = extract(_mesh_stage(uniform_colors, fv_normals))
    mesh = geo.parts[0].mesh
    assert mesh.n_vertices == 8  # one vertex per face corner
    tri_col = mesh.colors[mesh.triangles[:, 0]]
    np.testing.assert_allclose(tri_col, [[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    tri_n = mesh.normals[mesh.triangles[:, 0]]
    np.testing.assert_allclose(tri_n[:, 2], [1, 1, -1, -1], atol=1e-6)


def test_bad_input_is_skipped_with_notes_not_a_crash():
    geo = extract(bad_stage())
    drawn = {p.source for p in geo.parts}
    assert "/W/Good" in drawn and "/W/NoNormals" in drawn and "/W/Pentagon" in drawn
    pent = next(p for p in geo.parts if p.source == "/W/Pentagon")
    assert pent.mesh.n_triangles == 3
    bad_idx = next(p for p in geo.parts if p.source == "/W/BadIndices")
    assert bad_idx.mesh.n_triangles == 2  # the valid quad survives, the face with index 99 is dropped
    nan_pts = next(p for p in geo.parts if p.source == "/W/NaNPoints")
    assert nan_pts.mesh.n_triangles == 1 and np.isfinite(nan_pts.mesh.positions[nan_pts.mesh.triangles]).all()
    for gone in ("/W/Empty", "/W/NoFaces", "/W/CountMismatch", "/W/HugePoints", "/W/NaNXform/Cube", "/W/NegativeCube", "/W/NaNSphere"):
        assert gone not in drawn, gone
    notes = "\n".join(geo.notes)
    for path in ("/W/Empty", "/W/Degenerate", "/W/BadIndices", "/W/CountMismatch", "/W/NaNPoints", "/W/HugePoints",
                 "/W/NaNXform/Cube", "/W/NegativeCube", "/W/NaNSphere", "/W/Nurbs"):
        assert path in notes, path
    assert "NurbsCurves is not drawn" in notes
    for p in geo.parts:
        assert np.isfinite(p.mesh.positions).all() and np.isfinite(p.mesh.normals).all()
    assert geo.world_bounds() is not None and np.isfinite(geo.world_bounds()).all()


def test_purpose_and_visibility():
    stage = Usd.Stage.CreateInMemory()
    for name, purpose, vis in (("Render", "render", None), ("Default", None, None), ("Guide", "guide", None), ("Proxy", "proxy", None),
                               ("Hidden", None, "invisible")):
        c = UsdGeom.Cube.Define(stage, f"/{name}")
        if purpose:
            c.CreatePurposeAttr(purpose)
        if vis:
            c.CreateVisibilityAttr(vis)
    hidden_parent = UsdGeom.Xform.Define(stage, "/HiddenGroup")
    hidden_parent.CreateVisibilityAttr("invisible")
    UsdGeom.Sphere.Define(stage, "/HiddenGroup/Child")
    drawn = {p.source for p in extract(stage).parts}
    assert drawn == {"/Render", "/Default"}


def test_instanceable_prototypes_are_shared(tmp_path):
    from twinstage.scenes import generate_factory
    from twinstage.usd import twin_prims

    stage = generate_factory(60)
    paths = [str(p.GetPath()) for p in twin_prims(stage)]
    geo = extract(stage, twin_paths=paths)
    assert [o.path for o in geo.objects[:60]] == paths  # object index == twin prim index
    assert len(geo.prototypes) == 1 and len(geo.prototypes[0].objects) == 60 and not geo.parts
    assert geo.prototypes[0].objects == list(range(60))


def test_point_instancer_prototypes_drawn_only_through_instances():
    stage = Usd.Stage.CreateInMemory()
    pi = UsdGeom.PointInstancer.Define(stage, "/PI")
    cube = UsdGeom.Cube.Define(stage, "/PI/Protos/Box")
    cube.CreateSizeAttr(1.0)
    UsdGeom.Sphere.Define(stage, "/PI/Protos/Ball").CreateRadiusAttr(0.5)
    pi.CreatePrototypesRel().SetTargets([cube.GetPath(), Sdf.Path("/PI/Protos/Ball")])
    pi.CreateProtoIndicesAttr(Vt.IntArray([0, 1, 0, 1, 0]))
    pi.CreatePositionsAttr(Vt.Vec3fArray([Gf.Vec3f(i * 2, 0, 0) for i in range(5)]))
    geo = extract(stage)
    assert not geo.parts  # the prototypes are not drawn where they are defined
    counts = sorted(len(p.objects) for p in geo.prototypes)
    assert counts == [2, 3]
    lo, hi = geo.world_bounds()
    np.testing.assert_allclose([lo[0], hi[0]], [-0.5, 8.5], atol=1e-6)


def test_draw_modes_bounds_origin_cards():
    stage = Usd.Stage.CreateInMemory()
    for name, mode in (("B", "bounds"), ("O", "origin"), ("C", "cards")):
        xf = UsdGeom.Xform.Define(stage, f"/{name}")
        Usd.ModelAPI(xf).SetKind("component")
        UsdGeom.ModelAPI.Apply(xf.GetPrim()).CreateModelDrawModeAttr(mode)
        UsdGeom.Cube.Define(stage, f"/{name}/Cube")
    geo = extract(stage)
    srcs = [p.source for p in geo.parts]
    assert srcs.count("/B") == 1 and srcs.count("/O") == 1 and "/B/Cube" not in srcs
    assert len(geo.cards) == 6 and {c.object for c in geo.cards} == {geo.object_index["/C"]}


def test_basis_curves_drawn_as_tubes():
    stage = Usd.Stage.CreateInMemory()
    c = UsdGeom.BasisCurves.Define(stage, "/Path")
    c.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(0, 0, 0), Gf.Vec3f(10, 0, 0), Gf.Vec3f(10, 5, 0)]))
    c.CreateCurveVertexCountsAttr(Vt.IntArray([3]))
    c.CreateWidthsAttr(Vt.FloatArray([0.1]))
    (part,) = extract(stage).parts
    lo, hi = part.mesh.bounds()
    np.testing.assert_allclose(lo[:2], [0.0, -0.05], atol=1e-6)
    np.testing.assert_allclose(hi[:2], [10.05, 5.0], atol=1e-6)


def test_every_usd_wg_file_has_something_to_draw(usd_wg):
    files = usd_wg_files(usd_wg)
    assert len(files) >= 25
    for f in files:
        stage = Usd.Stage.Open(str(f))
        geo = extract(stage)
        if f.name == "ball_variants.usda":  # only `over`s: nothing is defined in this layer alone
            assert any("only `over`s" in n for n in geo.notes)
            continue
        s = geo.stats()
        assert s["triangles"] > 0 or s["cards"] > 0, f
        b = geo.world_bounds()
        assert b is not None and np.isfinite(b).all() and (b[1] - b[0]).max() > 0, f
    lib = extract(Usd.Stage.Open(str(usd_wg / "full_assets/SubdivisionSurfaces/Pyramid/mtl.usda")))
    assert any("material library" in n for n in lib.notes)


def test_usd_wg_materials_and_subsets_give_colours(usd_wg):
    teapot = extract(Usd.Stage.Open(str(usd_wg / "full_assets/Teapot/Teapot.usd")))
    cols = np.unique(np.round(teapot.parts[0].mesh.colors, 3), axis=0)
    assert len(cols) >= 1 and not np.allclose(cols, 0.5)  # material colour, not the grey fallback
    pyramid = extract(Usd.Stage.Open(str(usd_wg / "full_assets/SubdivisionSurfaces/Pyramid/geo.usda")))
    assert len(np.unique(np.round(pyramid.parts[0].mesh.colors, 3), axis=0)) > 3  # uniform displayColor per face
    draw_modes = extract(Usd.Stage.Open(str(usd_wg / "full_assets/Teapot/DrawModes.usd")))
    assert draw_modes.cards and all(c.image for c in draw_modes.cards)  # card textures resolve


def test_drives_follow_usd_xform_semantics():
    """A channel that drives xformOp:translate moves the prim exactly as USD composes its ops."""
    from twinstage.state import Declaration, StateTable
    from twinstage.viewer._drives import Drives
    from twinstage.viewer._state import TwinState

    stage = Usd.Stage.CreateInMemory()
    parent = UsdGeom.Xform.Define(stage, "/P")
    parent.AddRotateZOp().Set(30.0)
    parent.AddTranslateOp().Set(Gf.Vec3d(5, 0, 0))
    xf = UsdGeom.Xform.Define(stage, "/P/Item")
    xf.AddTranslateOp().Set(Gf.Vec3d(0, 0, 0))
    xf.AddRotateYOp().Set(40.0)
    xf.AddScaleOp().Set(Gf.Vec3f(2, 1, 1))
    table = StateTable(["/P/Item"], [Declaration("/P/Item", "position", "vec3", (0.0, 0.0, 0.0), "m", drives="xformOp:translate")])
    state = TwinState.from_table(table)
    drives = Drives(stage, state, 1)
    state.values["position"][0] = (1.0, 2.0, 3.0)
    objs, mats = drives.update(state, {"position": np.array([0])})
    xf.GetPrim().GetAttribute("xformOp:translate").Set(Gf.Vec3d(1, 2, 3))
    want = np.array(UsdGeom.XformCache().GetLocalToWorldTransform(xf.GetPrim()))
    assert objs.tolist() == [0]
    np.testing.assert_allclose(mats[0], want, atol=1e-9)
