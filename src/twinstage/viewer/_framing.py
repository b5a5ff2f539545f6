"""Camera framing: where to put a perspective camera so a box is fully in view, or to look through the
stage's own camera (numpy; the pygfx camera and GPU scene are passed in, nothing here imports pygfx)."""

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


def frame_camera(camera, gpu, size: tuple[float, float], *, view_dir=None, stage=None, time: float | None = None,
                 use_stage_camera: bool = True, reserve_right_px: float = 0.0, margin: float = 0.06) -> bool:
    """Point ``camera`` (pygfx perspective) at a :class:`~._gpu.GpuScene`: through the stage's camera when it has
    one (``use_stage_camera`` and no ``view_dir``), else fitting the scene's bounds (:func:`fit_bounds`) seen
    along ``view_dir`` or a default direction for its up axis. False when the scene has no bounds (the camera
    then looks at the origin)."""
    wb = gpu.world_bounds()
    up = np.array(gpu.up, dtype=float)
    if view_dir is not None:
        vd = np.asarray(view_dir, dtype=float)
    elif gpu.up[2] == 1.0:  # Z up: from the front (-Y), left and above
        vd = np.array([0.35, 1.0, -0.75])
    else:  # Y up: from +Z (front), right and above
        vd = np.array([-0.45, -0.7, -1.0])
    if wb is None:
        camera.show_object((0.0, 0.0, 0.0, 1.0), view_dir=tuple(vd), up=tuple(up), scale=0.9)
        return False
    w, h = (float(x) for x in size)
    if view_dir is None and use_stage_camera and look_through_stage_camera(camera, gpu, stage, time, (w, h)):
        return True
    pos, target = fit_bounds(wb, vd, up, fov_deg=float(camera.fov), size=(w, h), margin=margin, reserve_right_px=reserve_right_px)
    camera.local.position = tuple(pos)
    camera.show_pos(tuple(target), up=tuple(up))
    return True


def look_through_stage_camera(camera, gpu, stage, time: float | None, size: tuple[float, float]) -> bool:
    """Look through the stage's first camera, as usdview does (False when it has none or it is unusable)."""
    cam = scene_camera(stage, time)
    if cam is None:
        return False
    pos, direction, up, tan_h, tan_v = cam
    fov = fov_showing(tan_h, tan_v, *(float(x) for x in size))
    pos = pos - gpu.origin
    wb = gpu.world_bounds()
    centre = (wb[0] + wb[1]) / 2 if wb is not None else pos + direction
    dist = float(np.dot(centre - pos, direction))
    if not dist > 0:
        dist = float(np.linalg.norm(wb[1] - wb[0])) if wb is not None else 1.0
    camera.fov = fov
    camera.local.position = tuple(pos)
    camera.show_pos(tuple(pos + direction * dist), up=tuple(up))
    return True


__all__ = ["fit_bounds", "fov_showing", "frame_camera", "look_through_stage_camera", "scene_camera", "view_tangents"]
