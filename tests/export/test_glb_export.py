"""GLB export checked by the Khronos glTF validator (zero errors) and read back: Y-up metres with the
right handedness, twin ids and attributes in node extras, materials, alpha, instancing, animation."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _gltf_report import gltf_errors
from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade

from twinstage.export import to_glb
from twinstage.geometry import extract
from twinstage.usd import twin_prims

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "scenes" / "pump_testbed.usda"


def read_glb(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<III", data)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    jlen, _ = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20:20 + jlen])
    rest = data[20 + jlen:]
    binary = rest[8:8 + struct.unpack_from("<I", rest)[0]] if rest else b""
    return doc, binary


def accessor(doc: dict, binary: bytes, i: int) -> np.ndarray:
    acc = doc["accessors"][i]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc["type"]]
    a = np.frombuffer(binary, dtype, acc["count"] * width, view["byteOffset"] + acc.get("byteOffset", 0))
    return a.reshape(acc["count"], width) if width > 1 else a


def world_matrices(doc: dict) -> dict[int, np.ndarray]:
    """Column-vector world matrices of all nodes."""
    def local(n):
        if "matrix" in n:
            return np.array(n["matrix"]).reshape(4, 4).T
        t = np.eye(4)
        t[:3, 3] = n.get("translation", [0, 0, 0])
        x, y, z, w = n.get("rotation", [0, 0, 0, 1])
        r = np.eye(4)
        r[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
        s = np.diag([*n.get("scale", [1, 1, 1]), 1.0])
        return t @ r @ s

    out = {}

    def walk(i, parent):
        out[i] = parent @ local(doc["nodes"][i])
        for c in doc["nodes"][i].get("children", []):
            walk(c, out[i])

    for i in doc["scenes"][0]["nodes"]:
        walk(i, np.eye(4))
    return out


def test_testbed_glb_is_valid_and_carries_twin_ids(tmp_path, gltf_validate):
    out = tmp_path / "testbed.glb"
    r = subprocess.run([sys.executable, "-m", "twinstage", "export", str(SCENE), "--format", "glb", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report, = gltf_validate(out)
    assert gltf_errors(report) == []
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    stage = Usd.Stage.Open(str(SCENE))
    geo = extract(stage, twin_paths=[str(p.GetPath()) for p in twin_prims(stage)])
    assert report["info"]["totalTriangleCount"] == geo.stats()["triangles"]
    doc, _ = read_glb(out.read_bytes())
    by_id = {n["extras"]["twinId"]: n for n in doc["nodes"] if "twinId" in n.get("extras", {})}
    assert set(by_id) == {str(p.GetPath()) for p in twin_prims(stage)}
    pump = by_id["/Testbed/Pump"]["extras"]["twin"]
    assert pump["kind"] == "pump"
    assert pump["attributes"]["motorTemperature"]["unit"] == "degC"
    want = stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature").Get()
    assert pump["attributes"]["motorTemperature"]["value"] == want
    # as bytes too (what a server sends), the same bytes: the export is deterministic
    assert to_glb(SCENE) == out.read_bytes()


def _cube_stage(path: Path, up: str = "Z", mpu: float = 1.0) -> Usd.Stage:
    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageUpAxis(stage, up)
    UsdGeom.SetStageMetersPerUnit(stage, mpu)
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())
    return stage


def test_z_up_becomes_y_up_with_outward_winding(tmp_path, gltf_validate):
    stage = _cube_stage(tmp_path / "c.usda", "Z", 0.01)
    cube = UsdGeom.Cube.Define(stage, "/World/Cube")
    cube.CreateSizeAttr(200.0)  # 2 m, in cm
    cube.AddTranslateOp().Set(Gf.Vec3d(0, 0, 500))  # 5 m up
    stage.Save()
    data = to_glb(tmp_path / "c.usda")
    (tmp_path / "c.glb").write_bytes(data)
    report, = gltf_validate(tmp_path / "c.glb")
    assert gltf_errors(report) == []
    doc, binary = read_glb(data)
    mats = world_matrices(doc)
    node = next(i for i, n in enumerate(doc["nodes"]) if "mesh" in n)
    prim = doc["meshes"][doc["nodes"][node]["mesh"]]["primitives"][0]
    pos = accessor(doc, binary, prim["attributes"]["POSITION"]).astype(float)
    nrm = accessor(doc, binary, prim["attributes"]["NORMAL"]).astype(float)
    tri = accessor(doc, binary, prim["indices"]).astype(int).reshape(-1, 3)
    m = mats[node]
    world = pos @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(world.min(axis=0), [-1, 4, -1], atol=1e-6)  # metres, Y up: the cube sits 4..6 m high
    np.testing.assert_allclose(world.max(axis=0), [1, 6, 1], atol=1e-6)
    # counter-clockwise triangles face outward (glTF front faces), and agree with the normals
    a, b, c = world[tri[:, 0]], world[tri[:, 1]], world[tri[:, 2]]
    fn = np.cross(b - a, c - a)
    centre = world.mean(axis=0)
    assert (np.einsum("ij,ij->i", fn, (a + b + c) / 3 - centre) > 0).all()
    wn = nrm @ np.linalg.inv(m[:3, :3])
    assert (np.einsum("ij,ij->i", fn, wn[tri[:, 0]]) > 0).all()


def test_materials_alpha_and_sidedness(tmp_path, gltf_validate):
    stage = _cube_stage(tmp_path / "m.usda")
    glass = UsdGeom.Sphere.Define(stage, "/World/Glass")
    glass.CreateDisplayColorPrimvar().Set([(0.2, 0.4, 0.9)])
    glass.CreateDisplayOpacityPrimvar().Set([0.25])
    card = UsdGeom.Mesh.Define(stage, "/World/Card")
    card.CreatePointsAttr([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
    card.CreateFaceVertexCountsAttr([4])
    card.CreateFaceVertexIndicesAttr([0, 1, 2, 3])
    card.CreateDoubleSidedAttr(True)
    card.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)])
    box = UsdGeom.Cube.Define(stage, "/World/Box")
    mat = UsdShade.Material.Define(stage, "/World/Looks/Red")
    sh = UsdShade.Shader.Define(stage, "/World/Looks/Red/PBR")
    sh.CreateIdAttr("UsdPreviewSurface")
    sh.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set((0.8, 0.1, 0.05))
    sh.CreateInput("opacity", Sdf.ValueTypeNames.Float).Set(0.5)
    sh.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.9)
    sh.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.2)
    mat.CreateSurfaceOutput().ConnectToSource(sh.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(box.GetPrim()).Bind(mat)
    stage.Save()
    out = to_glb(tmp_path / "m.usda", tmp_path / "m.glb")
    report, = gltf_validate(out)
    assert gltf_errors(report) == []
    doc, binary = read_glb(out.read_bytes())
    by_name = {n["name"]: n for n in doc["nodes"]}

    def material(name):
        prim = doc["meshes"][by_name[name]["mesh"]]["primitives"][0]
        return doc["materials"][prim["material"]], prim

    m, _ = material("Glass")
    assert m["alphaMode"] == "BLEND" and m["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx([0.2, 0.4, 0.9, 0.25], abs=1e-6)
    assert not m.get("doubleSided", False)
    m, prim = material("Card")
    assert m.get("doubleSided") is True and "alphaMode" not in m
    colors = accessor(doc, binary, prim["attributes"]["COLOR_0"])
    assert colors.shape == (4, 3) and {tuple(np.round(c, 3)) for c in colors} == {(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)}
    m, _ = material("Box")
    assert m["alphaMode"] == "BLEND" and m["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx([0.8, 0.1, 0.05, 0.5], abs=1e-6)
    assert m["pbrMetallicRoughness"]["metallicFactor"] == pytest.approx(0.9) and m["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(0.2)
    m, _ = material("Glass")  # displayColor only: a matte non-metal
    assert m["pbrMetallicRoughness"]["metallicFactor"] == 0.0


def test_point_instancer_prototypes_are_shared_meshes(tmp_path, gltf_validate):
    stage = _cube_stage(tmp_path / "pi.usda")
    pi = UsdGeom.PointInstancer.Define(stage, "/World/Crates")
    UsdGeom.Cube.Define(stage, "/World/Crates/Protos/Crate").CreateSizeAttr(0.5)
    pi.CreatePrototypesRel().SetTargets(["/World/Crates/Protos/Crate"])
    pi.CreatePositionsAttr([(x, 0, 0) for x in range(5)])
    pi.CreateProtoIndicesAttr([0] * 5)
    stage.Save()
    out = to_glb(tmp_path / "pi.usda", tmp_path / "pi.glb")
    report, = gltf_validate(out)
    assert gltf_errors(report) == []
    doc, _ = read_glb(out.read_bytes())
    users = [n for n in doc["nodes"] if "mesh" in n]
    assert len(users) == 5 and len({n["mesh"] for n in users}) == 1  # one mesh, five nodes
    assert report["info"]["totalTriangleCount"] == 12  # the validator counts meshes, not their uses


def test_recording_bakes_motion_into_an_animation(tmp_path, gltf_validate):
    scene = tmp_path / "factory.usda"
    run = tmp_path / "run.usdc"
    for args in (["scene", "generate", "--assets", "3", "--items", "2", "-o", str(scene)],
                 ["run", str(scene), "--ticks", "15", "--record", str(run)],
                 ["export", str(run), "-o", str(tmp_path / "run.glb")]):
        r = subprocess.run([sys.executable, "-m", "twinstage", *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    report, = gltf_validate(tmp_path / "run.glb")
    assert gltf_errors(report) == []
    assert report["info"]["animationCount"] == 1
    doc, binary = read_glb((tmp_path / "run.glb").read_bytes())
    anim = doc["animations"][0]
    moving = {doc["nodes"][c["target"]["node"]]["extras"]["twinId"] for c in anim["channels"] if c["target"]["path"] == "translation"}
    assert moving  # the conveyor items move
    ch = next(c for c in anim["channels"] if c["target"]["path"] == "translation")
    sampler = anim["samplers"][ch["sampler"]]
    times = accessor(doc, binary, sampler["input"])
    keys = accessor(doc, binary, sampler["output"])
    assert len(times) == len(keys) >= 2 and times[0] == 0 and np.all(np.diff(times) > 0)
    assert np.abs(keys[-1] - keys[0]).max() > 0


def test_time_sampled_usd_transforms_are_baked(shared_data, tmp_path, gltf_validate):
    src = shared_data / "usd-wg" / "test_assets" / "USDZ" / "BoxAnimated" / "BoxAnimated.usdz"
    out = to_glb(src, tmp_path / "box.glb")
    report, = gltf_validate(out)
    assert gltf_errors(report) == [] and report["info"]["animationCount"] == 1
    doc, binary = read_glb(out.read_bytes())
    anim = doc["animations"][0]
    stage = Usd.Stage.Open(str(src))
    tcps = stage.GetTimeCodesPerSecond()
    for ch in anim["channels"]:
        node = doc["nodes"][ch["target"]["node"]]
        if ch["target"]["path"] != "translation":
            continue
        sampler = anim["samplers"][ch["sampler"]]
        secs = accessor(doc, binary, sampler["input"])
        keys = accessor(doc, binary, sampler["output"])
        prim = stage.GetPrimAtPath(node["extras"]["usdPath"])
        for k in (0, len(secs) // 3, len(secs) - 1):
            t = stage.GetStartTimeCode() + float(secs[k]) * tcps
            m = np.array(UsdGeom.XformCache(Usd.TimeCode(t)).GetLocalToWorldTransform(prim)).reshape(4, 4)
            np.testing.assert_allclose(keys[k], m[3, :3], atol=1e-5)  # the USD translation at that time
        return
    pytest.fail("no translation channel")
