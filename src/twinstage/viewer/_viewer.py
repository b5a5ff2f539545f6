"""The Viewer: a Frame sink that draws the live USD scene with overlays, in a window,
a notebook or offscreen, and plays back recordings.

Its parts: the state mirror (``_state``) and what it means on screen (``_overlays``, ``_drives``),
the GPU scene (``_gpu``, ``_shader``) and the draw loop (``_render``), camera framing (``_framing``),
picking and projection (``_pick``), the HUD's content (``_panels``, ``_inspect``, ``_labels``) drawn
by ``_hud``, input (``_input``), recordings (``_playback``), bridge feeds (``_remote``), images and
video (``_capture``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import SceneGeometry, extract
from ..state import Frame
from ._capture import write_png, write_video
from ._drives import Drives
from ._env import RenderQuality
from ._framing import frame_camera
from ._input import on_key
from ._inspect import selection_lines
from ._labels import badges
from ._overlays import Overlays
from ._pick import project, screen_ray
from ._playback import Playback
from ._render import apply_pending, build_scene, ensure_renderer, grab, run_window
from ._state import TwinState, measured_pairs, open_scene, state_from_stage

log = logging.getLogger("twinstage.viewer")


class Viewer:
    """Draws a USD scene and the twin's state on it.

    Use it as a Frame sink of an in-process twin (``twin.add_sink(viewer)``), on a
    static scene (``Viewer("plant.usda")``), on a recording
    (``viewer.open_recording("run.usdc")``) or fed by a bridge client
    (``viewer.connect("ws://…")``). Front ends: ``frontend="offscreen"`` (screenshots,
    video; the default), ``"window"`` (rendercanvas: glfw or Qt), ``"jupyter"``, or
    ``"auto"``.

    Overlays: ``color_by`` (any numeric twin attribute, through ``cmap``, with a
    legend and its unit), alarms (``alarms={"motorTemperature": {"warn": 92,
    "alarm": 95}}``, USD-authored ``twin:<name>:alarmHigh``/``warnHigh``/…, values
    out of their declared limits, and :meth:`set_alarm` from monitors) drawn by
    our WGSL shaders as a pulsing emissive tint with an outline, data quality
    (stale/late greyed, bad hatched), label badges with value and unit, and a
    selection panel (click an asset) with attributes, units, quality and provenance.
    """

    writes_stage = False

    def __init__(
        self,
        scene: Any = None,
        *,
        color_by: str | None = None,
        cmap: str = "viridis",
        vmin: float | None = None,
        vmax: float | None = None,
        alarms: Mapping[str, Any] | None = None,
        labels: bool | Sequence[str] | str = "auto",
        max_labels: int = 24,
        size: tuple[int, int] = (960, 600),
        quality: str | RenderQuality = "auto",
        frontend: str = "offscreen",
        title: str = "twinstage",
        background: tuple[str, str] = ("#15181d", "#3a414b"),
        view_dir: Sequence[float] | None = None,
    ):
        self.options = dict(color_by=color_by, cmap=cmap, vmin=vmin, vmax=vmax, alarms=dict(alarms or {}))
        self.labels = labels
        self.max_labels = int(max_labels)
        self.size = (int(size[0]), int(size[1]))
        self._quality_arg = quality
        self.quality = quality if isinstance(quality, RenderQuality) else RenderQuality.preset(quality if quality != "auto" else "fast")
        self.frontend = frontend
        self.title = title
        self.background = background
        self.view_dir = view_dir
        self.scene_camera = True  # start from the stage's own camera when it has one (and no view_dir is given)
        self.stage: Any = None
        self.geo: SceneGeometry | None = None
        self.state: TwinState | None = None
        self.overlays: Overlays | None = None
        self.playback: Playback | None = None
        self.mode = "empty"
        self.source = ""
        self.twin: Any = None
        self.selected: int | None = None
        self.hud_visible = True
        self.show_labels = True
        self.status_extra = ""
        self.notes: list[str] = []
        self.forecast: Any = None  #: a what-if band shown above the timeline (show_forecast)
        self.forecast_area: dict[str, float] | None = None  #: where it was last drawn (screen px, bottom-left origin)
        self._measures: dict[int, tuple[str, int, str]] = {}
        self._canvas = None
        self._renderer = None
        self._gpu = None
        self._scene = None
        self._camera = None
        self._controller = None
        self._hud = None
        self._kind = ""
        self._effect_time: float | None = None
        self._t0 = time.perf_counter()
        self._last_draw = time.perf_counter()
        self._draw_error: BaseException | None = None
        self._ext_pending: set[int] = set()
        self._lock = threading.Lock()
        self._down: tuple[float, float, int] | None = None
        self._dragging_timeline = False
        self._remote = None
        self._recolor = False
        self._viewport = None
        self.frames_drawn = 0
        self.timings: dict[str, float] = {}
        if scene is not None:
            self.load(scene)

    # -- binding to a scene and its state ------------------------------------------------
    def load(self, scene: Any, *, state: TwinState | None = None, with_state: bool = True) -> Viewer:
        """Show ``scene`` (a path or a ``Usd.Stage``). Without ``state``, the values
        authored in the scene are shown (static view)."""
        stage, self.source = open_scene(scene)
        if state is None and with_state:
            try:
                state = state_from_stage(stage)
            except Exception as exc:  # a malformed twin declaration must not stop the geometry
                self.notes.append(f"twin state not shown: {exc}")
                log.warning("viewer: twin state of %s not shown: %s", self.source, exc)
                state = None
        self._bind(stage, state)
        if self.mode == "empty":
            self.mode = "static"
        return self

    def _bind(self, stage: Any, state: TwinState | None) -> None:
        t0 = time.perf_counter()
        self.stage = stage
        self.state = state
        prims = state.prims if state is not None else ()
        self.geo = extract(stage, twin_paths=prims, segments=self.quality.segments)
        self.timings["extract_s"] = time.perf_counter() - t0
        self.notes = list(dict.fromkeys(self.notes + [n for n in self.geo.notes if n.startswith(("nothing to draw", "material library", "missing referenced file", "MaterialX"))]))
        if state is not None:
            drives = Drives(stage, state, self.geo.n_twin)
            self.overlays = Overlays(state, self.geo.n_twin, alarms=self.options["alarms"], stage=stage,
                                     drives=drives if drives.groups else None)
            self._measures = measured_pairs(stage, state)
            if self.options["color_by"]:
                self.overlays.set_color_by(self.options["color_by"], self.options["cmap"], self.options["vmin"], self.options["vmax"])
        else:
            self.overlays = None
            self._measures = {}
            if self.options["color_by"]:
                self.notes.append(f"--color-by {self.options['color_by']}: this scene has no twin attributes")
        self.selected = None
        if self._renderer is not None:
            build_scene(self)

    # Sink protocol ---------------------------------------------------------------------
    def start(self, twin: Any) -> None:
        """Bind to an in-process twin (``twin.add_sink(viewer)``): its stage and a copy of its state."""
        self.twin = twin
        self.source = twin.source
        self._bind(twin.stage, TwinState.from_table(twin.table))
        self.mode = "live"

    def consume(self, frame: Frame) -> None:
        """Take a Frame (on the twin's thread): values are mirrored now, drawn at the next draw."""
        if self.state is not None and self.playback is None:
            self.state.apply(frame)

    def close(self) -> None:
        """The twin closed (or the feed ends): stop following. A window stays open until the user
        closes it (or :meth:`close_window`), showing the last state."""
        if self._remote is not None:
            try:
                self._remote.close()
            except Exception:
                pass
            self._remote = None
        if self.mode in ("live", "remote"):
            self.status_extra = "(stopped)"
            self.mode = "live-ended"

    def close_window(self) -> None:
        """Close an interactive window (offscreen canvases need no closing)."""
        canvas = self._canvas
        if canvas is not None and self._kind != "offscreen":
            try:
                if not canvas.get_closed():  # rendercanvas may have closed it already (its own Ctrl-C handling)
                    canvas.close()
            except Exception:
                pass

    # -- modes ------------------------------------------------------------------------------
    def open_recording(self, recording: str | os.PathLike[str], scene: Any = None) -> Playback:
        """Play back a recording. The scene defaults to the recording itself (it sublayers the scene)."""
        from pxr import Usd

        if scene is None:
            scene = Usd.Stage.Open(str(recording))
        if isinstance(scene, (str, os.PathLike)):
            from ..usd import open_stage

            scene = open_stage(scene)
        from ..usd._recorder import Recording

        rec = Recording(recording)
        state = state_from_stage(scene, rec.prims)
        if state is None:
            from ..usd import StageError

            raise StageError(f"{recording}: no twin prims to play back")
        self._bind(scene, state)
        self.source = str(recording)
        self.playback = Playback(recording, state)
        self.playback.seek(0)
        self.mode = "playback"
        return self.playback

    def connect(self, url: str, scene: Any = None, **kwargs: Any) -> Any:
        """Follow a remote twin through the bridge's Python client (scene: the same USD file locally)."""
        from ._remote import RemoteFeed

        feed = RemoteFeed(self, url, scene, **kwargs)
        self._remote = feed
        self.mode = "remote"
        return feed

    # -- overlay controls ------------------------------------------------------------------
    def set_color_by(self, attribute: str | None, cmap: str | None = None, vmin: float | None = None, vmax: float | None = None) -> None:
        if self.overlays is None:
            raise ValueError("this scene has no twin attributes to colour by")
        self.overlays.set_color_by(attribute, cmap or self.options["cmap"], vmin, vmax)
        self.options.update(color_by=attribute)
        self._recolor = True

    def set_alarm_limits(self, attribute: str, spec: Any) -> None:
        """Alarm thresholds for an attribute: a number (alarm above), ``(low, high)`` or a dict."""
        if self.overlays is not None:
            self.overlays.set_alarm_limits(attribute, spec)

    def set_alarm(self, path: str, level: int, message: str = "") -> None:
        """Raise (1 warning, 2 alarm) or clear (0) an external alarm on an asset, e.g. from a fidelity monitor."""
        if self.overlays is None or self.state is None or path not in self.state.prim_index:
            raise ValueError(f"{path}: not a twin asset of this view")
        o = self.state.prim_index[path]
        self.overlays.set_external(o, level, message)
        with self._lock:
            self._ext_pending.add(o)

    def select(self, path: str | None) -> None:
        """Select an asset (as a click does) or clear the selection."""
        if path is None:
            self._set_selected(None)
            return
        idx = self.geo.object_index.get(path) if self.geo else None
        if idx is None:
            raise ValueError(f"{path}: not an object of this view")
        self._set_selected(idx)

    def _set_selected(self, idx: int | None) -> None:
        if self._gpu is not None:
            self._gpu.set_selected(self.selected, idx)
        self.selected = idx

    # -- renderer (see _render) ----------------------------------------------------------------
    def _ensure_renderer(self) -> None:
        ensure_renderer(self)

    def frame_all(self, *, margin: float = 0.06) -> None:
        """Point the camera so the whole scene is in view: the 8 corners of the scene's bounds fit inside the
        image with ``margin`` (a fraction of each half-size) to spare, and left of the colour legend when one is
        shown; a stage with a camera is seen through it (unless ``view_dir`` is given), see :mod:`._framing`."""
        if self._camera is None or self._gpu is None:
            return
        legend_px = 120.0 if (self.hud_visible and self.overlays is not None and self.overlays.color_by is not None
                              and float(self.size[0]) > 360) else 0.0
        framed = frame_camera(self._camera, self._gpu, self.size, view_dir=self.view_dir, stage=self.stage,
                              time=self.geo.time if self.geo is not None else None, use_stage_camera=self.scene_camera,
                              reserve_right_px=legend_px, margin=margin)
        if framed and self._canvas is not None:
            self._canvas.request_draw()

    # -- drawing ---------------------------------------------------------------------------------
    def effect_time(self) -> float:
        return self._effect_time if self._effect_time is not None else time.perf_counter() - self._t0

    def sync(self) -> None:
        """Apply pending state (Frames, playback, remote updates) to the GPU buffers now — what every
        draw does first; separate so that the update's own cost can be measured."""
        self._ensure_renderer()
        apply_pending(self)

    def render(self) -> None:
        """Draw one frame now (offscreen, or force a window to redraw)."""
        self._ensure_renderer()
        self._canvas.force_draw() if hasattr(self._canvas, "force_draw") else self._canvas.draw()
        if self._draw_error is not None:
            raise self._draw_error

    def show_forecast(self, result: Any, key: str | None = None) -> None:
        """Show a what-if band (a ``whatif()`` result and its ``Prim.attribute``, or a bridge ``forecast``
        message) ghosted above the timeline; ``None`` hides it."""
        from ._forecast import Forecast

        self.forecast = None if result is None else Forecast.of(result, key)
        self.forecast_area = None

    def screenshot(self, path: str | os.PathLike[str] | None = None, *, time: float | None = None) -> np.ndarray:
        """Render and return the image (H, W, 4 uint8); write it to ``path`` (PNG) when given.

        ``time`` fixes the effect clock (alarm pulses) for reproducible images.
        """
        self._ensure_renderer()
        img = grab(self, time)
        if path is not None:
            write_png(path, img)
        return img

    def record_video(self, path: str | os.PathLike[str], frames: int, *, fps: float = 10.0,
                     step: Callable[[int], Any] | None = None) -> Path:
        """Write ``frames`` frames to ``path`` (.mp4 needs imageio-ffmpeg; .gif works with Pillow).

        ``step(i)`` runs before frame ``i`` (advance a twin, a playback); in playback
        mode the default step advances the recording by ``rate/fps`` ticks a frame.
        """
        return write_video(path, frames, lambda t: self.screenshot(time=t), fps=fps, step=step, playback=self.playback)

    def show(self, *, block: bool = True) -> Any:
        """Open the interactive view: a window (blocks until closed unless ``block=False``) or, in a
        notebook, return the widget to display."""
        if self.frontend == "offscreen":
            self.frontend = "auto"
        self._ensure_renderer()
        return run_window(self, block)

    # -- HUD, input, picking (see _panels, _inspect, _labels, _input, _pick) ------------------------------
    def _badges(self, w: float, h: float) -> list:
        """The label badges for a ``w``×``h`` view (:func:`._labels.badges`)."""
        return badges(self, w, h)

    def _selection_lines(self, o: int) -> list[tuple[str, tuple]]:
        """The inspect panel of object ``o`` (:func:`._inspect.selection_lines`)."""
        return selection_lines(self, o)

    def _on_key(self, key: str) -> bool:
        """Handle a key as the window does (:func:`._input.on_key`)."""
        return on_key(self, key)

    def pick_at(self, x: float, y: float) -> str | None:
        """Select the object under logical pixel (x, y) (top-left origin); returns its path or None."""
        self._ensure_renderer()
        w, h = self._canvas.get_logical_size()
        self._camera.set_view_size(w, h)
        hit = self._gpu.pick(*screen_ray(self._camera.camera_matrix, x, y, w, h))
        self._set_selected(hit[0] if hit else None)
        return self.geo.objects[hit[0]].path if hit else None

    def object_screen_position(self, path: str) -> tuple[float, float] | None:
        """Where an object's centre lands on screen: logical pixels, top-left origin (for tests and tools)."""
        self._ensure_renderer()
        o = self.geo.object_index[path]
        w, h = self._canvas.get_logical_size()
        self._camera.set_view_size(w, h)
        b = self._gpu.object_bounds()[o]
        c = (b[0] + b[1]) / 2 if np.isfinite(b[0, 0]) else self._gpu.object_matrix[o][3, :3] - self._gpu.origin
        xy, ok = project(self._camera.camera_matrix, c[None], w, h)
        if not ok[0]:
            return None
        return float(xy[0, 0]), float(h - xy[0, 1])

    @property
    def camera(self) -> Any:
        self._ensure_renderer()
        return self._camera

    @property
    def canvas(self) -> Any:
        self._ensure_renderer()
        return self._canvas


__all__ = ["Viewer"]
