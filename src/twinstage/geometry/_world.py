"""Whole-scene helpers: up-axis/unit conversion and per-object meshes (what exporters consume)."""

from __future__ import annotations

import numpy as np

from ._mesh import MeshData, merge, style_key
from ._scene import SceneGeometry


def axis_conversion(up_axis: str, meters_per_unit: float = 1.0, to: str = "Y") -> np.ndarray:
    """Row-vector 4×4 taking a stage's coordinates to ``to``-up metres (right-handed both sides).

    Z-up → Y-up is a rotation of -90° about X: ``(x, y, z) → (x, z, -y)``, so handedness is kept
    (a mirror such as swapping y and z would turn every triangle inside out).
    """
    for a in (up_axis, to):
        if a not in ("Y", "Z"):
            raise ValueError(f"up axis must be 'Y' or 'Z', not {a!r}")
    if not (np.isfinite(meters_per_unit) and meters_per_unit > 0):
        raise ValueError(f"metersPerUnit must be a finite number > 0, not {meters_per_unit!r}")
    m = np.eye(4)
    if up_axis == "Z" and to == "Y":
        m[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]  # rows: images of x, y, z
    elif up_axis == "Y" and to == "Z":
        m[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
    m[:3, :3] *= meters_per_unit
    return m


def object_meshes(geo: SceneGeometry, *, world: bool = False) -> dict[int, list[MeshData]]:
    """Each object's geometry (parts and its prototype instances, baked) merged per
    :func:`style_key`: ``{object index: [mesh, ...]}`` in the object's frame, or in world
    space with ``world=True``. Objects without geometry are left out."""
    pieces: dict[int, list[MeshData]] = {}
    for p in geo.parts:
        pieces.setdefault(p.object, []).append(p.mesh)
    for proto in geo.prototypes:
        for o, local in zip(proto.objects, proto.locals):
            pieces.setdefault(o, []).append(proto.mesh.transformed(local))
    out: dict[int, list[MeshData]] = {}
    for o, meshes in pieces.items():
        groups: dict[tuple[bool, bool], list[MeshData]] = {}
        for m in meshes:
            if m.n_triangles:
                groups.setdefault(style_key(m), []).append(m)
        merged = [merge(ms) for _, ms in sorted(groups.items())]
        if world:
            merged = [m.transformed(geo.objects[o].matrix) for m in merged]
        if merged:
            out[o] = merged
    return out
