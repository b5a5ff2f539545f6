"""``twinstage view``: the viewer from the command line (the CLI module only wires this in), and running a
twin beside a window: :func:`run_twin_in_thread` ticks it on a background thread while the GUI owns the main one."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("twinstage.viewer")

#: exit status when the viewer cannot run here (no GPU adapter, no display); the twin itself is fine
EXIT_UNAVAILABLE = 3


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 960x600, got {text!r}") from None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range 16..16384")
    return w, h


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.replace(",", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, e.g. 20:95, got {text!r}") from None
    if not hi > lo:
        raise argparse.ArgumentTypeError(f"range {text!r}: HIGH must be above LOW")
    return lo, hi


def parse_alarm(text: str) -> tuple[str, Any]:
    """``ATTR=95`` (alarm above 95) or ``ATTR=warn:90,alarm:95,warn_low:10,alarm_low:5``."""
    name, eq, spec = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"--alarm {text!r}: expected ATTR=VALUE or ATTR=warn:V,alarm:V")
    try:
        if ":" not in spec:
            return name, float(spec)
        out = {}
        for part in spec.split(","):
            k, _, v = part.partition(":")
            if k not in ("warn", "alarm", "warn_low", "alarm_low", "warn_high", "alarm_high"):
                raise ValueError(k)
            out[k] = float(v)
        return name, out
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alarm {text!r}: expected ATTR=VALUE or ATTR=warn:V,alarm:V[,warn_low:V,alarm_low:V]") from None


def add_parser(sub: Any, *, count: Any = int, positive: Any = float) -> argparse.ArgumentParser:
    v = sub.add_parser("view", help="show a scene live, play back a recording, or follow a remote twin (window or offscreen)",
                       description="Live (in-process twin), playback (--record) or remote (--connect). With --screenshot or "
                                   "--video it renders offscreen and exits; otherwise it opens a window.")
    v.add_argument("scene", help="USD scene (for --connect: the same scene locally; '-' builds boxes from the server's records)")
    mode = v.add_mutually_exclusive_group()
    mode.add_argument("--record", metavar="RUN.usdc", help="play back this recording of the scene")
    mode.add_argument("--connect", metavar="ws://HOST:PORT/", help="follow a twin served by `twinstage serve`")
    v.add_argument("--token", help="bridge token secret (--connect)")
    out = v.add_mutually_exclusive_group()
    out.add_argument("--screenshot", metavar="OUT.png", help="render offscreen to a PNG and exit")
    out.add_argument("--video", metavar="OUT.mp4", help="render offscreen to a video (.mp4 needs imageio-ffmpeg; .gif works) and exit")
    v.add_argument("--color-by", metavar="ATTR", help="colour assets by this numeric twin attribute")
    v.add_argument("--cmap", default="viridis", help="colormap: viridis, inferno, coolwarm, turbo (default viridis)")
    v.add_argument("--range", type=_range, metavar="LOW:HIGH", help="colormap range (default: declared limits or the data's range)")
    v.add_argument("--alarm", type=parse_alarm, action="append", metavar="ATTR=SPEC",
                   help="alarm thresholds, e.g. vibration1=warn:0.3,alarm:0.4")
    v.add_argument("--size", type=_size, default=(960, 600), metavar="WxH", help="window / image size in logical pixels (default 960x600)")
    v.add_argument("--quality", default="auto", choices=("auto", "fast", "balanced", "high", "flat"),
                   help="render quality (auto: fast on software rendering, high on a GPU)")
    v.add_argument("--select", metavar="PRIM", help="select this prim (its attributes panel shows)")
    v.add_argument("--ticks", type=count, default=0, help="live: ticks to run before the screenshot (default 0)")
    v.add_argument("--rate", type=positive, default=10.0, help="live: ticks per sim second (default 10)")
    v.add_argument("--tick", type=int, help="playback: show this recorded tick (default: the last)")
    v.add_argument("--frames", type=count, default=60, help="video: number of frames (default 60)")
    v.add_argument("--fps", type=positive, default=10.0, help="video: frames per second (default 10)")
    v.add_argument("--frontend", default="auto", choices=("auto", "window", "glfw", "qt"), help="window backend (default auto)")
    return v


def run_view(args: argparse.Namespace) -> int:
    from . import ViewerUnavailable

    try:
        return _run(args)
    except ViewerUnavailable as exc:
        print(f"twinstage view: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ValueError as exc:  # bad --color-by, --select, … (StageError and friends are handled by the CLI)
        from ..models import ModelError
        from ..state import StateError
        from ..units import UnitError
        from ..usd import SchemaError, StageError

        if isinstance(exc, (StageError, SchemaError, StateError, ModelError, UnitError)):
            raise
        print(f"twinstage view: error: {exc}", file=sys.stderr)
        return 2


def _viewer(args: argparse.Namespace, offscreen: bool) -> Any:
    from . import Viewer

    lo, hi = args.range if args.range else (None, None)
    return Viewer(color_by=args.color_by, cmap=args.cmap, vmin=lo, vmax=hi, alarms=dict(args.alarm or []), size=args.size,
                  quality=args.quality, frontend="offscreen" if offscreen else args.frontend,
                  title=f"twinstage — {Path(args.scene).name}")


def _run(args: argparse.Namespace) -> int:
    import twinstage
    from twinstage.usd import open_stage, twin_prims

    offscreen = bool(args.screenshot or args.video)
    if not offscreen:
        from . import display_available

        if not display_available():
            from . import ViewerUnavailable

            raise ViewerUnavailable("no display for a window here (DISPLAY/WAYLAND_DISPLAY unset): "
                                    "add --screenshot OUT.png or --video OUT.mp4")
    viewer = _viewer(args, offscreen)
    twin = None
    if args.connect:
        scene = None if args.scene == "-" else args.scene
        viewer.connect(args.connect, scene, token=args.token)
    elif args.record:
        pb = viewer.open_recording(args.record, args.scene)
        pb.seek(len(pb) - 1 if args.tick is None else _tick_index(pb, args.tick))
    else:
        from ..models import ModelError

        stage = open_stage(args.scene)
        if twin_prims(stage):
            try:
                twin = twinstage.open(args.scene, rate=args.rate, realtime=not offscreen)
            except ModelError as exc:  # e.g. a model only the user's own code provides: show the authored state
                print(f"twinstage view: the twin cannot run here ({exc}); showing the values authored in the scene", file=sys.stderr)
                viewer.load(stage)
                viewer.notes.append("not running: a model of this scene is not available here")
            else:
                try:
                    twin.add_sink(viewer)
                except Exception:
                    twin.close()
                    raise
        else:
            viewer.load(stage)
    for note in viewer.notes:  # what is missing (references, MaterialX), said on the terminal too
        if note.startswith(("missing referenced file", "MaterialX", "nothing to draw")):
            print(f"twinstage view: note: {note}", file=sys.stderr)
    try:
        if args.select:
            viewer.select(args.select)
        if args.screenshot:
            if twin is not None and args.ticks:
                twin.run(ticks=args.ticks)
            viewer.screenshot(args.screenshot)
            print(f"wrote {args.screenshot}")
            return 0
        if args.video:
            step = None
            if twin is not None:
                step = _ticker(twin, max(1, int(round(args.rate / args.fps))))
            elif viewer.playback is not None:
                viewer.playback.seek(0)
            elif viewer.mode in ("static",):
                step = _orbit(viewer, args.frames)
            out = viewer.record_video(args.video, args.frames, fps=args.fps, step=step)
            print(f"wrote {out} ({args.frames} frames at {args.fps:g} fps)")
            return 0
        # interactive window
        stop = threading.Event()
        thread = None
        if twin is not None:
            thread = run_twin_in_thread(twin, stop=stop)
        try:
            viewer.show()
        finally:
            stop.set()
            if thread is not None:
                thread.join(10)
        return 0
    finally:
        if twin is not None:
            twin.stop()
            twin.close()
        viewer.close()


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


def _tick_index(pb: Any, tick: int) -> int:
    import numpy as np

    return int(np.clip(np.searchsorted(pb.times, tick), 0, len(pb) - 1))


def _ticker(twin: Any, per: int):
    """A video step that runs ``per`` ticks before every frame but the first."""

    def step(i: int) -> None:
        if i:
            twin.run(ticks=per)

    return step


def _orbit(viewer: Any, frames: int):
    """A step function that turns the camera once around the scene over ``frames`` frames."""
    import numpy as np

    def step(i: int) -> None:
        cam = viewer.camera
        if i == 0:
            step.base = cam.local.position.copy(), viewer._gpu.world_bounds()
            return
        pos, wb = step.base
        centre = (wb[0] + wb[1]) / 2 if wb is not None else np.zeros(3)
        up = np.array(viewer._gpu.up)
        a = 2 * np.pi * i / max(frames, 1)
        rel = pos - centre
        # Rodrigues rotation of the camera offset around the up axis
        rot = rel * np.cos(a) + np.cross(up, rel) * np.sin(a) + up * np.dot(up, rel) * (1 - np.cos(a))
        cam.local.position = centre + rot
        cam.look_at(centre)

    return step


def demo_viewer(twin: Any, *, view: bool, screenshot: str | None, out: Path) -> Any:
    """The demo's viewer: flow-rate colours, low-flow and cavitation alarms, the pump selected."""
    from . import Viewer, display_available

    window = view and display_available()
    v = Viewer(color_by="flowRate", vmin=0.0, vmax=150.0, size=(1100, 680) if window else (960, 600),
               alarms={"flowRate": {"warn_low": 80.0, "alarm_low": 40.0}, "vibration1": {"warn": 0.3, "alarm": 0.4},
                       "vibration2": {"warn": 0.35, "alarm": 0.5}},
               frontend="window" if window else "offscreen", title="twinstage demo — SKAB pump testbed")
    twin.add_sink(v)
    v.select("/Testbed/Pump")
    v.window = window
    v.demo_screenshot = screenshot or (None if window else str(out / "pump_testbed.png"))
    return v


