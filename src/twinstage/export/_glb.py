"""GLB export: the scene as explicit triangle meshes in glTF's Y-up metres, twin ids in node extras.

Layout of the file (what a client maps live state onto):

* one root node named after the stage's default prim, carrying the axis/unit conversion
  (Z-up → Y-up is a -90° rotation about X, so handedness is kept; ``metersPerUnit`` is a scale);
* under it one node per object of :func:`twinstage.geometry.extract` (twin assets first), with
  its world matrix (stage units), ``extras.usdPath`` = the prim path and, for twin assets,
  ``extras.twinId`` = the prim path (the id the websocket state uses) and ``extras.twin`` =
  kind, asset id, model and every twin attribute's value, unit, limits and role;
* shapes, subdivision cages, curves and point instancers become plain triangle meshes (what
  Unity/glTFast and three.js load); a prototype drawn more than once is one glTF mesh used
  by several instance nodes;
* materials are PBR metallic-roughness: a uniform colour becomes ``baseColorFactor``, varying
  colours ``COLOR_0``; opacity < 1 gives ``alphaMode: BLEND``; ``doubleSided`` is carried over.

With a recording, node translations/rotations/scales of the twin assets that move are baked
into one glTF animation (seconds = time code / timeCodesPerSecond).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Usd

from .._version import __version__
from ..geometry import MeshData, SceneGeometry, axis_conversion, extract, merge, style_key
from ..usd import read_asset, read_attributes, register, twin_prims
from ._common import ExportError, atomic_output, is_recording, open_source
from ._gltf import GltfBuilder, decompose, matrix_to_gltf


def to_glb(source, out: str | os.PathLike[str] | None = None, *, recording=None, segments: int = 24) -> Path | bytes:
    """Export a scene file, a recording (scene + baked animation) or a ``Usd.Stage`` as GLB.

    Returns the written path, or the GLB bytes when ``out`` is None (what a server sends).
    """
    register()
    if not isinstance(source, Usd.Stage) and is_recording(Path(source)):
        recording, source = Path(source), None
    with tempfile.TemporaryDirectory(prefix="twinstage-glb-") as tmp:
        if recording is not None:
            from ._usd import _animation_layer

            stage = Usd.Stage.Open(str(_animation_layer(Path(recording), Path(tmp), True)))
        else:
            stage = open_source(source)
        data = glb_bytes(stage, segments=segments, animation="recording" if recording is not None else "usd")
    if out is None:
        return data
    out = Path(out)
    if out.suffix.lower() != ".glb":
        raise ExportError(f"{out}: a GLB export must end in .glb")
    with atomic_output(out) as tmp_out:
        tmp_out.write_bytes(data)
    return out


def glb_bytes(stage: Usd.Stage, *, segments: int = 24, animation: str | None = "usd") -> bytes:
    """The GLB of a stage; ``animation`` names the glTF animation baked from time-varying transforms (None: none)."""
    from ._glb_anim import bake_animation, moving_objects

    twins = [str(p.GetPath()) for p in twin_prims(stage)]
    geo = extract(stage, twin_paths=twins, segments=segments, split_moving=animation is not None)
    times, moving = moving_objects(stage, geo) if animation else (None, {})
    b = GltfBuilder(f"twinstage {__version__}")
    up = geo.up_axis if geo.up_axis in ("Y", "Z") else "Y"
    mpu = geo.meters_per_unit if geo.meters_per_unit and math.isfinite(geo.meters_per_unit) and geo.meters_per_unit > 0 else 1.0
    default = stage.GetDefaultPrim()
    root_extras = {"usdUpAxis": up, "usdMetersPerUnit": mpu, "notes": geo.notes[:50]}
    root = b.node({"name": default.GetName() if default else "Root", "matrix": matrix_to_gltf(axis_conversion(up, mpu)),
                   "extras": root_extras}, None)
    parts: dict[int, list[MeshData]] = {}
    for p in geo.parts:
        parts.setdefault(p.object, []).append(p.mesh)
    for card in geo.cards:
        parts.setdefault(card.object, []).append(_card_mesh(card))
    nodes: dict[int, int] = {}
    for i, obj in enumerate(geo.objects):
        node: dict[str, Any] = {"name": obj.path.rsplit("/", 1)[-1] or "root", "extras": _extras(stage, obj.path, obj.twin)}
        _set_transform(node, obj.matrix, animated=i in moving)
        meshes = parts.get(i)
        if meshes:
            prims = _primitives(b, meshes)
            if prims:
                node["mesh"] = b.mesh(node["name"], prims)
        if "mesh" not in node and not obj.twin and not any(i in pr.objects for pr in geo.prototypes):
            continue  # scenery without geometry (e.g. only skipped prims): no empty node
        nodes[i] = b.node(node, root)
    _instances(b, geo, nodes)
    if moving:
        bake_animation(b, stage, times, moving, nodes, animation)
    return b.to_bytes()


_EYE = np.eye(4)
#: roughness of geometry without a UsdPreviewSurface (displayColor only): a matte, non-metal look
DEFAULT_ROUGHNESS = 0.7


def _set_transform(node: dict[str, Any], m: np.ndarray, *, animated: bool) -> None:
    m = np.asarray(m, dtype=np.float64)
    if not animated and float(np.abs(m - _EYE).max()) < 1e-12:
        return
    if not animated and float(np.abs(m[:3, :3] - _EYE[:3, :3]).max()) < 1e-12:  # a pure translation (most twins)
        node["translation"] = [float(x) for x in m[3, :3]]
        return
    t, q, s, residual = decompose(m)
    if animated or residual < 1e-6:
        if np.abs(t).max() > 0:
            node["translation"] = [float(x) for x in t]
        if abs(q[3]) < 1.0 - 1e-12:
            node["rotation"] = [float(x) for x in q]
        if np.abs(s - 1).max() > 1e-12:
            node["scale"] = [float(x) for x in s]
    else:  # sheared: only a matrix expresses it
        node["matrix"] = matrix_to_gltf(m)


def _primitives(b: GltfBuilder, meshes: list[MeshData]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[MeshData]] = {}
    for m in meshes:
        if m.n_triangles:
            groups.setdefault((*style_key(m), m.pbr or (0.0, DEFAULT_ROUGHNESS)), []).append(m)
    prims = []
    for (double_sided, blend, (metallic, roughness)), ms in sorted(groups.items()):
        m = merge(ms)
        rgba = np.concatenate([m.colors.astype(np.float64), m.opacity()[:, None].astype(np.float64)], axis=1)
        rgba = np.clip(np.nan_to_num(rgba, nan=0.5), 0.0, 1.0)
        uniform = bool(np.abs(rgba - rgba[0]).max() < 1e-4)
        if uniform:
            mat = b.material(tuple(rgba[0]), double_sided=double_sided, blend=blend, metallic=metallic, roughness=roughness)
            colors = None
        else:
            mat = b.material((1.0, 1.0, 1.0, 1.0), double_sided=double_sided, blend=blend, metallic=metallic, roughness=roughness)
            colors = rgba if blend else rgba[:, :3]
        nrm = m.normals.astype(np.float64)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-30)
        prims.append(b.primitive(m.positions, nrm, m.triangles, mat, colors))
    return prims


def _instances(b: GltfBuilder, geo: SceneGeometry, nodes: dict[int, int]) -> None:
    """Prototypes: one glTF mesh each, one child node per instance under its object's node."""
    for proto in geo.prototypes:
        prims = _primitives(b, [proto.mesh])
        if not prims:
            continue
        mesh = b.mesh(proto.key.rsplit("/", 1)[-1], prims)
        for k, (o, local) in enumerate(zip(proto.objects, proto.locals)):
            if o not in nodes:
                continue
            node: dict[str, Any] = {"name": f"{proto.key.rsplit('/', 1)[-1]}_{k}", "mesh": mesh}
            _set_transform(node, local, animated=False)
            b.node(node, nodes[o])


