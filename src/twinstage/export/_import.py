"""Mesh import: glTF/GLB/OBJ/STL/PLY → ``UsdGeom.Mesh`` asset files referenced into a twin scene.

``import_mesh("pump.glb", "scenes/plant.usda", "/Plant/Pump", as_twin="pump")`` writes
``scenes/assets/pump.usdc`` (one ``Mesh`` per glTF primitive, the node hierarchy as
``Xform``s, extent, normals, ``displayColor``/``displayOpacity`` and ``doubleSided`` from the
materials) and adds ``/Plant/Pump`` referencing it with a relative ``./assets/…`` path.

Units and up axis are converted into the asset file, which carries the scene's ``upAxis``
and ``metersPerUnit = 1``: a Y-up glTF placed in a Z-up twin stands upright, and the result
says so. Conventions assumed for the source (override with ``up_axis=``/``unit=``): glTF is
Y-up metres (its spec); OBJ Y-up metres; STL and PLY Z-up metres (CAD habit). Node names
that are not valid USD identifiers are made valid; the mapping is kept in ``customData``.
Nothing is written unless everything succeeded (temp files, then rename).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pxr import Sdf, Tf, Usd, UsdGeom, Vt

from ..geometry import axis_conversion
from ..usd import StageError, declare_asset, open_stage
from ._common import ExportError, atomic_output

FORMATS = {".glb": ("Y", "m"), ".gltf": ("Y", "m"), ".obj": ("Y", "m"), ".stl": ("Z", "m"), ".ply": ("Z", "m")}
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254, "ft": 0.3048}
MAX_BYTES = 2 * 1024**3


@dataclass
class ImportResult:
    prim: str
    asset: Path
    meshes: int = 0
    vertices: int = 0
    faces: int = 0
    notes: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # source node name → USD prim name, where changed
    open_meshes: int = 0  # meshes that are not watertight (open or non-manifold): imported as they are


def import_mesh(mesh: str | os.PathLike[str], scene: str | os.PathLike[str], at: str, *, as_twin: str | None = None,
                up_axis: str | None = None, unit: str | None = None) -> ImportResult:
    mesh, scene = Path(mesh), Path(scene)
    ext = mesh.suffix.lower()
    if ext not in FORMATS:
        raise ExportError(f"{mesh}: unsupported mesh format {ext!r} (expected one of {', '.join(FORMATS)})")
    if not mesh.is_file():
        raise ExportError(f"{mesh}: no such file")
    if mesh.stat().st_size > MAX_BYTES:
        raise ExportError(f"{mesh}: {mesh.stat().st_size} bytes is more than the {MAX_BYTES} this importer accepts")
    src_up, src_unit = FORMATS[ext]
    src_up = (up_axis or src_up).upper()
    src_unit = unit or src_unit
    if src_up not in ("Y", "Z"):
        raise ExportError(f"--up-axis must be Y or Z, not {up_axis!r}")
    if src_unit not in UNITS:
        raise ExportError(f"--unit must be one of {', '.join(UNITS)}, not {unit!r}")
    try:
        stage = open_stage(scene)
    except StageError as exc:
        raise ExportError(str(exc)) from None
    path = _check_target(stage, scene, at)
    scene_up = str(UsdGeom.GetStageUpAxis(stage))
    scene_up = scene_up if scene_up in ("Y", "Z") else "Z"
    conv = axis_conversion(src_up, UNITS[src_unit], to=scene_up)  # source coordinates → scene's up axis, metres
    mpu = UsdGeom.GetStageMetersPerUnit(stage)
    if not math.isclose(mpu, 1.0):
        conv = conv / mpu
        conv[3, 3] = 1.0
    nodes = _load(mesh)
    asset = scene.parent / "assets" / f"{valid_name(mesh.stem)}.usdc"
    result = ImportResult(str(path), asset)
    layer = Sdf.Layer.CreateAnonymous(".usdc")
    root_name = valid_name(path.name)
    _asset_layer(layer, root_name, nodes, conv, scene_up, result)
    if not result.meshes:
        raise ExportError(f"{mesh}: holds no triangles (empty, or only points/lines); nothing imported")
    if result.open_meshes:
        result.notes.append(f"{result.open_meshes} of {result.meshes} meshes are open or non-manifold; imported as they are")
    if src_up != scene_up:
        result.notes.append(f"{mesh.name} is {src_up}-up; converted to the scene's {scene_up}-up (so it stands upright)")
    if src_unit != "m" or not math.isclose(mpu, 1.0):
        result.notes.append(f"units converted from {src_unit} to the scene's metersPerUnit {mpu:g}")
    layer.customLayerData = {"twinstage": {"importedFrom": mesh.name, "sourceUpAxis": src_up, "sourceUnit": src_unit,
                                           "renamed": dict(result.names)}}
    if asset.exists():
        raise ExportError(f"{asset}: exists already; import under another file name or remove it")
    rel = os.path.relpath(asset, scene.parent)
    rel = rel if rel.startswith(".") else f"./{rel}"
    scene_layer = stage.GetRootLayer()
    with atomic_output(asset) as tmp_asset:
        if not layer.Export(str(tmp_asset)):
            raise ExportError(f"{asset}: could not be written")
        # the new prim is authored on its own (a stage on a scratch layer: no composition of the scene), then copied in
        scratch = Usd.Stage.CreateInMemory()
        prim = scratch.DefinePrim(path, "Xform")
        prim.SetCustomDataByKey("twinstage:importedFrom", mesh.name)
        if as_twin:
            declare_asset(prim, kind=as_twin, asset_id=path.name)
        edit = Sdf.Layer.CreateAnonymous(".usda")
        edit.TransferContent(scene_layer)
        Sdf.CreatePrimInLayer(edit, path.GetParentPath())
        Sdf.CopySpec(scratch.GetRootLayer(), path, edit, path)
        edit.GetPrimAtPath(path).referenceList.Prepend(Sdf.Reference(rel))
        with atomic_output(scene) as tmp_scene:
            if not edit.Export(str(tmp_scene)):
                raise ExportError(f"{scene}: could not be written")
    scene_layer.Reload()
    return result


def valid_name(name: str) -> str:
    """A valid USD prim name for ``name``: invalid characters become ``_``, a leading digit gets a ``_`` before it."""
    if Tf.IsValidIdentifier(name):
        return name
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"_{out}" if not out or out[0].isdigit() else out


def _check_target(stage: Usd.Stage, scene: Path, at: str) -> Sdf.Path:
    if not Sdf.Path.IsValidPathString(at) or not at.startswith("/"):
        raise ExportError(f"--at {at!r}: not an absolute USD prim path such as /World/Pump")
    path = Sdf.Path(at)
    if not path.IsPrimPath() or path.pathElementCount < 2:
        raise ExportError(f"--at {at}: must be a prim under the scene's root prim, e.g. /World/Pump")
    if stage.GetPrimAtPath(path):
        raise ExportError(f"--at {at}: a prim exists there already in {scene}")
    parent = stage.GetPrimAtPath(path.GetParentPath())
    if not parent:
        raise ExportError(f"--at {at}: its parent {path.GetParentPath()} does not exist in {scene}")
    return path


@dataclass
class _Node:
    name: str
    parent: str | None
    matrix: np.ndarray  # row-vector local matrix, source coordinates
    mesh: object | None
    extras: dict


def _load(mesh: Path) -> list[_Node]:
    try:
        import trimesh
    except ImportError:  # pragma: no cover - part of the export extra
        raise ExportError("twinstage import needs trimesh: pip install 'twinstage[export]'") from None

    try:
        scene = trimesh.load(str(mesh), force="scene", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise ExportError(f"{mesh}: cannot be read as {mesh.suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    graph = scene.graph
    base = graph.base_frame
    nodes = []
    seen = set()
    order = [base]
    while order:
        parent = order.pop(0)
        for child in sorted(graph.transforms.children.get(parent, [])):
            if child in seen:
                continue
            seen.add(child)
            edge = graph.transforms.edge_data.get((parent, child), {})
            m = np.asarray(edge.get("matrix", np.eye(4)), dtype=np.float64).T  # column-vector → row-vector
            geom = scene.geometry.get(edge["geometry"]) if "geometry" in edge else None
            nodes.append(_Node(str(child), None if parent == base else str(parent), m, geom, dict(edge.get("metadata") or {})))
            order.append(child)
    return nodes


def _asset_layer(layer: Sdf.Layer, root_name: str, nodes: list[_Node], conv: np.ndarray, up: str, result: ImportResult) -> None:
    stage = Usd.Stage.Open(layer)
    UsdGeom.SetStageUpAxis(stage, up)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, f"/{root_name}")
    Usd.ModelAPI(root.GetPrim()).SetKind("component")
    stage.SetDefaultPrim(root.GetPrim())
    inv = np.linalg.inv(conv)
    paths: dict[str, Sdf.Path] = {}
    used: set[Sdf.Path] = set()
    for node in nodes:
        parent = paths.get(node.parent, root.GetPath()) if node.parent else root.GetPath()
        name = valid_name(node.name) or "node"
        if name != node.name:
            result.names[node.name] = name
        p = parent.AppendChild(name)
        k = 1
        while p in used:
            p = parent.AppendChild(f"{name}_{k}")
            k += 1
        used.add(p)
        paths[node.name] = p
        local = inv @ node.matrix @ conv  # the same placement in converted coordinates
        is_mesh = node.mesh is not None and hasattr(node.mesh, "faces")
        prim = UsdGeom.Mesh.Define(stage, p) if is_mesh else UsdGeom.Xform.Define(stage, p)
        if not np.allclose(local, np.eye(4)):
            prim.AddTransformOp().Set(_gf_matrix(local))
        prim.GetPrim().SetCustomDataByKey("twinstage:sourceNode", node.name)
        for key in ("twinId", "usdPath"):
            if isinstance(node.extras.get(key), str):
                prim.GetPrim().SetCustomDataByKey(f"twinstage:{key}", node.extras[key])
        if is_mesh:
            _mesh(prim, node.mesh, conv, result)
        elif node.mesh is not None:
            result.notes.append(f"{node.name}: {type(node.mesh).__name__} (not a triangle mesh) skipped")


def _gf_matrix(m: np.ndarray):
    from pxr import Gf

    return Gf.Matrix4d(*[float(x) for x in m.reshape(-1)])


def _mesh(usd_mesh: UsdGeom.Mesh, tm, conv: np.ndarray, result: ImportResult) -> None:
    verts = np.asarray(tm.vertices, dtype=np.float64)
    faces = np.asarray(tm.faces, dtype=np.int64)
    path = usd_mesh.GetPath()
    if not len(verts) or not len(faces):
        result.notes.append(f"{path}: empty mesh skipped")
        usd_mesh.GetPrim().SetActive(False)
        return
    if not np.isfinite(verts).all():
        raise ExportError(f"{path}: mesh has non-finite vertex coordinates")
    pts = verts @ conv[:3, :3] + conv[3, :3]
    rot = conv[:3, :3] / np.cbrt(abs(np.linalg.det(conv[:3, :3])))
    try:
        nrm = np.asarray(tm.vertex_normals, dtype=np.float64) @ rot
    except Exception:  # noqa: BLE001 - degenerate meshes
        nrm = None
    usd_mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(pts.astype(np.float32)))
    usd_mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    usd_mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.reshape(-1).astype(np.int32)))
    usd_mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    if nrm is not None and len(nrm) == len(pts) and np.isfinite(nrm).all():
        usd_mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(nrm.astype(np.float32)))
        usd_mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    usd_mesh.CreateExtentAttr(Vt.Vec3fArray([tuple(pts.min(axis=0)), tuple(pts.max(axis=0))]))
    _colors(usd_mesh, tm, len(pts))
    if not getattr(tm, "is_watertight", True):
        result.open_meshes += 1
    result.meshes += 1
    result.vertices += len(pts)
    result.faces += len(faces)


def _colors(usd_mesh: UsdGeom.Mesh, tm, n: int) -> None:
    visual = getattr(tm, "visual", None)
    rgba = None
    double_sided = False
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        vc = np.asarray(visual.vertex_colors, dtype=np.float64)
        if len(vc) == n:
            rgba = vc / 255.0
    mat = getattr(visual, "material", None) if visual is not None else None
    if rgba is None and mat is not None:
        base = getattr(mat, "baseColorFactor", None)
        if base is None and hasattr(mat, "main_color"):
            base = mat.main_color
        if base is not None:
            base = np.asarray(base, dtype=np.float64)
            rgba = (base / 255.0 if base.max() > 1.0 else base)[None, :]
        double_sided = bool(getattr(mat, "doubleSided", False))
    if visual is not None and getattr(visual, "kind", None) == "face" and rgba is None:
        rgba = np.asarray(visual.main_color, dtype=np.float64)[None, :] / 255.0
    usd_mesh.CreateDoubleSidedAttr(double_sided)
    if rgba is None:
        return
    rgba = np.clip(rgba, 0.0, 1.0)
    interp = UsdGeom.Tokens.constant if len(rgba) == 1 else UsdGeom.Tokens.vertex
    if len(rgba) > 1 and np.abs(rgba - rgba[0]).max() < 1e-4:
        rgba, interp = rgba[:1], UsdGeom.Tokens.constant
    usd_mesh.CreateDisplayColorPrimvar(interp).Set(Vt.Vec3fArray.FromNumpy(rgba[:, :3].astype(np.float32)))
    if rgba.shape[1] == 4 and (rgba[:, 3] < 0.999).any():
        usd_mesh.CreateDisplayOpacityPrimvar(interp).Set(Vt.FloatArray.FromNumpy(rgba[:, 3].astype(np.float32)))
