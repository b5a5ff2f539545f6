"""Graphics environment: backend choice, the GPU adapter check, canvases, quality presets.

Nothing here imports wgpu/pygfx at module level.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from typing import Any

LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"


class ViewerUnavailable(RuntimeError):
    """The viewer cannot run here (no GPU adapter, no display for a window, missing package)."""


def configure_backend() -> None:
    """Prefer wgpu's Vulkan backend on Linux unless the user chose one.

    wgpu's OpenGL path on Mesa lacks features pygfx needs (FLOAT32_FILTERABLE), while
    Vulkan works on real GPUs and on Mesa's lavapipe (software). Set
    ``WGPU_BACKEND_TYPE`` yourself to override; ``VK_ICD_FILENAMES`` is left alone.
    """
    if sys.platform.startswith("linux") and not os.environ.get("WGPU_BACKEND_TYPE"):
        os.environ["WGPU_BACKEND_TYPE"] = "Vulkan"
    # rendercanvas/glfw under some X servers want a runtime dir
    if sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        d = f"/tmp/runtime-{os.getuid()}"
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = d
        except OSError:
            pass


class _DropForcingNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Forcing backend")


def _quiet_backend_notice() -> None:
    """wgpu warns "Forcing backend: Vulkan" whenever WGPU_BACKEND_TYPE is set — which is our default here.
    Call it after importing wgpu (which installs its own logger class under that name)."""
    lg = logging.getLogger("wgpu")
    if not any(isinstance(f, _DropForcingNotice) for f in lg.filters):
        lg.addFilter(_DropForcingNotice())


_ADAPTER_INFO: dict[str, Any] | None = None


def adapter_info() -> dict[str, Any]:
    """Info of the adapter pygfx renders with; raises :class:`ViewerUnavailable` when there is none."""
    global _ADAPTER_INFO
    if _ADAPTER_INFO is not None:
        return _ADAPTER_INFO
    configure_backend()
    try:
        import pygfx as gfx
        import wgpu  # noqa: F401
    except ImportError as exc:
        raise ViewerUnavailable(f"the viewer needs pygfx and wgpu: pip install 'twinstage[viewer]' ({exc})") from None
    _quiet_backend_notice()
    try:
        shared = gfx.renderers.wgpu.get_shared()
        adapter = shared.adapter
    except Exception as exc:
        backend = os.environ.get("WGPU_BACKEND_TYPE", "default")
        raise ViewerUnavailable(
            f"no GPU adapter available (wgpu backend {backend}): {' '.join(str(exc).split())[:300]}. "
            "Install a Vulkan driver — on Debian without a GPU: apt-get install mesa-vulkan-drivers (lavapipe, software) — "
            "or set WGPU_BACKEND_TYPE to a backend this machine has."
        ) from None
    info = dict(adapter.info)
    _ADAPTER_INFO = info
    return info


def is_software(info: dict[str, Any]) -> bool:
    t = str(info.get("adapter_type", "")).lower()
    dev = str(info.get("device", "")).lower()
    return t == "cpu" or "llvmpipe" in dev or "lavapipe" in dev or "swiftshader" in dev


def display_available() -> bool:
    """Whether a window can open here (an X11/Wayland display on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


@dataclass(frozen=True)
class RenderQuality:
    """How hard the renderer works. On software rendering (lavapipe) pixel_ratio 2 and
    post-AA cost ~30× per frame, so ``fast`` is what ``auto`` picks there."""

    name: str = "fast"
    pixel_ratio: float = 1.0  #: render resolution per logical pixel
    ppaa: str = "none"  #: post-processing anti-aliasing: none, fxaa, ddaa
    lighting: bool = True  #: hemisphere + head light; False draws flat colours (exact pixels)
    segments: int = 24  #: tessellation of spheres, cylinders, cones, capsules
    max_fps: float = 30.0  #: frame-rate cap of interactive windows
    labels: bool = True

    @classmethod
    def preset(cls, name: str, *, software: bool | None = None) -> RenderQuality:
        if name == "auto":
            name = "fast" if software in (True, None) else "high"
        presets = {
            "fast": cls("fast", 1.0, "none", True, 16, 30.0),
            "balanced": cls("balanced", 1.0, "fxaa", True, 24, 60.0),
            "high": cls("high", 2.0, "ddaa", True, 48, 60.0),
            "flat": cls("flat", 1.0, "none", False, 16, 30.0),
        }
        try:
            return presets[name]
        except KeyError:
            raise ValueError(f"unknown quality {name!r}: use auto, {', '.join(presets)}") from None

    def with_(self, **kw: Any) -> RenderQuality:
        return replace(self, **kw)


def make_canvas(frontend: str, size: tuple[int, int], title: str, pixel_ratio: float) -> tuple[Any, str]:
    """A rendercanvas canvas for ``frontend`` (offscreen, window, jupyter, auto) → (canvas, kind)."""
    configure_backend()
    if frontend == "auto":
        frontend = "jupyter" if in_notebook() else "window" if display_available() else "offscreen"
    if frontend == "offscreen":
        from rendercanvas.offscreen import RenderCanvas

        return RenderCanvas(size=size, pixel_ratio=pixel_ratio, title=title), "offscreen"
    if frontend == "jupyter":
        try:
            from rendercanvas.jupyter import RenderCanvas
        except ImportError as exc:
            raise ViewerUnavailable(f"the Jupyter viewer needs jupyter_rfb: pip install jupyter_rfb ({exc})") from None
        return RenderCanvas(size=size, title=title), "jupyter"
    if frontend in ("window", "glfw", "qt"):
        if not display_available():
            raise ViewerUnavailable("no display for a window (DISPLAY/WAYLAND_DISPLAY unset): use an offscreen screenshot or video instead")
        if frontend == "glfw" or frontend == "window":
            os.environ.setdefault("PYGLFW_LIBRARY_VARIANT", "x11" if os.environ.get("DISPLAY") else "wayland")
        try:
            if frontend == "qt":
                from rendercanvas.qt import RenderCanvas
            elif frontend == "glfw":
                from rendercanvas.glfw import RenderCanvas
            else:
                from rendercanvas.auto import RenderCanvas
        except Exception as exc:
            raise ViewerUnavailable(f"cannot open a {frontend} window: {exc}") from None
        try:
            canvas = RenderCanvas(size=size, title=title)
        except Exception as exc:
            raise ViewerUnavailable(f"cannot open a {frontend} window: {' '.join(str(exc).split())[:300]}") from None
        return canvas, "window"
    raise ValueError(f"unknown frontend {frontend!r}: use auto, window, glfw, qt, jupyter or offscreen")
