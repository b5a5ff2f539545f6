"""Screen ↔ scene (numpy only): projecting points to pixels, the ray under a pixel, and what it hits.

Coordinates are the GPU scene's (origin-shifted world, see :class:`~._gpu.GpuScene`); pixels are
logical, for a ``w``×``h`` view. Matrices are the camera's ``camera_matrix`` (column vectors) and
USD row-vector object matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def project(camera_matrix: np.ndarray, pts: np.ndarray, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (bottom-left origin) of points, and whether each is in front of the camera and in depth range."""
    m = np.asarray(camera_matrix)
    p = np.c_[pts, np.ones(len(pts))] @ m.T
    wv = p[:, 3]
    ok = wv > 1e-9
    ndc = p[:, :3] / np.where(ok, wv, 1.0)[:, None]
    ok &= (ndc[:, 2] >= 0) & (ndc[:, 2] <= 1)
    xy = np.stack([(ndc[:, 0] + 1) / 2 * w, (ndc[:, 1] + 1) / 2 * h], axis=1)
    return xy, ok


def screen_ray(camera_matrix: np.ndarray, x: float, y: float, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The ray through logical pixel (x, y) (top-left origin): its origin on the near plane and unit direction."""
    inv = np.linalg.inv(np.asarray(camera_matrix))
    nx, ny = 2 * x / w - 1, 1 - 2 * y / h
    p0 = inv @ np.array([nx, ny, 0.0, 1.0])
    p1 = inv @ np.array([nx, ny, 1.0, 1.0])
    p0, p1 = p0[:3] / p0[3], p1[:3] / p1[3]
    d = p1 - p0
    d /= np.linalg.norm(d)
    return p0, d


def first_hit(bounds: np.ndarray, origin: np.ndarray, direction: np.ndarray,
              ray_object: Callable[[int, np.ndarray, np.ndarray], float | None], *, candidates: int = 24) -> tuple[int, float] | None:
    """First object hit by a ray: ``(object, distance)`` or None.

    Ray vs the objects' boxes (``bounds``: (n, 2, 3), NaN without geometry) first, then
    ``ray_object(o, origin, direction)`` (exact, e.g. :func:`ray_meshes`) on the nearest few candidates.
    """
    b = bounds
    ok = np.isfinite(b[:, 0, 0])
    if not ok.any():
        return None
    d = np.where(np.abs(direction) < 1e-12, 1e-12, direction)
    t1 = (b[:, 0] - origin) / d
    t2 = (b[:, 1] - origin) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = ok & (tmax >= np.maximum(tmin, 0.0))
    cands = np.flatnonzero(hit)
    if not len(cands):
        return None
    cands = cands[np.argsort(np.maximum(tmin[cands], 0.0))][:candidates]
    best = None
    for o in cands.tolist():
        if best is not None and tmin[o] > best[1]:
            break
        t = ray_object(o, origin, direction)
        if t is not None and (best is None or t < best[1]):
            best = (o, t)
    return best


def ray_meshes(meshes: Iterable[tuple[object, np.ndarray]], matrix: np.ndarray, origin: np.ndarray,
               direction: np.ndarray) -> float | None:
    """Nearest hit of a ray against an object's meshes (``(MeshData, local matrix)`` pairs), placed by ``matrix``."""
    best = None
    for mesh, local in meshes:
        m = local @ matrix
        try:
            inv = np.linalg.inv(m)
        except np.linalg.LinAlgError:
            continue
        lo = np.r_[origin, 1.0] @ inv
        ld = np.r_[direction, 0.0] @ inv
        t = ray_triangles(lo[:3], ld[:3], mesh.positions, mesh.triangles)
        if t is not None and (best is None or t < best):
            best = t
    return best


def ray_triangles(o: np.ndarray, d: np.ndarray, pos: np.ndarray, tris: np.ndarray) -> float | None:
    """Nearest positive hit parameter of a ray against triangles (Möller–Trumbore, vectorised)."""
    if not len(tris):
        return None
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-18
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = o - a
    u = np.einsum("ij,ij->i", s, p) * inv
    q = np.cross(s, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
    if not hit.any():
        return None
    return float(t[hit].min())


__all__ = ["first_hit", "project", "ray_meshes", "ray_triangles", "screen_ray"]
