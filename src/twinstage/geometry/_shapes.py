"""The UsdGeom shapes (and a few helper solids) as triangle meshes, in numpy.

Canonical shapes are built along +Z and rotated onto their ``axis``; winding is
counter-clockwise seen from outside (front faces), as USD's right-handed default.
"""

from __future__ import annotations

import numpy as np

from ._mesh import MeshData, empty_mesh, merge, normalize

# -- shapes ------------------------------------------------------------------------

def _to_axis(v: np.ndarray, axis: str) -> np.ndarray:
    """Map z-up canonical coordinates (x, y, z) so that canonical z lies along ``axis``."""
    order = {"Z": [0, 1, 2], "X": [2, 0, 1], "Y": [1, 2, 0]}[axis]
    return v[:, order]


def _solid(points: np.ndarray, normals: np.ndarray, tris: np.ndarray, color, axis: str = "Z") -> MeshData:
    points = _to_axis(np.asarray(points, dtype=np.float64), axis)
    normals = _to_axis(np.asarray(normals, dtype=np.float64), axis)
    col = np.broadcast_to(np.asarray(color, np.float32), (len(points), 3)).copy()
    return MeshData(points, normalize(normals).astype(np.float32), col, np.asarray(tris, dtype=np.int64))


def cube(size: float, color) -> MeshData:
    h = size / 2.0
    pts, nrm, tris = [], [], []
    # six faces, each a quad with its own normal
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u, v = [a for a in range(3) if a != axis]
            quad = []
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.zeros(3)
                p[axis] = sign * h
                p[u], p[v] = a * h, b * h
                quad.append(p)
            quad = np.array(quad)
            base = len(pts)
            pts.extend(quad)
            nrm.extend([n] * 4)
            t = [(base, base + 1, base + 2), (base, base + 2, base + 3)]
            # keep counter-clockwise seen from outside
            if np.dot(np.cross(quad[1] - quad[0], quad[2] - quad[0]), n) < 0:
                t = [tuple(reversed(x)) for x in t]
            tris.extend(t)
    return _solid(np.array(pts), np.array(nrm), np.array(tris), color)


