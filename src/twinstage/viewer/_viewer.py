"""The Viewer: a Frame sink that draws the live USD scene with overlays, in a window,
a notebook or offscreen, and plays back recordings."""

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
from ..state import Frame, Quality
from . import _colormap as cm
from ._env import RenderQuality, ViewerUnavailable, adapter_info, is_software, make_canvas
from ._framing import fit_bounds, fov_showing, scene_camera
from ._state import Drives, Overlays, TwinState, quality_names

log = logging.getLogger("twinstage.viewer")

TEXT = (1.0, 1.0, 1.0, 1.0)
DIM = (0.72, 0.75, 0.80, 1.0)
RED = (1.0, 0.45, 0.40, 1.0)
AMBER = (1.0, 0.75, 0.30, 1.0)
GREY = (0.62, 0.62, 0.66, 1.0)
CYAN = (0.45, 0.85, 1.0, 1.0)


# -- building blocks without a GPU ------------------------------------------------------
def state_from_stage(stage: Any, prims: Sequence[str] | None = None) -> TwinState | None:
    """A :class:`TwinState` of the values authored in a stage (None if it has no twin prims)."""
    from ..state import Declaration, StateTable
    from ..usd import read_asset, read_attributes, twin_prims

    if prims is None:
        prims = [str(p.GetPath()) for p in twin_prims(stage)]
    if not prims:
        return None
    decls = []
    for path in prims:
        prim = stage.GetPrimAtPath(path)
        if not prim:
            from ..usd import StageError

            raise StageError(f"{path}: not in the scene (a recording or remote twin of another scene?)")
        read_asset(prim)
        for d, value in read_attributes(prim):
            decls.append(Declaration(path, d.name, d.type, value, d.unit, d.min, d.max, d.role, d.drives, d.description))
    return TwinState.from_table(StateTable(list(prims), decls))


def measured_pairs(stage: Any, state: TwinState) -> dict[int, tuple[str, int, str]]:
    """Sensors: prim index → (its measured channel, source prim index, source channel) from ``twin:measures``."""
    out: dict[int, tuple[str, int, str]] = {}
    if stage is None or state is None:
        return out
    for pi, path in enumerate(state.prims):
        prim = stage.GetPrimAtPath(path)
        rel = prim.GetRelationship("twin:measures") if prim else None
        targets = rel.GetForwardedTargets() if rel else []
        if not targets:
            continue
        t = targets[0]
        if not t.IsPropertyPath() or not t.name.startswith("twin:"):
            continue
        src_pi = state.prim_index.get(str(t.GetPrimPath()))
        src_ch = t.name[len("twin:"):]
        if src_pi is None or src_ch not in state.channels:
            continue
        mine = [n for n in state.attributes(pi) if state.channels[n].role[state.row(pi, n)] == "measured"]
        if mine:
            out[pi] = (mine[0], src_pi, src_ch)
    return out


