"""The bridge's structure (issue 10): transport in infra/, dialects in dialects/, no import cycle,
no module over ~400 lines, and the public names still importable."""

from __future__ import annotations

import ast
import pathlib

BRIDGE = pathlib.Path(__file__).parents[2] / "src" / "twinstage" / "bridge"


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(BRIDGE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Modules of twinstage.bridge this file imports, anywhere in it (lazy imports count too)."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("twinstage.bridge"):
                out.add(target)
                for a in node.names:  # "from . import _binary"
                    if (BRIDGE.parent.parent / (target + "." + a.name).replace(".", "/")).with_suffix(".py").exists():
                        out.add(target + "." + a.name)
    return out


def test_no_import_cycle_and_no_long_module():
    files = sorted(BRIDGE.rglob("*.py"))
    graph = {_module(f): {t for t in _imports(f) if t != _module(f)} for f in files}
    long = {f.name: n for f in files if (n := len(f.read_text().splitlines())) > 420}
    assert not long, long
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state = seen.get(m)
        if state == 1:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if state == 2:
            return
        seen[m] = 1
        for t in sorted(graph.get(m, ())):
            if t in graph and t != "twinstage.bridge":  # the package __init__ only maps names lazily
                visit(t, stack + [m])
        seen[m] = 2

    for m in graph:
        visit(m, [])
    assert {"twinstage.bridge.infra.listener", "twinstage.bridge.infra.session", "twinstage.bridge.infra.sender", "twinstage.bridge.infra.auth",
            "twinstage.bridge.dialects.twinstage", "twinstage.bridge.dialects.foxglove"} <= set(graph)


def test_public_api_is_unchanged():
    import twinstage.bridge as b

    for name in b.__all__:
        assert getattr(b, name) is not None, name
    assert b.Server.__module__ == "twinstage.bridge._server" and b.Client.__module__ == "twinstage.bridge._client"
