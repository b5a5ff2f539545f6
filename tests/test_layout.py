"""The package's structure: no import cycle in any of its packages (imports inside functions count; those
under ``if TYPE_CHECKING:`` do not), no module over ~400 lines, and the viewer's and runtime's public names
still importable after their split."""

from __future__ import annotations

import pytest
from _layout import SRC, find_cycle, graph, long_modules

PACKAGES = sorted("twinstage." + p.name for p in (SRC / "twinstage").iterdir() if (p / "__init__.py").exists())


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_and_no_long_module(package):
    assert not long_modules(package)
    cycle = find_cycle(graph(package), package)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_package_is_checked():
    assert {"twinstage.bridge", "twinstage.viewer", "twinstage.runtime", "twinstage.telemetry", "twinstage.usd"} <= set(PACKAGES)


def test_the_cycle_check_sees_a_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert find_cycle(graph, "p") == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}, "p") is None


def test_public_names_are_unchanged():
    import twinstage.runtime as rt
    import twinstage.viewer as v

    for name in ("Viewer", "Playback", "run_twin_in_thread", "TwinState", "AlarmLimits", "RenderQuality", "ViewerUnavailable",
                 "display_available", "extract", "COLORMAPS"):
        assert name in v.__all__ and getattr(v, name) is not None, name
    for name in ("Clock", "Engine", "Sink", "SinkContext", "Twin", "open"):
        assert getattr(rt, name) is not None, name
    methods = ("load", "start", "consume", "close", "close_window", "open_recording", "connect", "set_color_by", "set_alarm_limits",
               "set_alarm", "select", "frame_all", "effect_time", "sync", "render", "show_forecast", "screenshot", "record_video", "show",
               "pick_at", "object_screen_position", "camera", "canvas", "_badges", "_selection_lines", "_on_key")
    assert [m for m in methods if not hasattr(v.Viewer, m)] == []