def run_with_viewer(viewer: Any, drive: Any, *, speed: float = 10.0) -> None:
    """Run the demo's ``drive()`` loop: on a thread under a window (paced at ``speed`` × real time), else directly.

    Closing the window early lets the rest of the demo finish as fast as possible; without
    a GPU adapter the demo runs on and reports the viewer's failure at the end.
    """
    from . import ViewerUnavailable

    if not getattr(viewer, "window", False):
        drive()
        return
    twin = viewer.twin
    clock = twin.clock
    was_realtime, was_speed = clock.realtime, clock.speed
    if not clock.realtime:
        clock.realtime, clock.speed = True, speed
    errors: list[BaseException] = []

    def target() -> None:
        try:
            drive()
        except BaseException as exc:  # re-raised on the main thread
            errors.append(exc)

    th = threading.Thread(target=target, name="twinstage-demo", daemon=True)
    th.start()
    try:
        viewer.show()
    except ViewerUnavailable as exc:
        viewer.failed = str(exc)
    clock.realtime, clock.speed = was_realtime, was_speed  # window closed: finish without pacing
    th.join()
    if errors:
        raise errors[0]


def finish_demo_viewer(viewer: Any) -> bool:
    """After the demo: write its screenshot (when there was no window). Returns True if the viewer failed."""
    from . import ViewerUnavailable

    if getattr(viewer, "failed", ""):
        print(f"twinstage demo: viewer: {viewer.failed} (the twin ran and recorded normally)", file=sys.stderr)
        return True
    path = getattr(viewer, "demo_screenshot", None)
    if not path:
        return False
    try:
        viewer.screenshot(path)
    except ViewerUnavailable as exc:
        print(f"twinstage demo: viewer: {exc} (the twin ran and recorded normally)", file=sys.stderr)
        return True
    print(f"screenshot of the final state: {path}")
    return False
