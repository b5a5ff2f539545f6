"""Expanding a compact ``hello`` (``?hello=compact``) back into the rows layout: the attribute
table (one record per entry) and the prim records. What a client does once, on connect."""

from __future__ import annotations

from typing import Any


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


def expand_hello(msg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(attributes, prims) of a compact hello, as the rows layout would carry them."""
    a = msg["assets"]
    parents = a["parents"]
    paths = [parents[p] + "/" + name for p, name in zip(a["parent"], a["names"])]
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
