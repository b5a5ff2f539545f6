"""The package's import graph, for the layout tests: which twinstage modules each file imports (imports
inside functions count; those under ``if TYPE_CHECKING:`` do not), cycles in it, and long modules."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).parents[1] / "src"
MAX_LINES = 420  #: "files that fit in a head (~400 lines)"


def module_of(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path) -> set[str]:
    """Modules this file imports, anywhere in it, except for type checking only."""
    mod = module_of(path)
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


def graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports."""
    files = sorted((SRC / package.replace(".", "/")).rglob("*.py"))
    return {module_of(f): {t for t in imports(f) if t.startswith(package) and t != module_of(f)} for f in files}


def find_cycle(g: dict[str, set[str]], package: str) -> list[str] | None:
    """One import cycle (the package's ``__init__`` is skipped: it maps names lazily), or None."""
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if seen.get(m) == 1:
            return stack[stack.index(m):] + [m]
        if seen.get(m) == 2:
            return None
        seen[m] = 1
        for t in sorted(g.get(m, ())):
            if t in g and t != package:
                found = visit(t, stack + [m])
                if found:
                    return found
        seen[m] = 2
        return None

    for m in g:
        found = visit(m, [])
        if found:
            return found
    return None


def long_modules(package: str) -> dict[str, int]:
    files = sorted((SRC / package.replace(".", "/")).rglob("*.py"))
    return {str(f.relative_to(SRC)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