class Playback:
    """A recording (``Recorder`` output) read tick by tick into a :class:`TwinState`."""

    def __init__(self, path: str | os.PathLike[str], state: TwinState):
        from ..usd._recorder import Recording
        from ..usd._writer import COLUMN_NS

        self.recording = rec = Recording(path)
        self.path = Path(path)
        self.state = state
        if tuple(rec.prims) != tuple(state.prims):
            from ..usd import StageError

            missing = sorted(set(rec.prims) - set(state.prims))
            raise StageError(f"{path}: the recording's prims do not match the scene's twin prims"
                                    f"{' (e.g. ' + missing[0] + ')' if missing else ''}; open the scene it was recorded from")
        self.times = rec.times
        if not len(self.times):
            from ..usd import StageError

            raise StageError(f"{path}: the recording holds no ticks")
        self.rate = float(rec.rate or 10.0)
        self.index = 0
        self.playing = False
        self.speed = 1.0
        self._pos = 0.0
        sp = rec.state_path
        self._paths = {name: (sp.AppendProperty(f"{COLUMN_NS}:{name}"), sp.AppendProperty(f"{COLUMN_NS}:{name}:quality"))
                       for name in rec.channels if name in state.channels}
        self._sim = sp.AppendProperty(f"{COLUMN_NS}:simTime")
        self._markers: np.ndarray | None = None
        self.provenance = rec.provenance

    def __len__(self) -> int:
        return len(self.times)

    @property
    def tick(self) -> int:
        return int(self.times[self.index])

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
        layer = self.recording.layer
        t = float(self.times[i])
        vals, qual = {}, {}
        for name, (vp, qp) in self._paths.items():
            v = layer.QueryTimeSample(vp, t)
            q = layer.QueryTimeSample(qp, t)
            if v is not None:
                vals[name] = np.asarray(v)
            if q is not None:
                qual[name] = np.asarray(q, dtype=np.uint8)
        sim = layer.QueryTimeSample(self._sim, t)
        return vals, qual, float(sim) if sim is not None else t / self.rate

    def seek(self, i: int) -> None:
        i = int(np.clip(i, 0, len(self.times) - 1))
        self.index = i
        self._pos = float(i)
        vals, qual, sim = self.read(i)
        self.state.set_all(vals, qual, tick=int(self.times[i]), sim_time=sim)

    def advance(self, dt_wall: float) -> bool:
        """Move on by ``dt_wall`` seconds at ``speed``; returns True if the tick changed."""
        if not self.playing:
            return False
        self._pos += dt_wall * self.rate * self.speed
        i = int(self._pos)
        if i >= len(self.times) - 1:
            i = len(self.times) - 1
            self.playing = False
        if i != self.index:
            self.seek(i)
            self._pos = max(self._pos, float(i))
            return True
        return False

    def markers(self, overlays: Overlays, limit: int = 2_000_000) -> np.ndarray:
        """Fractions of the timeline where an alarm starts (empty if the recording is too big to scan)."""
        if self._markers is not None:
            return self._markers
        n_ticks = len(self.times)
        total = n_ticks * sum(len(self.state.channels[n]) for n in self._paths)
        if total > limit or n_ticks < 2:
            self._markers = np.zeros(0)
            return self._markers
        alarm = np.zeros(n_ticks, bool)
        for name in self._paths:
            q = self.recording.channel(name, quality=True)
            a = (q & np.uint8(Quality.OUT_OF_RANGE)).any(axis=1)
            arr = overlays._arrays.get(name)
            if arr is not None:
                v = self.recording.channel(name).astype(np.float64)
                wl, wh, al, ah = arr
                a |= ((v <= al) | (v >= ah)).any(axis=1)
            alarm |= a
        starts = np.flatnonzero(alarm & ~np.r_[False, alarm[:-1]])
        self._markers = starts / max(n_ticks - 1, 1)
        return self._markers


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
        from pxr import Usd

        if isinstance(scene, (str, os.PathLike)):
            from ..usd import open_stage

            stage = open_stage(scene)
            self.source = str(scene)
        elif isinstance(scene, Usd.Stage):
            stage = scene
            root = stage.GetRootLayer()
            self.source = root.realPath or root.identifier
        else:
            raise TypeError(f"scene must be a USD path or a Usd.Stage, not {type(scene).__name__}")
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
            self._build_scene()

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
            if self.selected is not None:
                self._gpu.set_state(np.array([self.selected]), selected=0.0)
            if idx is not None:
                self._gpu.set_state(np.array([idx]), selected=1.0)
        self.selected = idx

    # -- renderer -------------------------------------------------------------------------------
    def _ensure_renderer(self) -> None:
        if self._renderer is not None:
            return
        info = adapter_info()  # raises ViewerUnavailable with a clear message
        if self._quality_arg == "auto":
            self.quality = RenderQuality.preset("auto", software=is_software(info))
        import pygfx as gfx

        from ._hud import Hud

        canvas, kind = make_canvas(self.frontend, self.size, self.title, self.quality.pixel_ratio)
        self._canvas, self._kind = canvas, kind
        if kind != "offscreen":
            try:
                canvas.set_update_mode("ondemand", max_fps=self.quality.max_fps)
            except Exception:
                pass
        self._renderer = gfx.WgpuRenderer(canvas, pixel_ratio=self.quality.pixel_ratio, ppaa=self.quality.ppaa)
        self._hud = Hud()
        self._camera = gfx.PerspectiveCamera(45)
        self._controller = gfx.OrbitController(self._camera)
        self._viewport = gfx.Viewport(self._renderer)
        self._renderer.add_event_handler(self._on_event, "pointer_down", "pointer_move", "pointer_up", "wheel", "key_down",
                                         "key_up", "before_render")
        self._build_scene()
        canvas.request_draw(self._draw)

    def _build_scene(self) -> None:
        import pygfx as gfx

        from ._gpu import GpuScene, card_objects

        t0 = time.perf_counter()
        scene = gfx.Scene()
        scene.add(gfx.Background.from_color(*self.background))
        self._gpu = GpuScene(self.geo, lighting=self.quality.lighting)
        scene.add(self._gpu.group)
        for ob in card_objects(self.geo, self._gpu.origin):
            scene.add(ob)
        self._scene = scene
        self.timings["gpu_build_s"] = time.perf_counter() - t0
        if self.overlays is not None:
            self.state.mark_all_dirty()
            self._recolor = True
        if self.selected is not None:
            self._gpu.set_state(np.array([self.selected]), selected=1.0)
        self.frame_all()

    def frame_all(self, *, margin: float = 0.06) -> None:
        """Point the camera so the whole scene is in view: the 8 corners of the scene's bounds fit inside the
        image with ``margin`` (a fraction of each half-size) to spare, and left of the colour legend when one is shown."""
        if self._camera is None or self._gpu is None:
            return
        wb = self._gpu.world_bounds()
        up = np.array(self._gpu.up, dtype=float)
        if self.view_dir is not None:
            vd = np.asarray(self.view_dir, dtype=float)
        elif self._gpu.up[2] == 1.0:  # Z up: from the front (-Y), left and above
            vd = np.array([0.35, 1.0, -0.75])
        else:  # Y up: from +Z (front), right and above
            vd = np.array([-0.45, -0.7, -1.0])
        if wb is None:
            self._camera.show_object((0.0, 0.0, 0.0, 1.0), view_dir=tuple(vd), up=tuple(up), scale=0.9)
            return
        w, h = (float(x) for x in self.size)
        if self.view_dir is None and self.scene_camera and self._use_scene_camera():
            return
        legend_px = 120.0 if (self.hud_visible and self.overlays is not None and self.overlays.color_by is not None
                              and w > 360) else 0.0
        pos, target = fit_bounds(wb, vd, up, fov_deg=float(self._camera.fov), size=(w, h), margin=margin, reserve_right_px=legend_px)
        self._camera.local.position = tuple(pos)
        self._camera.show_pos(tuple(target), up=tuple(up))
        if self._canvas is not None:
            self._canvas.request_draw()

    def _use_scene_camera(self) -> bool:
        """Look through the stage's first camera, as usdview does (False when it has none or it is unusable)."""
        cam = scene_camera(self.stage, self.geo.time if self.geo is not None else None)
        if cam is None:
            return False
        pos, direction, up, tan_h, tan_v = cam
        fov = fov_showing(tan_h, tan_v, *(float(x) for x in self.size))
        pos = pos - self._gpu.origin
        wb = self._gpu.world_bounds()
        centre = (wb[0] + wb[1]) / 2 if wb is not None else pos + direction
        dist = float(np.dot(centre - pos, direction))
        if not dist > 0:
            dist = float(np.linalg.norm(wb[1] - wb[0])) if wb is not None else 1.0
        self._camera.fov = fov
        self._camera.local.position = tuple(pos)
        self._camera.show_pos(tuple(pos + direction * dist), up=tuple(up))
        if self._canvas is not None:
            self._canvas.request_draw()
        return True

    # -- drawing ---------------------------------------------------------------------------------
    def effect_time(self) -> float:
        return self._effect_time if self._effect_time is not None else time.perf_counter() - self._t0

    def _apply_pending(self) -> None:
        gpu = self._gpu
        if self._remote is not None:
            self._remote.poll()
        if self.playback is not None:
            now = time.perf_counter()
            self.playback.advance(now - self._last_draw)
            self._last_draw = now
        if self.overlays is not None:
            dirty = self.state.take_dirty()
            recolor = self._recolor
            self._recolor = False
            if recolor and self.overlays.color_by is None:
                self.overlays.clear_color(gpu)
            if dirty or recolor:
                self.overlays.update(gpu, dirty, recolor=recolor)
            with self._lock:
                ext, self._ext_pending = self._ext_pending, set()
            if ext:
                self.overlays.refresh_external(gpu, ext)
        outlined = set(self.overlays.alarm_objects().tolist()) if self.overlays is not None else set()
        if self.selected is not None:
            outlined.add(self.selected)
        gpu.set_outlined(outlined)

    def sync(self) -> None:
        """Apply pending state (Frames, playback, remote updates) to the GPU buffers now — what every
        draw does first; separate so that the update's own cost can be measured."""
        self._ensure_renderer()
        self._apply_pending()

    def _draw(self) -> None:
        try:
            t0 = time.perf_counter()
            self._apply_pending()
            t1 = time.perf_counter()
            self._gpu.set_time(self.effect_time())
            w, h = self._canvas.get_logical_size()
            self._camera.set_view_size(w, h)
            self._renderer.render(self._scene, self._camera, flush=False)
            if self.hud_visible:
                self._update_hud(w, h)
                self._renderer.render(self._hud.scene, self._hud.camera, clear=False)
            else:
                self._renderer.flush()
            self.timings["update_s"] = t1 - t0
            self.frames_drawn += 1
            self._draw_error = None
            if self._kind != "offscreen" and self._animating():
                self._canvas.request_draw()
        except Exception as exc:  # keep the window alive; screenshot() re-raises
            self._draw_error = exc
            log.exception("viewer: draw failed")
            raise

    def _animating(self) -> bool:
        if self.mode in ("live", "remote"):
            return True
        if self.playback is not None and self.playback.playing:
            return True
        return bool(self.overlays is not None and len(self.overlays.alarm_objects()))

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
        self._effect_time = time
        try:
            if self._kind == "offscreen":
                img = np.asarray(self._canvas.draw())
            else:
                self._canvas.force_draw()
                img = np.asarray(self._renderer.snapshot())
        finally:
            self._effect_time = None
        if self._draw_error is not None:
            raise self._draw_error
        img = np.ascontiguousarray(img)
        if path is not None:
            import imageio.v3 as iio

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, img[..., :3])
        return img

    def record_video(self, path: str | os.PathLike[str], frames: int, *, fps: float = 10.0,
                     step: Callable[[int], Any] | None = None) -> Path:
        """Write ``frames`` frames to ``path`` (.mp4 needs imageio-ffmpeg; .gif works with Pillow).

        ``step(i)`` runs before frame ``i`` (advance a twin, a playback); in playback
        mode the default step advances the recording by ``rate/fps`` ticks a frame.
        """
        import imageio.v2 as imageio

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if step is None and self.playback is not None:
            pb = self.playback
            per = max(1, int(round(pb.rate * pb.speed / fps)))
            def step(i: int) -> None:
                pb.seek(min(i * per, len(pb) - 1))
        if path.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm"):
            import importlib.util

            if importlib.util.find_spec("imageio_ffmpeg") is None:
                raise ViewerUnavailable(f"{path}: writing {path.suffix} needs imageio-ffmpeg (pip install imageio-ffmpeg); "
                                        "or write a .gif")
            writer = imageio.get_writer(str(path), fps=fps, codec="libx264", quality=7, macro_block_size=8)
        else:
            writer = imageio.get_writer(str(path), mode="I", duration=1000.0 / fps, loop=0)
        try:
            for i in range(frames):
                if step is not None:
                    step(i)
                img = self.screenshot(time=i / fps)
                writer.append_data(img[..., :3])
        finally:
            writer.close()
        return path

    def show(self, *, block: bool = True) -> Any:
        """Open the interactive view: a window (blocks until closed unless ``block=False``) or, in a
        notebook, return the widget to display."""
        if self.frontend == "offscreen":
            self.frontend = "auto"
        self._ensure_renderer()
        if self._kind == "offscreen":
            raise ViewerUnavailable("no display for a window here: use screenshot() or record_video()")
        if self._kind == "jupyter":
            return self._canvas
        if block:
            from rendercanvas.auto import loop

            loop.run()
        return self._canvas

    # -- HUD ------------------------------------------------------------------------------------
    def _project(self, pts: np.ndarray, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
        m = np.asarray(self._camera.camera_matrix)
        p = np.c_[pts, np.ones(len(pts))] @ m.T
        wv = p[:, 3]
        ok = wv > 1e-9
        ndc = p[:, :3] / np.where(ok, wv, 1.0)[:, None]
        ok &= (ndc[:, 2] >= 0) & (ndc[:, 2] <= 1)
        xy = np.stack([(ndc[:, 0] + 1) / 2 * w, (ndc[:, 1] + 1) / 2 * h], axis=1)
        return xy, ok

    def _label_value(self, o: int) -> tuple[str, Any, int, str] | None:
        """(attribute, value, quality, unit) a badge shows for twin object ``o``."""
        st = self.state
        names = st.attributes(o)
        if not names:
            return None
        pick = None
        if isinstance(self.labels, (list, tuple)):
            pick = next((n for n in self.labels if n in names), None)
        cb = self.overlays.color_by if self.overlays else None
        if pick is None and cb is not None and cb.attribute in names:
            pick = cb.attribute
        if pick is None and self.overlays is not None:
            lv = [(self.overlays.channel_level(n, o), n) for n in names]
            lv = [x for x in lv if x[0]]
            if lv:
                pick = max(lv)[1]
        if pick is None:
            meas = [n for n in names if st.channels[n].role[st.row(o, n)] == "measured"]
            state_ = [n for n in names if st.channels[n].role[st.row(o, n)] == "state" and st.channels[n].type != "vec3"]
            inputs = [n for n in names if st.channels[n].role[st.row(o, n)] == "input" and st.channels[n].type != "vec3"]
            pick = (meas or state_ or inputs or [None])[0]
        if pick is None:
            return None
        v = st.value(o, pick)
        if v is None:
            return None
        return pick, v[0], v[1], st.channels[pick].unit

    def _badges(self, w: float, h: float) -> list:
        from ._hud import Badge

        if not self.show_labels or self.labels is False or self.overlays is None or not self.quality.labels:
            return []
        ov = self.overlays
        n = ov.n
        if n == 0:
            return []
        alarmed = set(ov.alarm_objects().tolist())
        if n <= self.max_labels or self.labels not in ("auto", True):
            cand = list(range(n))
        else:
            cand = sorted(alarmed)[: self.max_labels]
        if self.selected is not None and self.selected < n and self.selected not in cand:
            cand.append(self.selected)
        if not cand:
            return []
        b = self._gpu.object_bounds()[cand]
        up = np.array(self._gpu.up)
        has = np.isfinite(b[:, 0, 0])
        centre = np.where(has[:, None], (b[:, 0] + b[:, 1]) / 2, 0.0)
        top = np.where(has[:, None], centre + up[None, :] * (((b[:, 1] - b[:, 0]) @ up) / 2)[:, None], 0.0)
        # objects without geometry: their origin
        for k, o in enumerate(cand):
            if not has[k]:
                top[k] = self._gpu.object_matrix[o][3, :3] - self._gpu.origin
        xy, ok = self._project(top, w, h)
        out = []
        cb = ov.color_by
        for k, o in enumerate(cand):
            if not ok[k]:
                continue
            lv = self._label_value(o)
            if lv is None:
                continue
            attr, value, q, unit = lv
            name = self.state.prims[o].rsplit("/", 1)[-1]
            val = cm.fmt_value(value, unit) if not isinstance(value, tuple) else ", ".join(f"{c:.2f}" for c in value)
            text = f"{name}  {val}" if cb is not None and attr == cb.attribute else f"{name}  {attr} {val}"
            if o in self._measures:
                ch, src, src_ch = self._measures[o]
                sim = self.state.value(src, src_ch)
                if sim is not None and isinstance(value, float) and isinstance(sim[0], float):
                    if abs(sim[0] - value) > 0.005 * max(abs(value), 1e-9):
                        text += f" (sim {cm.fmt_value(sim[0])})"
            if q & (Quality.BAD | Quality.STALE | Quality.LATE):
                text += "  " + "/".join(quality_names(q & (Quality.BAD | Quality.STALE | Quality.LATE))).upper()
            level = ov.object_level(o)
            prio = (100 if o == self.selected else 0) + level * 10 + (1.0 / (1 + k))
            out.append(Badge(o, float(xy[k, 0]), float(xy[k, 1]), text, level, ov.object_quality(o), o == self.selected, prio))
        return out

    def _status(self) -> str:
        st = self.state
        if self.mode in ("live", "live-ended"):
            s = f"LIVE  tick {st.tick}  t = {st.sim_time:.1f} s" if st else "LIVE"
        elif self.mode == "playback" and self.playback is not None:
            s = f"PLAYBACK  {Path(self.source).name}"
        elif self.mode == "remote":
            s = f"REMOTE  {getattr(self._remote, 'url', '')}  tick {st.tick if st else '-'}"
            if self._remote is not None and getattr(self._remote, "status", ""):
                s += f"  {self._remote.status}"
        else:
            s = f"{Path(self.source).name}" if self.source else "twinstage"
        return s + (f"  {self.status_extra}" if self.status_extra else "")

    def _update_hud(self, w: float, h: float) -> None:
        hud = self._hud
        hud.begin(w, h)
        y = h - 10
        y = hud.panel([(self._status(), TEXT)], 10, y, size=12) - 6
        if self.selected is not None:
            y = hud.panel(self._selection_lines(self.selected), 10, y, size=11) - 6
        ov = self.overlays
        if ov is not None and ov.color_by is not None:
            cb = ov.color_by
            unit = cm.unit_label(self.state.channels[cb.attribute].unit)
            hud.legend(f"{cb.attribute}" + (f" [{unit}]" if unit else ""), cb.vmin, cb.vmax, cb.lut)
        if ov is not None:
            alarmed = ov.alarm_objects()
            if len(alarmed):
                n_alarm = sum(1 for o in alarmed.tolist() if ov.object_level(o) >= 2)
                n_warn = len(alarmed) - n_alarm
                head = ", ".join(x for x in (f"{n_alarm} alarm{'s' if n_alarm != 1 else ''}" if n_alarm else "",
                                             f"{n_warn} warning{'s' if n_warn != 1 else ''}" if n_warn else "") if x)
                lines = [(head, RED if n_alarm else AMBER)]
                for o in alarmed[:5].tolist():
                    lines.append((self._alarm_line(o), RED if ov.object_level(o) >= 2 else AMBER))
                if len(alarmed) > 5:
                    lines.append((f"… and {len(alarmed) - 5} more", DIM))
                hud.panel(lines, w - 10, h - 10, size=12, align="right")
        if ov is not None:
            hud.badges(self._badges(w, h), self.max_labels)
        if self.playback is not None:
            pb = self.playback
            frac = pb.index / max(len(pb) - 1, 1)
            sim = self.state.sim_time
            hud.timeline(frac, f"tick {pb.tick}  ({pb.index + 1}/{len(pb)})   t = {sim:.1f} s   x{pb.speed:g}   "
                               f"[space] play  [←/→] step  [home/end]", pb.playing, pb.markers(ov) if ov else None)
        if self.forecast is not None:
            from ._forecast import draw

            self.forecast_area = draw(hud, self.forecast, w, h)
        lines = [ln for note in self.notes[:3] for ln in _wrap(note, max(20, int(w / 7.5)))]
        top = h / 2 if not self.geo or self.geo.parts or self.geo.prototypes else h / 2 + 9 * len(lines)
        if self.geo is not None and (self.geo.parts or self.geo.prototypes):
            top = 30 + 18 * len(lines)  # a scene is drawn: notes go to the bottom
        for k, ln in enumerate(lines):
            hud.text(ln, w / 2, top - 18 * k, size=13, color=DIM, anchor="middle-center")
        hud.end()

    def _alarm_line(self, o: int) -> str:
        ov, st = self.overlays, self.state
        name = st.prims[o].rsplit("/", 1)[-1]
        parts = []
        for n in st.attributes(o):
            lv = ov.channel_level(n, o)
            if lv:
                v = st.value(o, n)
                parts.append(f"{n} {cm.fmt_value(v[0], st.channels[n].unit)}" + (" (warn)" if lv == 1 else ""))
        ext = ov.external.get(o)
        if ext:
            parts.append(ext[1] or "external alarm")
        return f"{name}: " + ", ".join(parts[:2])

    def _selection_lines(self, o: int) -> list[tuple[str, tuple]]:
        geo = self.geo
        ob = geo.objects[o]
        lines: list[tuple[str, tuple]] = [(ob.path, CYAN)]
        prim = self.stage.GetPrimAtPath(ob.path) if self.stage is not None else None
        meta = []
        if prim:
            for a, label in (("twin:kind", "kind"), ("twin:model", "model"), ("twin:assetId", "id")):
                at = prim.GetAttribute(a)
                v = at.Get() if at else None
                if v:
                    meta.append(f"{label} {v}")
        if not meta:
            meta.append(ob.type_name or "prim")
            if ob.kind:
                meta.append(f"kind {ob.kind}")
        lines.append(("  ".join(meta), DIM))
        if ob.layer:
            lines.append((f"defined in {Path(ob.layer).name}", DIM))
        st = self.state
        if ob.twin and st is not None:
            meas_of = {sc: (p, c) for p, (c, src, sc) in self._measures.items() if src == o}
            names = list(st.attributes(o))
            ages = self._freshness()
            for n in names:
                if n.endswith("Std") and n[:-3] in names:
                    continue  # shown as ± on its attribute
                v = st.value(o, n)
                ch = st.channels[n]
                r = st.row(o, n)
                if isinstance(v[0], tuple):
                    val = "(" + ", ".join(f"{c:.2f}" for c in v[0]) + f") {cm.unit_label(ch.unit)}"
                else:
                    val = cm.fmt_value(v[0], ch.unit)
                q = v[1]
                flags = quality_names(q)
                lvl = self.overlays.channel_level(n, o) if self.overlays else 0
                tag = "  ALARM" if lvl >= 2 else "  warn" if lvl == 1 else ""
                color = RED if lvl >= 2 else AMBER if lvl == 1 else GREY if q & (Quality.BAD | Quality.STALE | Quality.LATE) else TEXT
                extra = f"  [{', '.join(flags)}]" if flags else ""
                sd = st.value(o, f"{n}Std") if f"{n}Std" in names else None
                if sd is not None and isinstance(sd[0], float) and sd[0] > 0:  # an estimate's uncertainty (assimilation)
                    val = val.replace(" ", f" ± {cm.fmt_value(sd[0], '').strip()} ", 1) if " " in val else f"{val} ± {sd[0]:.3g}"
                age = ages.get(n)
                if age is not None and r < len(age) and not np.isnan(age[r]):  # fed by telemetry: age of its last good sample
                    extra += "  no sample yet" if np.isinf(age[r]) else f"  age {age[r]:.1f} s"
                line = f"{n} = {val}  {ch.role[r]}{tag}{extra}"
                if n in meas_of:  # simulated here, measured by a sensor
                    p, c = meas_of[n]
                    mv = st.value(p, c)
                    if mv is not None and not isinstance(mv[0], tuple):
                        line += f"  (measured {cm.fmt_value(mv[0], st.channels[c].unit)})"
                if o in self._measures and self._measures[o][0] == n:  # a sensor reading: show the model's value
                    _, src, sc = self._measures[o]
                    sv = st.value(src, sc)
                    if sv is not None and not isinstance(sv[0], tuple):
                        line += f"  (simulated {cm.fmt_value(sv[0], st.channels[sc].unit)}"
                        if isinstance(v[0], float) and isinstance(sv[0], float):
                            line += f", Δ {v[0] - sv[0]:+.3g}"
                        line += ")"
                lines.append((line, color))
            ext = self.overlays.external.get(o) if self.overlays else None
            if ext:
                lines.append((f"alarm: {ext[1] or 'raised externally'}", RED))
            lines.append((self._provenance_line(o), DIM))
        return lines

    def _freshness(self) -> dict:
        """Per-channel age (s) of the last good telemetry sample, from a live twin (empty otherwise)."""
        fn = getattr(self.twin, "freshness", None) if self.twin is not None else None
        try:
            return dict(fn()) if callable(fn) else {}
        except Exception:
            return {}

    def _provenance_line(self, o: int) -> str:
        st = self.state
        model = ""
        if self.twin is not None:
            asset = self.twin.assets.get(st.prims[o]) if hasattr(self.twin, "assets") else None
            if asset is not None and asset.model and asset.model in self.twin.models:
                from ..models import parameters_hash

                m = self.twin.models[asset.model]
                model = f"model {asset.model} #{parameters_hash(m.parameters())[:8]}"
        if self.mode == "playback" and self.playback is not None:
            prov = self.playback.provenance
            tool = prov.get("tool", "")
            return f"recorded tick {st.tick} by {tool or 'twinstage'}; params {str(prov.get('parametersHash', ''))[:8]}"
        src = "live twin" if self.mode.startswith("live") else "remote twin" if self.mode == "remote" else "authored values"
        return f"{src}, tick {st.tick}" + (f"; {model}" if model else "")

    # -- input ------------------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        t = event.type
        ctrl = self._controller
        if t == "before_render":
            ctrl.handle_event(event, self._viewport)
            return
        if t == "key_down":
            if self._on_key(event.key):
                self._canvas.request_draw()
                return
            ctrl.handle_event(event, self._viewport)
            return
        if t in ("pointer_down", "pointer_move", "pointer_up") and self._timeline_event(event):
            self._canvas.request_draw()
            return
        if t == "pointer_down":
            self._down = (event.x, event.y, event.button)
        elif t == "pointer_up" and self._down is not None:
            x0, y0, b = self._down
            self._down = None
            if b == 1 and abs(event.x - x0) + abs(event.y - y0) < 5:
                self.pick_at(event.x, event.y)
                self._canvas.request_draw()
        ctrl.handle_event(event, self._viewport)

    def _timeline_event(self, event: Any) -> bool:
        pb = self.playback
        if pb is None or self._hud is None or self._hud.timeline_rect is None:
            return False
        w, h = self._canvas.get_logical_size()
        x0, y0, x1, y1 = self._hud.timeline_rect
        sy = h - event.y
        inside = y0 <= sy <= y1 and x0 - 8 <= event.x <= x1 + 8
        if event.type == "pointer_down" and inside:
            self._dragging_timeline = True
        if not self._dragging_timeline:
            return False
        f = (event.x - x0) / max(x1 - x0, 1)
        pb.playing = False
        pb.seek(int(round(np.clip(f, 0, 1) * (len(pb) - 1))))
        if event.type == "pointer_up":
            self._dragging_timeline = False
        return True

    def _on_key(self, key: str) -> bool:
        k = key.lower() if len(key) == 1 else key
        pb = self.playback
        if k == "q":
            self.close_window()
        elif k == "f":
            self.frame_all()
        elif k == "l":
            self.show_labels = not self.show_labels
        elif k == "h":
            self.hud_visible = not self.hud_visible
        elif k == "Escape":
            self._set_selected(None)
        elif k == "c" and self.overlays is not None:
            names = sorted(n for n in self.state.numeric_channels() if self.state.channels[n].type != "bool")
            if names:
                cur = self.overlays.color_by.attribute if self.overlays.color_by else None
                nxt = names[(names.index(cur) + 1) % len(names)] if cur in names else names[0]
                self.set_color_by(nxt)
        elif pb is not None and k in (" ", "Space"):
            if pb.index >= len(pb) - 1:
                pb.seek(0)
            pb.playing = not pb.playing
            self._last_draw = time.perf_counter()
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

    def pick_at(self, x: float, y: float) -> str | None:
        """Select the object under logical pixel (x, y) (top-left origin); returns its path or None."""
        self._ensure_renderer()
        w, h = self._canvas.get_logical_size()
        self._camera.set_view_size(w, h)
        inv = np.linalg.inv(np.asarray(self._camera.camera_matrix))
        nx, ny = 2 * x / w - 1, 1 - 2 * y / h
        p0 = inv @ np.array([nx, ny, 0.0, 1.0])
        p1 = inv @ np.array([nx, ny, 1.0, 1.0])
        p0, p1 = p0[:3] / p0[3], p1[:3] / p1[3]
        d = p1 - p0
        d /= np.linalg.norm(d)
        hit = self._gpu.pick(p0, d)
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
        xy, ok = self._project(c[None], w, h)
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


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [text]


def run_twin_in_thread(twin: Any, *, stop: threading.Event, ticks: int | None = None,
                       script: Callable[[Any], None] | None = None) -> threading.Thread:
    """Tick a twin on a background thread (the GUI owns the main thread) until ``stop`` or ``ticks``."""

    def loop() -> None:
        n = 0
        try:
            while not stop.is_set() and (ticks is None or n < ticks):
                if script is not None:
                    script(twin)
                twin.run(ticks=1)
                n += 1
        except Exception:
            log.exception("viewer: the twin thread stopped")

    th = threading.Thread(target=loop, name="twinstage-twin", daemon=True)
    th.start()
    return th


__all__ = ["Playback", "Viewer", "measured_pairs", "run_twin_in_thread", "state_from_stage"]
