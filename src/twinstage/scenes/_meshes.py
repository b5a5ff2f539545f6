"""Explicit mesh helpers: boxes and cylinders as ``UsdGeom.Mesh`` (Unity cannot import Cube/Cylinder shapes)."""

from __future__ import annotations

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, Vt


def _author(mesh: UsdGeom.Mesh, points: np.ndarray, counts: list[int], indices: list[int], normals: np.ndarray, color: tuple[float, float, float]) -> UsdGeom.Mesh:
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points.astype(np.float32)))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray(counts))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray(indices))
    mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(normals.astype(np.float32)))
    mesh.SetNormalsInterpolation(UsdGeom.Tokens.faceVarying)
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(*color)]))
    lo, hi = points.min(axis=0), points.max(axis=0)
    mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*lo.tolist()), Gf.Vec3f(*hi.tolist())]))
    return mesh


def box(stage: Usd.Stage, path: str | Sdf.Path, size: tuple[float, float, float], color: tuple[float, float, float], center: tuple[float, float, float] = (0, 0, 0)) -> UsdGeom.Mesh:
    """An axis-aligned box mesh with flat (face-varying) normals."""
    sx, sy, sz = (s / 2 for s in size)
    c = np.array(center, dtype=float)
    corners = np.array([[x, y, z] for z in (-sz, sz) for y in (-sy, sy) for x in (-sx, sx)]) + c
    faces = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    face_normals = [(0, 0, -1), (0, 0, 1), (0, -1, 0), (0, 1, 0), (-1, 0, 0), (1, 0, 0)]
    normals = np.repeat(np.array(face_normals, dtype=float), 4, axis=0)
    return _author(UsdGeom.Mesh.Define(stage, path), corners, [4] * 6, [i for f in faces for i in f], normals, color)


def cylinder(
    stage: Usd.Stage,
    path: str | Sdf.Path,
    radius: float,
    height: float,
    color: tuple[float, float, float],
    axis: str = "Z",
    center: tuple[float, float, float] = (0, 0, 0),
    segments: int = 24,
) -> UsdGeom.Mesh:
    """A capped cylinder mesh along ``axis`` with smooth sides and flat caps."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(a) * radius, np.sin(a) * radius], axis=1)
    h = height / 2
    bottom = np.c_[ring, np.full(segments, -h)]
    top = np.c_[ring, np.full(segments, h)]
    pts = np.vstack([bottom, top])
    counts, idx, nrm = [], [], []
    for i in range(segments):
        j = (i + 1) % segments
        counts.append(4)
        idx += [i, j, segments + j, segments + i]
        for k in (i, j, j, i):
            nrm.append((np.cos(a[k]), np.sin(a[k]), 0.0))
    counts.append(segments)
    idx += list(range(segments - 1, -1, -1))
    nrm += [(0, 0, -1)] * segments
    counts.append(segments)
    idx += list(range(segments, 2 * segments))
    nrm += [(0, 0, 1)] * segments
    normals = np.array(nrm, dtype=float)
    order = {"Z": [0, 1, 2], "X": [2, 0, 1], "Y": [1, 2, 0]}[axis]
    pts = pts[:, order] + np.array(center, dtype=float)
    normals = normals[:, order]
    return _author(UsdGeom.Mesh.Define(stage, path), pts, counts, idx, normals, color)
