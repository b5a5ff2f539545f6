"""Every usd-wg asset in shared/data exports to USDZ and GLB; NVIDIA's asset validator, OpenUSD's
UsdValidation and the Khronos glTF validator pass on each output, and the GLB imports back with the
same triangle count and bounds. Where an asset itself makes an export impossible, the test names why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _gltf_report import gltf_errors
from pxr import Usd, UsdGeom

from twinstage.export import ExportError, export_usd, import_mesh, to_glb
from twinstage.geometry import extract
from twinstage.usd import create_stage

from _testdata import DATA_SKIP, SHARED_DATA  # tests/ is on sys.path (rootdir conftest)

USD_WG = SHARED_DATA / "usd-wg"
FILES = sorted(p for p in USD_WG.rglob("*") if p.suffix in (".usd", ".usda", ".usdc", ".usdz")) if USD_WG.is_dir() else []
#: without the data folder: one skipped case with the one data line (CI turns a missing folder into a failure elsewhere)
PARAMS = FILES or [pytest.param(None, marks=pytest.mark.skip(reason=DATA_SKIP))]

#: the asset's own defect → what the exporter says
DEFECTS = {
    "docs/CompositionPuzzles/VariantSetAndLocal2/ball_variants.usda":
        "only overs",  # a layer of overs meant to be composed onto ball_defaults.usda: it defines no prim
}


def test_the_files_are_there(shared_data):
    assert len(FILES) >= 30, f"usd-wg assets missing under {USD_WG}"


@pytest.mark.parametrize("src", PARAMS, ids=[str(p.relative_to(USD_WG)) for p in FILES] or ["no-data"])
def test_usd_wg_asset_exports_and_validates(src, tmp_path, usd_checks, gltf_validate):
    rel = str(src.relative_to(USD_WG))
    out = tmp_path / f"{src.stem}.usdz"
    if rel in DEFECTS:
        with pytest.raises(ExportError, match=DEFECTS[rel]):
            export_usd(src, out)
        assert not out.exists()
    else:
        export_usd(src, out)
        nv, ours = usd_checks(out)
        assert nv == [] and ours == [], (nv, ours)
        assert UsdGeom.GetStageMetersPerUnit(Usd.Stage.Open(str(out))) == 1.0
    glb = to_glb(src, tmp_path / f"{src.stem}.glb")
    report, = gltf_validate(glb)
    assert gltf_errors(report) == []
    # back into a twin: same triangles, same place (glTF is metres: compare in metres)
    stage = Usd.Stage.Open(str(src))
    geo = extract(stage)
    tris = geo.stats()["triangles"] + sum(2 for _ in geo.cards)
    scene = tmp_path / "back" / "scene.usda"
    scene.parent.mkdir()
    create_stage(scene, root="World", up_axis=geo.up_axis).Save()
    if tris == 0:
        with pytest.raises(ExportError, match="no triangles"):
            import_mesh(glb, scene, "/World/Asset")
        return
    res = import_mesh(glb, scene, "/World/Asset")
    assert res.faces == tris
    back = Usd.Stage.Open(str(scene))
    box = UsdGeom.BBoxCache(Usd.TimeCode.Default(), ["default", "render"]).ComputeWorldBound(back.GetPrimAtPath("/World/Asset"))
    r = box.ComputeAlignedRange()
    want = geo.world_bounds() * geo.meters_per_unit
    np.testing.assert_allclose(np.array([r.GetMin(), r.GetMax()]), want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
