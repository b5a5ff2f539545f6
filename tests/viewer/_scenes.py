"""Small USD scenes for viewer tests (imported as ``_scenes``)."""

from __future__ import annotations

import math
from pathlib import Path

from pxr import Gf, Usd, UsdGeom, Vt

from twinstage.usd import create_stage, declare_asset, declare_attribute


def usd_wg_files(root: Path) -> list[Path]:
    """Every USD file of the usd-wg data set."""
    return sorted(p for p in root.rglob("*") if p.suffix in (".usd", ".usda", ".usdc", ".usdz"))


def boxes(path: Path | None = None, values=(10.0, 50.0, 90.0), *, spacing: float = 3.0, up: str = "Z", drives: bool = False) -> Usd.Stage:
    """Cubes in a row along X, each a twin asset with ``temperature`` (degC, 0..100) and ``level``."""
    stage = create_stage(path, root="World", up_axis=up)
    for i, v in enumerate(values):
        xf = UsdGeom.Xform.Define(stage, f"/World/Box{i}")
        xf.AddTranslateOp().Set(Gf.Vec3d(i * spacing, 0, 0))
        prim = xf.GetPrim()
        declare_asset(prim, kind="machine", asset_id=f"B{i}")
        cube = UsdGeom.Cube.Define(stage, f"/World/Box{i}/Geom")
        cube.CreateSizeAttr(2.0)
        cube.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(0.5, 0.5, 0.5)]))
        declare_attribute(prim, "temperature", "float", v, unit="degC", min=0.0, max=100.0, role="state")
        declare_attribute(prim, "level", "float", 0.5, unit="1", min=0.0, max=1.0, role="input")
        if drives:
            declare_attribute(prim, "position", "vec3", (i * spacing, 0.0, 0.0), unit="m", role="state", drives="xformOp:translate")
    if path is not None:
        stage.GetRootLayer().Save()
    return stage


def bad_stage() -> Usd.Stage:
    """Every kind of bad geometry input, plus one good cube at the origin."""
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    root = UsdGeom.Xform.Define(stage, "/W")
    stage.SetDefaultPrim(root.GetPrim())
    UsdGeom.Cube.Define(stage, "/W/Good").CreateSizeAttr(1.0)

    def mesh(name, pts, counts, idx):
        m = UsdGeom.Mesh.Define(stage, f"/W/{name}")
        if pts is not None:
            m.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(*p) for p in pts]))
        if counts is not None:
            m.CreateFaceVertexCountsAttr(Vt.IntArray(counts))
        if idx is not None:
            m.CreateFaceVertexIndicesAttr(Vt.IntArray(idx))
        return m

    quad = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)]
    mesh("Empty", None, None, None)
    mesh("NoFaces", quad, [], [])
    mesh("Degenerate", quad, [2, 1], [0, 1, 2])  # faces with < 3 vertices
    mesh("BadIndices", quad, [4, 3], [0, 1, 2, 3, 0, 7, 99])  # second face out of range
    mesh("CountMismatch", quad, [4, 4], [0, 1, 2, 3])
    mesh("NaNPoints", [(math.nan, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [3, 3], [0, 1, 2, 1, 2, 3])
    mesh("HugePoints", [(1e30, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [3], [0, 1, 2])
    mesh("NoNormals", quad, [4], [0, 1, 2, 3])
    mesh("Pentagon", [(math.cos(a), math.sin(a), 0) for a in [2 * math.pi * k / 5 for k in range(5)]], [5], [0, 1, 2, 3, 4])
    nan_xf = UsdGeom.Xform.Define(stage, "/W/NaNXform")
    nan_xf.AddTranslateOp().Set(Gf.Vec3d(math.nan, 0, 0))
    UsdGeom.Cube.Define(stage, "/W/NaNXform/Cube")
    zero = UsdGeom.Xform.Define(stage, "/W/ZeroScale")
    zero.AddScaleOp().Set(Gf.Vec3f(0, 0, 0))
    UsdGeom.Sphere.Define(stage, "/W/ZeroScale/Sphere")
    UsdGeom.Cube.Define(stage, "/W/NegativeCube").CreateSizeAttr(-1.0)
    UsdGeom.Sphere.Define(stage, "/W/NaNSphere").CreateRadiusAttr(math.nan)
    UsdGeom.NurbsCurves.Define(stage, "/W/Nurbs")  # an unsupported gprim type
    UsdGeom.Points.Define(stage, "/W/Pts")
    return stage