def sphere(radius: float, color, segments: int = 24, rings: int | None = None) -> MeshData:
    rings = rings or max(4, segments // 2)
    theta = np.linspace(0, np.pi, rings + 1)  # from +z down
    phi = np.linspace(0, 2 * np.pi, segments + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    n = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    tris = _grid_tris(rings, segments)
    return _solid(n * radius, n, tris, color)


def _grid_tris(rows: int, cols: int) -> np.ndarray:
    """Two triangles per cell of a (rows+1)×(cols+1) vertex grid, counter-clockwise seen from outside."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a = (r * (cols + 1) + c).ravel()
    b = a + cols + 1
    return np.concatenate([np.stack([a, b, a + 1], 1), np.stack([a + 1, b, b + 1], 1)])


def _lathe(profile: np.ndarray, normals2d: np.ndarray, segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Revolve a (r, z) profile around z: points, normals, triangles."""
    phi = np.linspace(0, 2 * np.pi, segments + 1)
    c, s = np.cos(phi), np.sin(phi)
    r, z = profile[:, 0][:, None], profile[:, 1][:, None]
    nr, nz = normals2d[:, 0][:, None], normals2d[:, 1][:, None]
    pts = np.stack([r * c, r * s, np.broadcast_to(z, (len(profile), segments + 1))], axis=-1)
    nrm = np.stack([nr * c, nr * s, np.broadcast_to(nz, (len(profile), segments + 1))], axis=-1)
    tris = _grid_tris(len(profile) - 1, segments)
    # profile runs bottom→top with r>0: the grid order winds clockwise seen from outside → flip
    return pts.reshape(-1, 3), nrm.reshape(-1, 3), tris[:, ::-1]


def _disk(radius: float, z: float, up: bool, segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    rim = np.stack([radius * np.cos(phi), radius * np.sin(phi), np.full(segments, z)], axis=1)
    pts = np.vstack([[0.0, 0.0, z], rim])
    nrm = np.tile([0.0, 0.0, 1.0 if up else -1.0], (segments + 1, 1))
    i = np.arange(segments)
    tris = np.stack([np.zeros(segments, np.int64), 1 + i, 1 + (i + 1) % segments], axis=1)
    if not up:
        tris = tris[:, ::-1]
    return pts, nrm, tris


def _combine(*pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts, nrm, tris, off = [], [], [], 0
    for p, n, t in pieces:
        pts.append(p)
        nrm.append(n)
        tris.append(t + off)
        off += len(p)
    return np.vstack(pts), np.vstack(nrm), np.vstack(tris)


def cylinder(radius: float, height: float, axis: str, color, segments: int = 24, radius_top: float | None = None) -> MeshData:
    rt = radius if radius_top is None else radius_top
    h = height / 2.0
    slope = (radius - rt) / max(height, 1e-12)
    side_n = np.array([[1.0, slope], [1.0, slope]])
    side = _lathe(np.array([[radius, -h], [rt, h]]), side_n, segments)
    pieces = [side]
    if radius > 0:
        pieces.append(_disk(radius, -h, False, segments))
    if rt > 0:
        pieces.append(_disk(rt, h, True, segments))
    return _solid(*_combine(*pieces), color, axis)


def cone(radius: float, height: float, axis: str, color, segments: int = 24) -> MeshData:
    return cylinder(radius, height, axis, color, segments, radius_top=0.0)


def capsule(radius: float, height: float, axis: str, color, segments: int = 24) -> MeshData:
    """``height`` is the cylindrical part; hemispherical caps of ``radius`` at both ends."""
    h = height / 2.0
    k = max(3, segments // 4)
    a = np.linspace(-np.pi / 2, 0, k + 1)
    bottom = np.stack([radius * np.cos(a), -h + radius * np.sin(a)], 1)
    bn = np.stack([np.cos(a), np.sin(a)], 1)
    a2 = np.linspace(0, np.pi / 2, k + 1)
    top = np.stack([radius * np.cos(a2), h + radius * np.sin(a2)], 1)
    tn = np.stack([np.cos(a2), np.sin(a2)], 1)
    prof = np.vstack([bottom, top])
    nrm = np.vstack([bn, tn])
    return _solid(*_lathe(prof, nrm, segments), color, axis)


def plane(width: float, length: float, axis: str, color) -> MeshData:
    """A double-sided rectangle (the viewer draws both sides) with its normal along ``axis``."""
    w, h = width / 2.0, length / 2.0
    pts = np.array([[-w, -h, 0.0], [w, -h, 0.0], [w, h, 0.0], [-w, h, 0.0]])
    nrm = np.tile([0.0, 0.0, 1.0], (4, 1))
    return _solid(pts, nrm, np.array([[0, 1, 2], [0, 2, 3]]), color, axis)


def box_edges(lo: np.ndarray, hi: np.ndarray, color, thickness: float) -> MeshData:
    """The 12 edges of an axis-aligned box as thin bars (a wireframe made of triangles)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    t = thickness
    parts = []
    corners = [np.array([x, y, z]) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    for i, a in enumerate(corners):
        for b in corners[i + 1 :]:
            if np.count_nonzero(a != b) != 1:
                continue
            c = (a + b) / 2
            size = np.maximum(np.abs(b - a), t)
            parts.append(cube(1.0, color).transformed(np.diag([*size, 1.0]) @ _translate(c)))
    return merge(parts)


def axes(length: float, thickness: float) -> MeshData:
    """Red/green/blue bars along +X/+Y/+Z (the ``origin`` draw mode)."""
    parts = []
    for i, col in enumerate(((0.8, 0.05, 0.05), (0.05, 0.8, 0.05), (0.05, 0.05, 0.8))):
        size = np.full(3, thickness)
        size[i] = length
        c = np.zeros(3)
        c[i] = length / 2
        parts.append(cube(1.0, col).transformed(np.diag([*size, 1.0]) @ _translate(c)))
    return merge(parts)


def _translate(t) -> np.ndarray:
    m = np.eye(4)
    m[3, :3] = t
    return m


def tubes(points: np.ndarray, counts: np.ndarray, width: float, color, *, closed: bool = False) -> MeshData:
    """Polylines as square tubes of ``width`` (one box per segment): curves and paths drawn as geometry."""
    points = np.asarray(points, dtype=np.float64)
    segs = []
    start = 0
    for c in np.asarray(counts, dtype=np.int64).tolist():
        idx = np.arange(start, start + c)
        start += c
        if c < 2:
            continue
        a, b = idx[:-1], idx[1:]
        if closed:
            a, b = np.r_[a, idx[-1]], np.r_[b, idx[0]]
        segs.append(np.stack([a, b], 1))
    if not segs:
        return empty_mesh()
    seg = np.concatenate(segs)
    p0, p1 = points[seg[:, 0]], points[seg[:, 1]]
    d = p1 - p0
    length = np.linalg.norm(d, axis=1)
    keep = length > 1e-12
    p0, p1, d, length = p0[keep], p1[keep], d[keep], length[keep]
    if not len(p0):
        return empty_mesh()
    u = d / length[:, None]
    ref = np.where(np.abs(u[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    v = normalize(np.cross(u, ref))
    w = np.cross(u, v)
    unit = cube(1.0, color)
    n = len(p0)
    # per segment: scale unit cube to (length, width, width) along (u, v, w), centred on the segment
    rot = np.stack([u * length[:, None], v * width, w * width], axis=1)  # rows: row-vector basis
    pos = np.einsum("vk,nkj->nvj", unit.positions, rot) + ((p0 + p1) / 2)[:, None, :]
    nrm = np.einsum("vk,nkj->nvj", unit.normals.astype(np.float64), np.stack([u, v, w], axis=1))
    tris = unit.triangles[None, :, :] + (np.arange(n) * unit.n_vertices)[:, None, None]
    col = np.broadcast_to(np.asarray(color, np.float32), (n * unit.n_vertices, 3)).copy()
    return MeshData(pos.reshape(-1, 3), normalize(nrm.reshape(-1, 3)).astype(np.float32), col, tris.reshape(-1, 3))
