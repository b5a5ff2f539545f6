"""The viewer's and the runtime's structure: no import cycle (imports inside functions count; those under
``if TYPE_CHECKING:`` do not), no module over ~400 lines, and the public names still importable."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).parents[1] / "src"


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Modules this file imports, anywhere in it, except for type checking only."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            for a in node.names:  # "from . import _colormap"
                if (SRC / (target + "." + a.name).replace(".", "/")).with_suffix(".py").exists():
                    out.add(target + "." + a.name)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _cycle(graph: dict[str, set[str]], package: str) -> list[str] | None:
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if seen.get(m) == 1:
            return stack[stack.index(m):] + [m]
        if seen.get(m) == 2:
            return None
        seen[m] = 1
        for t in sorted(graph.get(m, ())):
            if t in graph and t != package:  # the package __init__ only maps names lazily
                found = visit(t, stack + [m])
                if found:
                    return found
        seen[m] = 2
        return None

    for m in graph:
        found = visit(m, [])
        if found:
            return found
    return None


@pytest.mark.parametrize("package", ["twinstage.viewer", "twinstage.runtime"])
def test_no_import_cycle_and_no_long_module(package):
    files = sorted((SRC / package.replace(".", "/")).rglob("*.py"))
    graph = {_module(f): {t for t in _imports(f) if t.startswith(package) and t != _module(f)} for f in files}
    long = {f.name: n for f in files if (n := len(f.read_text().splitlines())) > 420}
    assert not long, long
    cycle = _cycle(graph, package)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert _cycle(graph, "p") == ["p.a", "p.b", "p.c", "p.a"]
    assert _cycle({"p.a": {"p.b"}, "p.b": set()}, "p") is None


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
