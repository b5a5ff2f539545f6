"""The compact ``hello`` (``?hello=compact``) on the client side.

:func:`expand_hello` turns it back into the rows layout: the attribute table (one record per
entry) and the prim records. The Python client does not do that on arrival any more:
expanding the 10k-machine factory (56k entries, 11k assets) costs 0.1 s of CPU on a quiet
core and 0.5–0.8 s on a busy one, and a process holding a dozen clients of a connect storm
then stopped reading its sockets for seconds (the server dropped some of them as stalled).
:class:`CompactTables` keeps the columns and answers what the client needs — the replica's
layout, (prim, attribute) → entry, entry → unit and name — from them; :class:`LazyHello`
is the ``hello`` dict whose ``attributes`` and ``prims`` are expanded on first access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np


def _column(c: dict[str, Any], n: int) -> list[Any]:
    """A Categories record as one value per row."""
    idx = c.get("index") or []
    vals = c["values"]
    return [vals[i] for i in idx] if idx else [vals[0]] * n


def _numbers(v: list[float], n: int) -> list[float]:
    return v if len(v) == n else [v[0]] * n


def _triples(c: dict[str, Any], n: int) -> list[list[float]]:
    vals = [float(x) for x in c["values"]]
    uniq = [vals[3 * k:3 * k + 3] for k in range(len(vals) // 3)]
    idx = c.get("index") or []
    return [list(uniq[i]) for i in idx] if idx else [list(uniq[0]) for _ in range(n)]


def asset_paths(msg: dict[str, Any]) -> list[str]:
    """Each asset's prim path (``parents[parent[i]] + "/" + names[i]``)."""
    a = msg["assets"]
    parents = a["parents"]
    return [parents[p] + "/" + name for p, name in zip(a["parent"], a["names"])]