def _card_mesh(card) -> MeshData:
    c = np.asarray(card.corners, dtype=np.float64)
    n = np.cross(c[1] - c[0], c[2] - c[0])
    n = n / (np.linalg.norm(n) or 1.0)
    col = np.tile(np.asarray(card.color, np.float32), (4, 1))
    return MeshData(c, np.tile(n, (4, 1)).astype(np.float32), col, np.array([[0, 1, 2], [0, 2, 3]]), None, True)


def _extras(stage: Usd.Stage, path: str, twin: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"usdPath": path}
    if not twin:
        return out
    prim = stage.GetPrimAtPath(path)
    out["twinId"] = path
    asset = read_asset(prim)
    attrs = {}
    for decl, value in read_attributes(prim):
        v = list(value) if isinstance(value, (tuple, list)) or hasattr(value, "__len__") and not isinstance(value, str) else value
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        attrs[decl.name] = {"value": v, "unit": decl.unit, "type": decl.type, "role": decl.role,
                            "min": decl.min if math.isfinite(decl.min) else None, "max": decl.max if math.isfinite(decl.max) else None}
    out["twin"] = {"kind": asset.kind if asset else "", "assetId": asset.asset_id if asset else "",
                   "model": asset.model if asset else "", "attributes": attrs}
    return out
