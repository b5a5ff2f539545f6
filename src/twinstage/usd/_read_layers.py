"""Per-layer reading of ``twin:*`` attributes for :mod:`._read` (each spec once per layer).

:class:`LayerReader` memoises, per spec path, a spec's ``twin:*`` attributes as
``(layout, values)``; it is filled from the on-disk cache (:mod:`._readcache`) when the
layer's bytes were read before, else at once from the layer's crate file
(:mod:`._crate_twin`) when it is an unedited ``.usdc``, else spec by spec through Sdf.
"""

from __future__ import annotations

from typing import Any

from pxr import Sdf

from . import _crate, _crate_twin, _readcache
from ._schema import NAMESPACE, _USD_TO_TWIN

_PREFIX = NAMESPACE + ":"
_SCALARS = (str, float, int, bool)  # what a cached value may be (besides a tuple of floats)


class LayerReader:
    """Per-layer memo, by spec path, of each spec's ``twin:*`` attributes as ``(layout, values)``
    (``layout``: ((name, value type name or ""), ...), shared between specs; ``values``: the
    defaults, None where none is authored), backed by the on-disk cache."""

    def __init__(self, layer: Sdf.Layer, cache: _readcache.Cache | None, key: str | None = None):
        self.layer = layer
        self.key = key if key is not None or cache is None else cache.key_for(layer)
        self.cache = cache
        self._intern: dict[Any, Any] = {}
        self.specs: dict[str, Any] = {}
        stored = cache.load(self.key) if self.key is not None else None
        self.loaded = False
        self.added = 0
        if stored:
            self.specs = stored
            self.loaded = self.verify()
            if not self.loaded:
                self.specs = {}
        if not self.loaded:
            self._from_crate()
        self.cacheable = self.key is not None

    def get(self, ps: Sdf.PrimSpec, path: str) -> Any:
        """(layout, values) of the spec's ``twin:*`` attributes, () for none, None where only the
        prim-by-prim reader can tell (a value block, an unknown value type)."""
        try:
            return self.specs[path]
        except KeyError:
            pass
        entry = self._extract(ps)
        self.specs[path] = entry
        self.added += 1
        return entry

    def _extract(self, ps: Sdf.PrimSpec) -> Any:
        intern = self._intern
        layout = []
        values = []
        for a in ps.attributes:  # one wrapper per attribute: cheaper than looking names up
            n = a.name
            if not n.startswith(_PREFIX):
                continue
            is_value = n.count(":") == 1  # twin:<name> (twin:<name>:<field> is metadata)
            type_name = str(a.typeName) if is_value else ""
            v = a.default
            if v is not None and not isinstance(v, _SCALARS):
                if not is_value or _USD_TO_TWIN.get(type_name) != "vec3":
                    return None  # a value block, or a type only the slow path turns into an error
                try:
                    v = tuple(float(c) for c in v)
                except TypeError:
                    return None
                if len(v) != 3:
                    return None
            elif isinstance(v, str):
                v = intern.setdefault(v, v)  # shared strings pickle once
            layout.append((n, type_name))
            values.append(v)
        if not layout:
            return ()
        key = tuple(layout)
        return (intern.setdefault(key, key), tuple(values))

    def _from_crate(self) -> None:
        """Every prim spec's entry at once from the layer's crate file (:mod:`._crate_twin`), when the
        layer is an unedited ``.usdc`` on disk and a sample of specs reads the same through Sdf."""
        layer = self.layer
        if layer.anonymous or layer.dirty or not layer.realPath or not _crate.is_crate(layer.realPath):
            return
        try:
            crate = _crate.Crate(layer.realPath)
        except (_crate.CrateError, OSError):
            return
        try:
            specs = _crate_twin.layer_specs(crate)
        except (_crate.CrateError, IndexError, ValueError, OverflowError):
            return
        finally:
            crate.close()
        self.specs = specs
        if not self.verify():
            self.specs = {}
            return
        self.added = len(specs)  # worth storing in the on-disk cache

    def verify(self, sample: int = 8) -> bool:
        """Spot-check entries (a spread of all, and of those with twin attributes) against the layer
        (a file changed after it was opened); attribute order within a spec does not matter."""
        paths = list(self.specs)
        full = [p for p in paths if self.specs[p]]
        for group in (paths, full):
            step = max(1, len(group) // sample)
            for p in group[::step][:sample]:
                ps = self.layer.GetPrimAtPath(p)
                if ps is None or not same_entry(self._extract(ps), self.specs[p]):
                    return False
        return True

    def save(self) -> None:
        if self.cache is not None and self.cacheable and self.added and self.key is not None:
            self.cache.store(self.key, self.specs)


def same_entry(a: Any, b: Any) -> bool:
    if not a or not b:
        return a == b
    return dict(zip(*a)) == dict(zip(*b))


def merge(entries: list) -> tuple[tuple, tuple]:
    """One (layout, values) from specs ordered strongest first: per attribute the type
    name of the strongest spec that has it, the default of the strongest that has one."""
    if len(entries) == 1:
        return entries[0]
    order: dict[str, int] = {}
    types: list[str] = []
    vals: list[Any] = []
    for layout, values in entries:
        for (n, t), v in zip(layout, values):
            i = order.get(n)
            if i is None:
                order[n] = len(types)
                types.append(t)
                vals.append(v)
            elif vals[i] is None and v is not None:
                vals[i] = v
    return tuple(zip(order, types)), tuple(vals)
