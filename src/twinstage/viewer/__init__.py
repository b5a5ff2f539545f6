"""The twin viewer: the live USD scene with overlays, alarms, labels and a timeline.

    from twinstage.viewer import Viewer
    viewer = Viewer(color_by="motorTemperature", alarms={"motorTemperature": {"warn": 92, "alarm": 95}})
    twin.add_sink(viewer)            # a Frame sink of an in-process twin
    twin.run(ticks=100)
    viewer.screenshot("pump.png")    # offscreen (Mesa lavapipe works without a GPU)

Front ends: ``Viewer(frontend="window")`` (rendercanvas: glfw or Qt) with
``viewer.show()``, ``frontend="jupyter"`` (returns the notebook widget), and
``"offscreen"`` (screenshots, video). Playback: ``viewer.open_recording(path)``;
remote twins: ``viewer.connect("ws://…")``. See docs/viewer.md.

Importing this package is cheap: pygfx and wgpu load (and a GPU device is
created) only when something is first drawn.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "Viewer": ("twinstage.viewer._viewer", "Viewer"),
    "Playback": ("twinstage.viewer._playback", "Playback"),
    "run_twin_in_thread": ("twinstage.viewer._cli", "run_twin_in_thread"),
    "TwinState": ("twinstage.viewer._state", "TwinState"),
    "AlarmLimits": ("twinstage.viewer._overlays", "AlarmLimits"),
    "RenderQuality": ("twinstage.viewer._env", "RenderQuality"),
    "ViewerUnavailable": ("twinstage.viewer._env", "ViewerUnavailable"),
    "display_available": ("twinstage.viewer._env", "display_available"),
    "extract": ("twinstage.geometry", "extract"),
    "COLORMAPS": ("twinstage.viewer._colormap", "COLORMAPS"),
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
