"""Camera framing: where to put a perspective camera so a box is fully in view (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def fit_bounds(bounds: np.ndarray, view_dir: np.ndarray, up: np.ndarray, *, fov_deg: float, size: tuple[float, float],
               margin: float = 0.06, reserve_right_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Camera position and look-at target so that a world AABB's corners all project inside the image.

    Exact for a perspective camera: each corner constrains the distance along the view direction
    (horizontally and vertically, with ``margin`` to spare); ``reserve_right_px`` keeps a strip on the
    right free (the legend) by fitting into the rest and shifting the target so the scene centres there.
    """
    f = np.asarray(view_dir, dtype=float)
    f = f / (np.linalg.norm(f) or 1.0)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:  # looking along up: any side vector
        r = np.cross(f, [1.0, 0.0, 0.0]) if abs(f[0]) < 0.9 else np.cross(f, [0.0, 1.0, 0.0])
    r = r / np.linalg.norm(r)
    u = np.cross(r, f)
    w, h = max(size[0], 1.0), max(size[1], 1.0)
    usable_w = max(w - reserve_right_px, w * 0.4)
    tan_v, tan_h = view_tangents(fov_deg, w, h)
    # the usable part of the image, as tangents around its own centre, shrunk by the margin
    th = tan_h * (usable_w / w) * (1.0 - margin)
    tv = tan_v * (1.0 - margin)
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    centre = (lo + hi) / 2.0
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]) - centre
    x, y, z = corners @ r, corners @ u, corners @ f
    # the usable strip's centre sits s_off to the left of the image centre (in tangent units)
    s_off = tan_h * (w - usable_w) / w
    # depth d of a corner: camera at centre - f*D; |x + s_off*d| ... solved for the symmetric fit around the strip
    dist = max(float(np.max(np.abs(x) / th - z)), float(np.max(np.abs(y) / tv - z)))
    size_scale = float(np.linalg.norm(hi - lo)) or 1.0
    dist = max(dist, float(np.max(-z)) + 1e-3 * size_scale, 1e-6)
    shift = r * s_off * dist  # look right of the centre so the scene lands in the usable (left) part
    target = centre + shift
    return centre - f * dist + shift, target


def view_tangents(fov_deg: float, w: float, h: float) -> tuple[float, float]:
    """(vertical, horizontal) half-angle tangents of a pygfx perspective camera of square reference aspect:
    its ``fov`` spans the smaller side of the viewport."""
    t = math.tan(math.radians(fov_deg) / 2.0)
    return (t, t * w / h) if w >= h else (t * h / w, t)


def fov_showing(tan_h: float, tan_v: float, w: float, h: float) -> float:
    """The pygfx ``fov`` (degrees) whose view of a ``w``×``h`` viewport contains the given half-angle tangents."""
    t = max(tan_v, tan_h * h / w) if w >= h else max(tan_h, tan_v * w / h)
    return math.degrees(2.0 * math.atan(t))


def scene_camera(stage, time: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float] | None:
    """(position, unit view direction, up, horizontal and vertical half-angle tangents) of the stage's
    first ``Camera`` prim (depth-first), or None when it has none or its values are unusable."""
    if stage is None:
        return None
    from pxr import Gf, Usd, UsdGeom

    tc = Usd.TimeCode.Default() if time is None else Usd.TimeCode(time)
    for prim in stage.Traverse():
        if not prim.IsA(UsdGeom.Camera):
            continue
        try:
            gf = UsdGeom.Camera(prim).GetCamera(tc)
            frustum = gf.frustum
            pos = np.array(frustum.GetPosition(), dtype=float)
            direction = np.array(frustum.ComputeViewDirection(), dtype=float)
            up = np.array(frustum.ComputeUpVector(), dtype=float)
            tan_h = math.tan(math.radians(float(gf.GetFieldOfView(Gf.Camera.FOVHorizontal))) / 2.0)
            tan_v = math.tan(math.radians(float(gf.GetFieldOfView(Gf.Camera.FOVVertical))) / 2.0)
        except Exception:  # noqa: BLE001 - a malformed camera: fall back to framing
            return None
        n = float(np.linalg.norm(direction))
        ok = all(math.isfinite(x) and 0.01 < x < 12.0 for x in (tan_h, tan_v))
        if not (np.isfinite(pos).all() and np.isfinite(up).all() and n > 0 and ok):
            return None
        return pos, direction / n, up, tan_h, tan_v
    return None
