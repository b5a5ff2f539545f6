"""The draw loop of a :class:`~._viewer.Viewer`: the canvas, renderer and camera made on first use, the
pygfx scene built from the geometry, pending state applied to the GPU buffers before each frame,
then the 3D pass and the HUD pass.

The pygfx objects live on the viewer (``_canvas``, ``_renderer``, ``_camera``, ``_gpu``, ``_hud``, …),
where picking, framing, input and the HUD read them. pygfx is imported here only inside functions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ._env import RenderQuality, ViewerUnavailable, adapter_info, is_software, make_canvas
from ._input import on_event
from ._panels import draw_hud

log = logging.getLogger("twinstage.viewer")


def ensure_renderer(viewer: Any) -> None:
    """Create the canvas (window, notebook or offscreen), renderer, camera, controller and HUD once;
    raises :class:`~._env.ViewerUnavailable` with a clear message when there is no GPU adapter."""
    v = viewer
    if v._renderer is not None:
        return
    info = adapter_info()  # raises ViewerUnavailable with a clear message
    if v._quality_arg == "auto":
        v.quality = RenderQuality.preset("auto", software=is_software(info))
    import pygfx as gfx

    from ._hud import Hud

    canvas, kind = make_canvas(v.frontend, v.size, v.title, v.quality.pixel_ratio)
    v._canvas, v._kind = canvas, kind
    if kind != "offscreen":
        try:
            canvas.set_update_mode("ondemand", max_fps=v.quality.max_fps)
        except Exception:
            pass
    v._renderer = gfx.WgpuRenderer(canvas, pixel_ratio=v.quality.pixel_ratio, ppaa=v.quality.ppaa)
    v._hud = Hud()
    v._camera = gfx.PerspectiveCamera(45)
    v._controller = gfx.OrbitController(v._camera)
    v._viewport = gfx.Viewport(v._renderer)
    v._renderer.add_event_handler(lambda event: on_event(v, event), "pointer_down", "pointer_move", "pointer_up", "wheel",
                                  "key_down", "key_up", "before_render")
    build_scene(v)
    if v._kind != "offscreen":
        _defer_close_while_drawing(v, canvas)
    canvas.request_draw(lambda: draw(v))


def _defer_close_while_drawing(v: Any, canvas: Any) -> None:
    """A window closed in the middle of a frame — rendercanvas closes its canvases from its Ctrl-C signal
    handler, which runs wherever the main thread is, e.g. between two render passes — loses its surface
    under the renderer and crashed the process (a segfault in glfw). The close waits for the frame's end."""
    close = canvas.close
    v._drawing = False
    v._close_pending = False

    def deferred() -> None:
        if v._drawing:
            v._close_pending = True
        else:
            close()

    canvas.close = deferred
    v._real_close = close


def build_scene(viewer: Any) -> None:
    """(Re)build the pygfx scene of the viewer's geometry: background, the GPU scene, cards; then frame it."""
    import pygfx as gfx

    from ._gpu import GpuScene, card_objects

    v = viewer
    t0 = time.perf_counter()
    scene = gfx.Scene()
    scene.add(gfx.Background.from_color(*v.background))
    v._gpu = GpuScene(v.geo, lighting=v.quality.lighting)
    scene.add(v._gpu.group)
    for ob in card_objects(v.geo, v._gpu.origin):
        scene.add(ob)
    v._scene = scene
    v.timings["gpu_build_s"] = time.perf_counter() - t0
    if v.overlays is not None:
        v.state.mark_all_dirty()
        v._recolor = True
    if v.selected is not None:
        v._gpu.set_state(np.array([v.selected]), selected=1.0)
    v.frame_all()


def apply_pending(viewer: Any) -> None:
    """Bring the GPU buffers up to date: poll a remote feed, advance a playing recording, push dirty rows,
    a new colouring and external alarms through the overlays, and outline the alarmed and selected assets."""
    v = viewer
    gpu = v._gpu
    if v._remote is not None:
        v._remote.poll()
    if v.playback is not None:
        now = time.perf_counter()
        v.playback.advance(now - v._last_draw)
        v._last_draw = now
    if v.overlays is not None:
        dirty = v.state.take_dirty()
        recolor = v._recolor
        v._recolor = False
        if recolor and v.overlays.color_by is None:
            v.overlays.clear_color(gpu)
        if dirty or recolor:
            v.overlays.update(gpu, dirty, recolor=recolor)
        with v._lock:
            ext, v._ext_pending = v._ext_pending, set()
        if ext:
            v.overlays.refresh_external(gpu, ext)
    outlined = set(v.overlays.alarm_objects().tolist()) if v.overlays is not None else set()
    if v.selected is not None:
        outlined.add(v.selected)
    gpu.set_outlined(outlined)


def draw(viewer: Any) -> None:
    """One frame (the canvas's draw callback); a window keeps redrawing while something moves or pulses."""
    v = viewer
    v._drawing = True
    try:
        _draw(v)
    finally:
        v._drawing = False
        if getattr(v, "_close_pending", False):
            v._close_pending = False
            v._real_close()


def _draw(v: Any) -> None:
    try:
        t0 = time.perf_counter()
        apply_pending(v)
        t1 = time.perf_counter()
        v._gpu.set_time(v.effect_time())
        w, h = v._canvas.get_logical_size()
        v._camera.set_view_size(w, h)
        v._renderer.render(v._scene, v._camera, flush=False)
        if v.hud_visible:
            draw_hud(v, w, h)
            v._renderer.render(v._hud.scene, v._hud.camera, clear=False)
        else:
            v._renderer.flush()
        v.timings["update_s"] = t1 - t0
        v.frames_drawn += 1
        v._draw_error = None
        if v._kind != "offscreen" and animating(v):
            v._canvas.request_draw()
    except Exception as exc:  # keep the window alive; screenshot() re-raises
        v._draw_error = exc
        log.exception("viewer: draw failed")
        raise


def grab(viewer: Any, effect_time: float | None = None) -> np.ndarray:
    """Draw one frame and return it (H, W, 4 uint8); ``effect_time`` fixes the effect clock (alarm pulses)."""
    v = viewer
    v._effect_time = effect_time
    try:
        if v._kind == "offscreen":
            img = np.asarray(v._canvas.draw())
        else:
            v._canvas.force_draw()
            img = np.asarray(v._renderer.snapshot())
    finally:
        v._effect_time = None
    if v._draw_error is not None:
        raise v._draw_error
    return np.ascontiguousarray(img)


def run_window(viewer: Any, block: bool = True) -> Any:
    """Run an interactive canvas: a window's event loop (until closed, when ``block``) or, in a notebook,
    the widget to display; offscreen there is nothing to show."""
    v = viewer
    if v._kind == "offscreen":
        raise ViewerUnavailable("no display for a window here: use screenshot() or record_video()")
    if v._kind == "jupyter":
        return v._canvas
    if block:
        from rendercanvas.auto import loop

        loop.run()
    return v._canvas


def animating(viewer: Any) -> bool:
    """Whether the view changes by itself: live or remote feeds, a playing recording, pulsing alarms."""
    v = viewer
    if v.mode in ("live", "remote"):
        return True
    if v.playback is not None and v.playback.playing:
        return True
    return bool(v.overlays is not None and len(v.overlays.alarm_objects()))


__all__ = ["animating", "apply_pending", "build_scene", "draw", "ensure_renderer", "grab", "run_window"]
