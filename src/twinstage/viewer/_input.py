"""Input of an interactive view: keys, click-to-select, scrubbing the playback timeline; the rest goes
to the orbit controller. Positions are logical pixels, top-left origin (the HUD's are bottom-left)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def on_event(viewer: Any, event: Any) -> None:
    """A pointer, key or before-render event of the canvas: timeline scrubbing, keys, click-to-pick, else the orbit controller."""
    t = event.type
    ctrl = viewer._controller
    if t == "before_render":
        ctrl.handle_event(event, viewer._viewport)
        return
    if t == "key_down":
        if on_key(viewer, event.key):
            viewer._canvas.request_draw()
            return
        ctrl.handle_event(event, viewer._viewport)
        return
    if t in ("pointer_down", "pointer_move", "pointer_up") and timeline_event(viewer, event):
        viewer._canvas.request_draw()
        return
    if t == "pointer_down":
        viewer._down = (event.x, event.y, event.button)
    elif t == "pointer_up" and viewer._down is not None:
        x0, y0, b = viewer._down
        viewer._down = None
        if b == 1 and abs(event.x - x0) + abs(event.y - y0) < 5:
            viewer.pick_at(event.x, event.y)
            viewer._canvas.request_draw()
    ctrl.handle_event(event, viewer._viewport)


def timeline_event(viewer: Any, event: Any) -> bool:
    """Press and drag on the playback timeline seeks (True when the event was the timeline's)."""
    pb = viewer.playback
    if pb is None or viewer._hud is None or viewer._hud.timeline_rect is None:
        return False
    w, h = viewer._canvas.get_logical_size()
    x0, y0, x1, y1 = viewer._hud.timeline_rect
    sy = h - event.y
    inside = y0 <= sy <= y1 and x0 - 8 <= event.x <= x1 + 8
    if event.type == "pointer_down" and inside:
        viewer._dragging_timeline = True
    if not viewer._dragging_timeline:
        return False
    f = (event.x - x0) / max(x1 - x0, 1)
    pb.playing = False
    pb.seek(int(round(np.clip(f, 0, 1) * (len(pb) - 1))))
    if event.type == "pointer_up":
        viewer._dragging_timeline = False
    return True


def on_key(viewer: Any, key: str) -> bool:
    """The viewer's keys (see docs/viewer.md); True when ``key`` was one of them."""
    k = key.lower() if len(key) == 1 else key
    pb = viewer.playback
    if k == "q":
        viewer.close_window()
    elif k == "f":
        viewer.frame_all()
    elif k == "l":
        viewer.show_labels = not viewer.show_labels
    elif k == "h":
        viewer.hud_visible = not viewer.hud_visible
    elif k == "Escape":
        viewer._set_selected(None)
    elif k == "c" and viewer.overlays is not None:
        names = sorted(n for n in viewer.state.numeric_channels() if viewer.state.channels[n].type != "bool")
        if names:
            cur = viewer.overlays.color_by.attribute if viewer.overlays.color_by else None
            nxt = names[(names.index(cur) + 1) % len(names)] if cur in names else names[0]
            viewer.set_color_by(nxt)
    elif pb is not None and k in (" ", "Space"):
        if pb.index >= len(pb) - 1:
            pb.seek(0)
        pb.playing = not pb.playing
        viewer._last_draw = time.perf_counter()
    elif pb is not None and k == "ArrowRight":
        pb.playing = False
        pb.seek(pb.index + 1)
    elif pb is not None and k == "ArrowLeft":
        pb.playing = False
        pb.seek(pb.index - 1)
    elif pb is not None and k == "Home":
        pb.seek(0)
    elif pb is not None and k == "End":
        pb.seek(len(pb) - 1)
    elif pb is not None and k in ("]", "+"):
        pb.speed = min(pb.speed * 2, 256)
    elif pb is not None and k in ("[", "-"):
        pb.speed = max(pb.speed / 2, 1 / 16)
    else:
        return False
    return True


__all__ = ["on_event", "on_key", "timeline_event"]
