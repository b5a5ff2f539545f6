"""Lazy attribute loading for package ``__init__`` files (PEP 562): importing a package
costs nothing until one of its names is used."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, namespace: dict[str, Any], table: dict[str, str | tuple[str, str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    ``table`` maps a public name to its module (absolute, or relative to ``package``
    when it starts with a dot) or to ``(module, attribute)`` when the names differ.
    A resolved name is cached in ``namespace`` (the package's ``globals()``).
    """

    def __getattr__(name: str) -> Any:
        try:
            target = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(module, package), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", table))

    return __getattr__, __dir__
