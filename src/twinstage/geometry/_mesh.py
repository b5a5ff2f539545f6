"""Triangle meshes in numpy: the mesh type, merging, n-gon triangulation, normals.

Everything here is plain numpy (no pxr, no GPU) so it is cheap to test. Arrays
follow USD's conventions: points are rows, matrices are row-vector 4×4
(``p_world = [p, 1] @ M``), counter-clockwise winding is front-facing for a
right-handed mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MeshData:
    """An indexed triangle mesh with per-vertex normals, linear RGB colours and (optional) opacity.

    ``alpha`` is None for an opaque mesh, else per-vertex opacity in [0, 1]
    (``displayOpacity`` / UsdPreviewSurface ``opacity``). ``double_sided`` follows the
    gprim's ``doubleSided``: False means back faces (clockwise as seen) are culled.
    """

    positions: np.ndarray  # (V, 3) float64
    normals: np.ndarray  # (V, 3) float32, unit length
    colors: np.ndarray  # (V, 3) float32, linear RGB
    triangles: np.ndarray  # (T, 3) int64
    alpha: np.ndarray | None = None  # (V,) float32 or None (opaque)
    double_sided: bool = False
    pbr: tuple[float, float] | None = None  # (metallic, roughness) of the bound UsdPreviewSurface, when authored

    @property
    def n_vertices(self) -> int:
        return len(self.positions)

    @property
    def n_triangles(self) -> int:
        return len(self.triangles)

    @property
    def translucent(self) -> bool:
        """True when some vertex is less than fully opaque (drawn blended, after the opaque geometry)."""
        return self.alpha is not None and bool((self.alpha < 0.999).any())

    def opacity(self) -> np.ndarray:
        """Per-vertex opacity (ones for an opaque mesh)."""
        return np.ones(self.n_vertices, np.float32) if self.alpha is None else self.alpha

    def bounds(self) -> np.ndarray:
        """(2, 3) min/max corner; a degenerate box at the origin when empty."""
        if not len(self.positions):
            return np.zeros((2, 3))
        return np.stack([self.positions.min(axis=0), self.positions.max(axis=0)])

    def with_style(self, *, alpha: np.ndarray | float | None = None, double_sided: bool | None = None,
                   pbr: tuple[float, float] | None = None) -> MeshData:
        """A copy with opacity (scalar or per vertex; None keeps it), sidedness and/or PBR factors replaced."""
        a = self.alpha
        if alpha is not None:
            a = np.broadcast_to(np.asarray(alpha, np.float32), (self.n_vertices,)).copy()
            if (a >= 0.999).all():
                a = None
        ds = self.double_sided if double_sided is None else bool(double_sided)
        return MeshData(self.positions, self.normals, self.colors, self.triangles, a, ds, self.pbr if pbr is None else pbr)

    def transformed(self, m: np.ndarray) -> MeshData:
        """This mesh with row-vector matrix ``m`` applied (normals by the inverse transpose).

        A mirroring matrix (negative determinant) reverses the winding so front faces stay front.
        """
        m = np.asarray(m, dtype=np.float64)
        pos = self.positions @ m[:3, :3] + m[3, :3]
        lin = m[:3, :3]
        det = np.linalg.det(lin)
        if abs(det) > 1e-300:
            nrm = self.normals.astype(np.float64) @ np.linalg.inv(lin).T
        else:
            nrm = self.normals.astype(np.float64)
        tris = self.triangles if det >= 0 else self.triangles[:, ::-1]
        return MeshData(pos, normalize(nrm).astype(np.float32), self.colors, np.ascontiguousarray(tris), self.alpha,
                        self.double_sided, self.pbr)


def empty_mesh() -> MeshData:
    return MeshData(np.zeros((0, 3)), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))


def merge(meshes: list[MeshData]) -> MeshData:
    """Concatenate meshes into one (indices offset). Opacity is kept per vertex; the result is
    double-sided when any input is (group by :func:`style_key` first to keep sidedness exact)."""
    meshes = [m for m in meshes if m.n_triangles]
    if not meshes:
        return empty_mesh()
    if len(meshes) == 1:
        return meshes[0]
    offsets = np.cumsum([0] + [m.n_vertices for m in meshes[:-1]])
    alpha = None
    if any(m.alpha is not None for m in meshes):
        alpha = np.concatenate([m.opacity() for m in meshes]).astype(np.float32)
    return MeshData(
        np.concatenate([m.positions for m in meshes]),
        np.concatenate([m.normals for m in meshes]),
        np.concatenate([m.colors for m in meshes]),
        np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
        alpha,
        any(m.double_sided for m in meshes),
        meshes[0].pbr if all(m.pbr == meshes[0].pbr for m in meshes) else None,
    )


def style_key(m: MeshData) -> tuple[bool, bool]:
    """(double_sided, translucent): meshes that can share one draw call / one glTF material mode."""
    return (m.double_sided, m.translucent)


def normalize(v: np.ndarray, fallback: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Unit vectors; zero-length or non-finite rows become ``fallback``."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    ok = np.isfinite(n) & (n > 1e-30)
    out = np.where(ok, v / np.where(ok, n, 1.0), np.asarray(fallback, dtype=np.float64))
    return out


def triangulate(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate faces of ``counts`` vertices.

    Returns ``(corners, face)``: ``corners`` (T, 3) index the face-vertex ("corner")
    array, ``face`` (T,) the face each triangle came from. Faces with fewer than 3
    vertices produce no triangles. Fans are exact for convex polygons (what DCC
    tools write for n-gons); concave n-gons may overlap.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    ntri = np.where(counts >= 3, counts - 2, 0)
    total = int(ntri.sum())
    if total == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    face = np.repeat(np.arange(len(counts)), ntri)
    k = np.arange(total) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    s = starts[face]
    return np.stack([s, s + k + 1, s + k + 2], axis=1), face


def face_normals(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted (unnormalised) triangle normals."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return np.cross(b - a, c - a)


def vertex_normals(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Smooth, area-weighted vertex normals (unit length)."""
    fn = face_normals(points, tris)
    acc = np.zeros((len(points), 3))
    for i in range(3):
        np.add.at(acc, tris[:, i], fn)
    return normalize(acc)


def flat(points: np.ndarray, tris: np.ndarray, color: np.ndarray) -> MeshData:
    """De-indexed mesh with one normal per triangle (hard edges)."""
    tris = np.asarray(tris, dtype=np.int64)
    pos = points[tris].reshape(-1, 3)
    nrm = np.repeat(normalize(face_normals(points, tris)), 3, axis=0)
    col = np.broadcast_to(np.asarray(color, np.float32), (len(pos), 3)).copy()
    return MeshData(pos, nrm.astype(np.float32), col, np.arange(len(pos)).reshape(-1, 3))