def expand_hello(msg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(attributes, prims) of a compact hello, as the rows layout would carry them."""
    a = msg["assets"]
    paths = asset_paths(msg)
    m = len(paths)
    attrs: list[dict[str, Any]] = []
    per_prim: list[list[int]] = [[] for _ in paths]
    for ch in msg["channels"]:
        n, off = ch["count"], ch["offset"]
        prims = ch["prims"] or range(ch["primStart"], ch["primStart"] + n)
        name, kind, unit = ch["name"], ch["type"], ch["unit"]
        cols = zip(range(off, off + n), prims, _numbers(ch["min"], n), _numbers(ch["max"], n), _column(ch["role"], n), _column(ch["drives"], n),
                   _column(ch["description"], n))
        for i, pi, lo, hi, role, drives, desc in cols:
            per_prim[pi].append(i)
            attrs.append({"index": i, "prim": paths[pi], "attribute": name, "type": kind, "unit": unit, "min": lo, "max": hi, "role": role,
                          "drives": drives, "description": desc})
    attrs.sort(key=lambda x: x["index"])
    pos = a["position"]
    cols2 = zip(paths, _column(a["kinds"], m), _column(a["assetIds"], m), _column(a["models"], m), _triples(a["origin"], m), _triples(a["center"], m),
                _triples(a["size"], m), a["colorBy"], per_prim)
    prims_out = [{"path": path, "kind": kind, "assetId": aid, "model": model, "position": [float(x) for x in pos[3 * i:3 * i + 3]], "origin": origin,
                  "center": center, "size": size, "colorBy": cb, "attributes": sorted(pp)}
                 for i, (path, kind, aid, model, origin, center, size, cb, pp) in enumerate(cols2)]
    return attrs, prims_out


class CompactTables:
    """A compact hello's tables, kept as columns; lookups build only what they need, once."""

    def __init__(self, msg: dict[str, Any]):
        self.msg = msg
        self.channels: list[dict[str, Any]] = sorted(msg["channels"], key=lambda c: c["offset"])
        for ch in self.channels:
            if not isinstance(ch.get("count"), int) or ch["count"] < 0 or not isinstance(ch.get("offset"), int) or ch["offset"] < 0:
                raise ValueError(f"compact hello: channel {ch.get('name')!r} has a bad offset/count ({ch.get('offset')!r}, {ch.get('count')!r})")
            if ch["prims"] and len(ch["prims"]) != ch["count"]:
                raise ValueError(f"compact hello: channel {ch['name']!r} has {ch['count']} rows but {len(ch['prims'])} prims")
        self._by_name = {ch["name"]: ch for ch in self.channels}
        self._starts = np.array([ch["offset"] for ch in self.channels], dtype=np.int64)
        self.n_entries = max((ch["offset"] + ch["count"] for ch in self.channels), default=0)
        self._paths: list[str] | None = None
        self._asset_of: dict[str, int] | None = None
        self._rows: dict[str, dict[int, int]] = {}
        self._expanded: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None

    def layout(self) -> dict[str, tuple[int, int, str]]:
        """``{channel: (offset, count, type)}`` for :class:`twinstage.state.Replica`."""
        return {ch["name"]: (ch["offset"], ch["count"], ch["type"]) for ch in self.channels}

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = asset_paths(self.msg)
        return self._paths

    def _channel(self, index: int) -> dict[str, Any]:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        if k < 0 or index >= self.channels[k]["offset"] + self.channels[k]["count"]:
            raise KeyError(index)
        return self.channels[k]

    def index_of(self, prim: str, attribute: str) -> int:
        """The entry of ``prim``'s ``attribute`` (KeyError when the scene has none)."""
        ch = self._by_name.get(attribute)
        if ch is None:
            raise KeyError((prim, attribute))
        if self._asset_of is None:
            self._asset_of = {p: i for i, p in enumerate(self.paths)}
        pi = self._asset_of.get(prim)
        if pi is None:
            raise KeyError((prim, attribute))
        if ch["prims"]:
            rows = self._rows.get(attribute)
            if rows is None:
                rows = self._rows[attribute] = {int(p): r for r, p in enumerate(ch["prims"])}
            row = rows.get(pi)
        else:
            row = pi - ch["primStart"]
            row = row if 0 <= row < ch["count"] else None
        if row is None:
            raise KeyError((prim, attribute))
        return ch["offset"] + row

    def key_of(self, index: int) -> tuple[str, str]:
        """(prim, attribute) of an entry."""
        ch = self._channel(index)
        row = index - ch["offset"]
        pi = ch["prims"][row] if ch["prims"] else ch["primStart"] + row
        return self.paths[pi], ch["name"]

    def unit_of(self, index: int) -> str:
        return self._channel(index)["unit"]

    def keys(self) -> Iterator[tuple[tuple[str, str], int]]:
        """((prim, attribute), entry) in entry order."""
        paths = self.paths
        for ch in self.channels:
            prims = ch["prims"] or range(ch["primStart"], ch["primStart"] + ch["count"])
            name, off = ch["name"], ch["offset"]
            for r, pi in enumerate(prims):
                yield (paths[pi], name), off + r

    def expanded(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._expanded is None:
            self._expanded = expand_hello(self.msg)
        return self._expanded


class CompactIndex(Mapping):
    """(prim, attribute) → entry of a compact hello, answered from its columns."""

    def __init__(self, tables: CompactTables):
        self.tables = tables

    def __getitem__(self, key: tuple[str, str]) -> int:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise KeyError(key)
        return self.tables.index_of(*key)

    def __len__(self) -> int:
        return sum(ch["count"] for ch in self.tables.channels)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return (k for k, _ in self.tables.keys())


_LAZY = ("attributes", "prims")


class LazyHello(dict):
    """A compact ``hello`` as a dict that looks like the rows layout: ``attributes`` and ``prims``
    are expanded (:func:`expand_hello`) on first access, not on arrival. Every dict method that
    shows keys or values expands first, so Python code sees one layout either way; only C code
    reading the dict's storage directly (``orjson.dumps``) sees the compact message as it came."""

    def __init__(self, msg: dict[str, Any], tables: CompactTables):
        super().__init__((k, v) for k, v in msg.items() if k not in _LAZY)
        self.tables = tables

    def _expand(self) -> None:
        if not dict.__contains__(self, "attributes"):
            attrs, prims = self.tables.expanded()
            dict.__setitem__(self, "attributes", attrs)
            dict.__setitem__(self, "prims", prims)

    def __missing__(self, key: str) -> Any:
        if key in _LAZY:
            self._expand()
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in _LAZY:
            self._expand()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        return key in _LAZY or dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._expand()
        return dict.__iter__(self)

    def __len__(self) -> int:  # without expanding: ``if c.hello:`` stays cheap
        return dict.__len__(self) + (0 if dict.__contains__(self, "attributes") else len(_LAZY))

    def keys(self) -> Any:
        self._expand()
        return dict.keys(self)

    def items(self) -> Any:
        self._expand()
        return dict.items(self)

    def values(self) -> Any:
        self._expand()
        return dict.values(self)

    def __eq__(self, other: object) -> bool:
        self._expand()
        if isinstance(other, LazyHello):
            other._expand()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> dict[str, Any]:
        self._expand()
        return dict(dict.items(self))

    def __repr__(self) -> str:
        self._expand()
        return dict.__repr__(self)
