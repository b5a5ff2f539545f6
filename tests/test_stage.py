"""The stage layer: opening real USD files (../shared/data/usd-wg), creating stages, bad input."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Sdf, Usd, UsdGeom

from twinstage.usd import StageError, candidate_assets, create_stage, describe, open_stage

USD_SUFFIXES = {".usd", ".usda", ".usdc", ".usdz"}

#: files a user would open as "the asset" (not layers meant only to be composed into others)
TOP_LEVEL = [
    "full_assets/Teapot/Teapot.usd",
    "full_assets/Teapot/DrawModes.usd",
    "full_assets/SubdivisionSurfaces/Creases_SpinningPyramids.usda",
    "full_assets/SubdivisionSurfaces/Pyramid/Pyramid.usd",
    "docs/CompositionPuzzles/PayloadAndReference/problem/shot.usda",
    "docs/CompositionPuzzles/PayloadAndReference/solution/shot.usda",
    "docs/CompositionPuzzles/VariantSetAndLocal1/puzzle_1.usda",
    "docs/CompositionPuzzles/VariantSetAndLocal2/puzzle_2.usda",
    "docs/CompositionPuzzles/VariantSetAndLocal3/puzzle_3.usda",
    "test_assets/USDZ/AnimatedCube/AnimatedCube.usdz",
    "test_assets/USDZ/BoxAnimated/BoxAnimated.usdz",
]


def _usd_wg(shared_data: Path) -> Path:
    root = shared_data / "usd-wg"
    assert root.is_dir(), f"{root} missing"
    return root


def _all_usd_files(shared_data: Path) -> list[Path]:
    files = sorted(p for p in _usd_wg(shared_data).rglob("*") if p.is_file() and p.suffix.lower() in USD_SUFFIXES)
    return files


def test_usd_wg_holds_every_kind_of_file(shared_data):
    files = _all_usd_files(shared_data)
    assert len(files) >= 25
    assert {".usd", ".usda", ".usdz"} <= {p.suffix.lower() for p in files}
    for rel in TOP_LEVEL:
        assert (_usd_wg(shared_data) / rel).is_file(), rel


def test_every_usd_wg_file_opens_and_is_described(shared_data):
    files = _all_usd_files(shared_data)
    failures = []
    for f in files:
        try:
            stage = open_stage(f)
            info = describe(stage)
        except Exception as exc:  # collect all, report together
            failures.append(f"{f}: {type(exc).__name__}: {exc}")
            continue
        assert Path(info["file"]).resolve() == f.resolve()
        assert info["prims"] > 0, f
        assert info["hierarchy"], f"{f}: empty hierarchy"
        paths = {h["path"] for h in info["hierarchy"]}
        for child in stage.GetPseudoRoot().GetAllChildren():
            assert str(child.GetPath()) in paths, f"{f}: root prim {child.GetPath()} missing from hierarchy"
        for h in info["hierarchy"]:
            assert stage.GetPrimAtPath(h["path"]), f"{f}: {h['path']} listed but not on the stage"
            assert set(h) >= {"path", "type", "kind", "loaded", "payload", "variants"}
        assert info["twinPrims"] == []  # none of these files are twins (yet)
        assert "candidateAssets" in info
        # with payloads unloaded the file opens too, and nothing under a payload is loaded
        lazy = open_stage(f, load="none")
        for prim in lazy.TraverseAll():
            if prim.HasAuthoredPayloads():
                assert not prim.IsLoaded(), f"{f}: {prim.GetPath()} loaded although load='none'"
        assert describe(lazy)["hierarchy"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("rel", TOP_LEVEL)
def test_top_level_assets_list_candidates(shared_data, rel):
    path = _usd_wg(shared_data) / rel
    stage = open_stage(path)
    info = describe(stage)
    cands = info["candidateAssets"]
    assert cands, f"{rel}: no candidate assets"
    for c in cands:
        prim = stage.GetPrimAtPath(c["path"])
        assert prim and prim.IsActive()
        assert c["type"] == str(prim.GetTypeName())
    # candidates are the same with payloads unloaded: they are reported at the payload
    unloaded = describe(open_stage(path, load="none"))
    assert [c["path"] for c in unloaded["candidateAssets"]] == [c["path"] for c in cands]


def test_teapot_payload_unloaded_then_loaded_on_demand(shared_data):
    path = _usd_wg(shared_data) / "full_assets/Teapot/Teapot.usd"
    stage = open_stage(path, load="none")
    teapot = stage.GetPrimAtPath("/Teapot")
    assert teapot and teapot.HasAuthoredPayloads()
    assert not teapot.IsLoaded()
    assert list(stage.Traverse()) == []  # nothing under an unloaded payload is composed
    info = describe(stage)
    entry = next(h for h in info["hierarchy"] if h["path"] == "/Teapot")
    assert entry == {**entry, "payload": True, "loaded": False}
    assert entry["variants"].get("modelVariant")  # the variant set is visible without loading
    stage.Load("/Teapot")
    assert teapot.IsLoaded()
    loaded = list(stage.Traverse())
    assert len(loaded) > 5
    assert any(p.IsA(UsdGeom.Mesh) for p in loaded)
    # a LoadAll open sees the same composed prims
    full = open_stage(path)
    assert {str(p.GetPath()) for p in full.Traverse()} == {str(p.GetPath()) for p in loaded}


def test_drawmodes_many_payloads_stay_unloaded(shared_data):
    path = _usd_wg(shared_data) / "full_assets/Teapot/DrawModes.usd"
    stage = open_stage(path, load="none")
    with_payload = [p for p in stage.TraverseAll() if p.HasAuthoredPayloads()]
    assert len(with_payload) >= 10
    assert not any(p.IsLoaded() for p in with_payload)
    one = with_payload[0]
    stage.Load(one.GetPath())
    assert one.IsLoaded()
    assert sum(p.IsLoaded() for p in with_payload) == 1


def test_variant_sets_and_references_compose(shared_data):
    root = _usd_wg(shared_data) / "docs/CompositionPuzzles"
    stage = open_stage(root / "VariantSetAndLocal1/puzzle_1.usda")
    sphere = stage.GetPrimAtPath("/World/Sphere")
    vsets = sphere.GetVariantSets()
    assert "size" in vsets.GetNames()
    info = describe(stage)
    entry = next(h for h in info["hierarchy"] if h["path"] == "/World/Sphere")
    assert entry["variants"] == {"size": vsets.GetVariantSet("size").GetVariantSelection()}
    shot = open_stage(root / "PayloadAndReference/solution/shot.usda")
    assert len(shot.GetUsedLayers()) > 1  # references/payloads/sublayers pulled in other files


def test_usdz_packages_open(shared_data):
    for rel in ("test_assets/USDZ/AnimatedCube/AnimatedCube.usdz", "test_assets/USDZ/BoxAnimated/BoxAnimated.usdz"):
        stage = open_stage(_usd_wg(shared_data) / rel)
        assert stage.GetRootLayer().GetFileFormat().formatId == "usdz"
        assert candidate_assets(stage)
        info = describe(stage)
        assert info["defaultPrim"]


def test_describe_a_twin_scene_lists_twin_prims(pump_scene):
    info = describe(open_stage(pump_scene))
    assert "candidateAssets" not in info
    twins = {t["path"]: t for t in info["twinPrims"]}
    assert len(twins) == 12
    pump = twins["/Testbed/Pump"]
    assert (pump["kind"], pump["model"]) == ("pump", "pump_loop")
    flow = next(a for a in pump["attributes"] if a["name"] == "flowRate")
    assert (flow["type"], flow["unit"], flow["min"], flow["max"]) == ("float", "L/min", 0.0, 300.0)
    assert info["defaultPrim"] == "/Testbed" and info["metersPerUnit"] == 1.0 and info["upAxis"] == "Z"
    assert any(lay.endswith("pump_testbed_parts.usdc") for lay in info["layers"])


# -- create_stage -------------------------------------------------------------------


def test_create_stage_metadata(tmp_path):
    path = tmp_path / "new.usda"
    stage = create_stage(path, root="Plant", up_axis="Z")
    stage.GetRootLayer().Save()
    reopened = Usd.Stage.Open(str(path))
    layer = Sdf.Layer.FindOrOpen(str(path))
    assert layer.defaultPrim == "Plant"
    assert reopened.GetDefaultPrim().GetPath() == Sdf.Path("/Plant")
    assert [str(p.GetPath()) for p in reopened.GetPseudoRoot().GetChildren()] == ["/Plant"]
    assert reopened.HasAuthoredMetadata("upAxis") and UsdGeom.GetStageUpAxis(reopened) == UsdGeom.Tokens.z
    assert reopened.HasAuthoredMetadata("metersPerUnit") and UsdGeom.GetStageMetersPerUnit(reopened) == 1.0
    assert not layer.HasTimeCodesPerSecond()  # no time samples, not asked for
    assert Usd.ModelAPI(reopened.GetDefaultPrim()).GetKind() == "assembly"
    info = describe(open_stage(path))
    assert info["metersPerUnitAuthored"] is True
    assert info["defaultPrim"] == "/Plant"


def test_create_stage_time_codes_and_y_up():
    stage = create_stage(None, root="World", up_axis="Y", time_codes_per_second=30.0)
    layer = stage.GetRootLayer()
    assert layer.HasTimeCodesPerSecond() and layer.timeCodesPerSecond == 30.0
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert stage.GetDefaultPrim().GetName() == "World"


@pytest.mark.parametrize("kwargs", [{"up_axis": "X"}, {"root": "1bad"}, {"root": "a/b"}, {"root": ""}])
def test_create_stage_rejects_bad_arguments(kwargs):
    with pytest.raises(StageError):
        create_stage(None, **kwargs)


# -- bad input -------------------------------------------------------------------------


def _expect_error(path: Path, *, load: str = "all") -> StageError:
    with pytest.raises(StageError) as info:
        open_stage(path, load=load)
    assert str(path) in str(info.value), f"message does not name the file: {info.value}"
    return info.value


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.usda")


def test_directory(tmp_path):
    d = tmp_path / "scene.usda"
    d.mkdir()
    assert "directory" in str(_expect_error(d))


def test_wrong_extension(tmp_path, pump_scene):
    p = tmp_path / "scene.txt"
    p.write_bytes(pump_scene.read_bytes())  # valid USD text, wrong extension
    assert ".txt" in str(_expect_error(p))


def test_bad_load_policy(pump_scene):
    with pytest.raises(StageError):
        open_stage(pump_scene, load="some")


def test_unparsable_text(tmp_path):
    p = tmp_path / "broken.usda"
    p.write_text('#usda 1.0\ndef Xform "A" {\n    double x = \n')
    _expect_error(p)


def test_truncated_usda(pump_scene, tmp_path):
    data = pump_scene.read_bytes()
    p = tmp_path / "truncated.usda"
    p.write_bytes(data[: len(data) // 2])
    _expect_error(p)


def test_truncated_usdc(pump_scene, tmp_path):
    parts = pump_scene.with_name(pump_scene.stem + "_parts.usdc")
    data = parts.read_bytes()
    assert data.startswith(b"PXR-USDC")
    p = tmp_path / "truncated.usdc"
    p.write_bytes(data[: len(data) // 2])
    _expect_error(p)
    q = tmp_path / "truncated_tiny.usdc"
    q.write_bytes(data[:40])
    _expect_error(q)


@pytest.mark.parametrize("text", ["#usda 1.0\n", "#usda 1.0\n(\n    defaultPrim = \"World\"\n)\n", ""])
def test_header_only_or_empty_text(tmp_path, text):
    p = tmp_path / "header.usda"
    p.write_text(text)
    err = _expect_error(p)
    if text:  # opens as a valid empty stage in plain USD: we must say why it is refused
        assert Usd.Stage.Open(str(p)) is not None
        assert "no prims" in str(err)


def test_header_only_usdc(tmp_path):
    p = tmp_path / "empty.usdc"
    Sdf.Layer.CreateNew(str(p)).Save()
    assert p.read_bytes().startswith(b"PXR-USDC")
    _expect_error(p)


def test_garbage_usdc(tmp_path):
    p = tmp_path / "garbage.usdc"
    p.write_bytes(bytes(range(256)) * 64)
    _expect_error(p)
    q = tmp_path / "magic_then_garbage.usdc"
    q.write_bytes(b"PXR-USDC" + bytes((i * 37) % 256 for i in range(4000)))
    _expect_error(q)


@pytest.mark.parametrize("suffix", [".usdc", ".usda", ".usdz", ".usd"])
def test_huge_junk_file(tmp_path, suffix):
    p = tmp_path / f"huge{suffix}"
    block = bytes((i * 131 + 7) % 251 for i in range(1 << 20))
    with p.open("wb") as f:
        for _ in range(50):
            f.write(block)
    assert p.stat().st_size == 50 << 20
    _expect_error(p)


def test_missing_reference_still_opens_with_its_prims(tmp_path):
    """A scene whose reference is missing opens (USD reports composition errors) and keeps its prims."""
    p = tmp_path / "scene.usda"
    p.write_text('#usda 1.0\n(\n    defaultPrim = "W"\n)\ndef Xform "W" (\n    prepend references = @./missing.usda@\n)\n{\n}\n')
    stage = open_stage(p)
    assert stage.GetPrimAtPath("/W")


_TMP = Path(tempfile.mkdtemp(prefix="twinstage-fuzz-"))
_counter = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"#usda 1.0\n", b"PXR-USDC", b"PK\x03\x04", b"#usda 1.0\ndef Xform \"A\" {\n"]),
    body=st.binary(min_size=0, max_size=4096),
    suffix=st.sampled_from(sorted(USD_SUFFIXES)),
)
def test_random_bytes_never_crash_and_name_the_file(prefix, body, suffix):
    p = _TMP / f"fuzz{next(_counter)}{suffix}"
    p.write_bytes(prefix + body)
    try:
        stage = open_stage(p)
    except StageError as exc:
        assert str(p) in str(exc)
    else:  # whatever opened must hold content, never an empty stage
        assert stage.GetPseudoRoot().GetAllChildren()
    finally:
        os.unlink(p)
