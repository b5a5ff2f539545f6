"""The twin description of a crate layer's traversed prims as plain columns, built per plan.

Given the prims a traversal visits (:mod:`._crate_stage`), this finds the twin assets,
groups them by *plan* — the same ``twin:*`` attribute layout and ``apiSchemas`` (all
10k machines of a factory share one) — and turns each plan's values into the
columns :func:`._readcache.description_from_plain` builds objects from: one numpy
gather per attribute instead of a Python call per value. The rules are those of
:class:`._read._Builder` (a missing value, a non-finite number or invalid metadata
sends a prim to the prim-by-prim reader); values of a type the vectorised rules do
not cover (a string where a number is declared, say) go through that builder itself,
prim by prim, so the result is the same as the builder's.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _crate as C
from ._crate_twin import OTHER, SCALAR, VEC3, attribute_types, classify, decode_scalars, dense, twin_tokens
from ._schema import ASSET_API, NAMESPACE, STATE_API, _USD_TO_TWIN

_PREFIX = NAMESPACE + ":"
_STATE_PREFIX = STATE_API + ":"
_FIELDS = ("unit", "min", "max", "description", "role", "drives")  # metadata attributes twin:<name>:<field>, the order _norm_meta takes
_NUMERIC = np.array([C.BOOL, C.UCHAR, C.INT, C.UINT, C.INT64, C.UINT64, C.HALF, C.FLOAT, C.DOUBLE])
_INTEGRAL = np.array([C.BOOL, C.UCHAR, C.INT, C.UINT, C.INT64, C.UINT64])

#: fallback(path, schemas, layout, values) -> (AssetDecl, [Declaration]) for prims the columns do not cover
Fallback = Callable[[str, tuple, tuple, tuple], tuple[Any, list]]


class NotCovered(Exception):
    """A layer this reader does not model (the message says why); the caller reads through pxr."""


def plain_description(layer: Any, order: list[int], schemas_of: Callable, fallback: Fallback, norm_meta: Callable) -> dict[str, Any]:
    c = layer.crate
    tokens = c.tokens
    order_a = np.asarray(order, np.int64)
    uniq, which = np.unique(layer.api[order_a], return_inverse=True)
    which = which.reshape(-1)
    schemas = [schemas_of(c, int(r)) if r else () for r in uniq.tolist()]
    keep = np.asarray([ASSET_API in s for s in schemas], bool)[which]
    twin_a, twin_which = order_a[keep], which[keep]
    twin_schemas = [schemas[i] for i in twin_which.tolist()]
    n = len(twin_a)
    pos_of_spec = np.full(len(layer.prims), -1, np.int64)
    pos_of_spec[twin_a] = np.arange(n)
    paths = _paths(c, layer.prim_path[twin_a])
    # the twin prims' twin:* attributes as a dense table: row = prim (traversal order), column = name
    sp = c.spec_path
    attrs = np.flatnonzero((c.spec_type == C.ATTRIBUTE) & c.path_is_prop[sp] & twin_tokens(c)[c.path_token[sp]]).astype(np.int32)
    owner = layer.spec_of_path[c.path_parent[sp[attrs]]]
    owner = np.where(owner >= 0, pos_of_spec[np.maximum(owner, 0)], -1).astype(np.int32)
    attrs, owner = attrs[owner >= 0], owner[owner >= 0]
    uname, slot = dense(c.path_token[sp[attrs]], len(tokens))
    if n * len(uname) > 4 * len(attrs) + 1_000_000:
        raise NotCovered(f"{len(uname)} distinct twin attribute names over {n} assets")
    table = np.full((n, max(len(uname), 1)), -1, np.int32)
    table[owner, slot] = np.arange(len(attrs), dtype=np.int32)
    if int((table >= 0).sum()) != len(attrs):
        raise C.CrateError(f"{c.path}: an attribute spec is repeated")
    reps = c.reps(c.field("default", attrs))
    kind = classify(reps)
    rtype = ((reps >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int16)
    tname, vec_ok = attribute_types(c, uname[slot], attrs)
    del attrs, slot  # at 100k assets each per-attribute array is ~4M entries: keep few of them at once
    names = [tokens[t] for t in uname.tolist()]
    odd = (kind == OTHER) | ((kind == VEC3) & ~vec_ok)
    odd_prim = np.bincount(owner[odd], minlength=n) > 0
    del odd, owner, vec_ok
    # a plan: (apiSchemas, type name per column, -2 where the prim has no such attribute)
    sig = np.where(table >= 0, tname[np.maximum(table, 0)], -2)
    plans = _plans(np.column_stack([twin_which, sig]))
    del sig, tname

    def layout_of(row: np.ndarray) -> tuple[tuple, np.ndarray]:
        present = np.flatnonzero(row >= -1)
        return tuple((names[k], tokens[t] if t >= 0 else "") for k, t in zip(present.tolist(), row[present].tolist())), present

    templates: dict[tuple, int] = {}
    P, J, T, V = [], [], [], []  # per declaration: prim position, order in prim, template, value
    fields = [np.full(n, "", object) for _ in range(3)]
    slow = 0
    for key, rows in plans:
        layout, present = layout_of(key[1:])
        plan = plan_layout(layout, schemas[int(key[0])])
        cols = table[rows][:, present]  # attribute index per (member, layout position)
        whole = ~odd_prim[rows]  # covered by the columns (the rest: the builder, prim by prim)
        for f, at in zip(fields, plan["asset"]):
            if at is not None:
                col, _ = decode_scalars(c, reps[cols[:, at]])
                if not np.isin(rtype[cols[:, at]], (C.TOKEN, C.STRING)).all():
                    col = np.asarray(["" if v is None else str(v) for v in col.tolist()], object)
                f[rows] = col
        decl_cols: list = []
        for j, (dname, vi, ttype, meta_at) in enumerate(plan["decls"]):
            if vi is None or ttype is None:
                whole[:] = False  # the builder says None for every member: the prim-by-prim reader decides
                break
            a = cols[:, vi]
            ok = _value_ok(ttype, kind[a], rtype[a])
            mcols = np.stack([reps[cols[:, m]] if m is not None else np.zeros(len(rows), np.uint64) for m in meta_at], axis=1)
            if (mcols == mcols[:1]).all():  # the usual case: every member shares its metadata
                combos, which_m = mcols[:1], np.zeros(len(rows), np.int64)
            else:
                combos, which_m = np.unique(mcols, axis=0, return_inverse=True)
                which_m = which_m.reshape(-1)
            tids = np.empty(len(combos), np.int64)
            for u in range(len(combos)):
                first = int(np.argmax(which_m == u))
                got = decode_scalars(c, np.asarray([reps[cols[first, m]] if m is not None else 0 for m in meta_at], np.uint64))[0]
                raw = tuple(None if m is None else v for m, v in zip(meta_at, got.tolist()))
                try:
                    meta = norm_meta(raw)
                except TypeError:
                    meta = None
                if meta is None:
                    tids[u] = -1
                    continue
                unit, lo, hi, desc, role, drives = meta
                tids[u] = templates.setdefault((dname, ttype, unit, lo, hi, role, drives, desc), len(templates))
            tid = tids[which_m]
            conv = np.empty(len(rows), object)
            fin = np.zeros(len(rows), bool)
            if ok.any():
                conv[ok], fin[ok] = _convert(ttype, decode_scalars(c, reps[a[ok]])[0])
            whole &= ok & fin & (tid >= 0)
            decl_cols.append((j, tid, conv))
        else:
            for j, tid, conv in decl_cols:
                P.append(rows[whole])
                J.append(np.full(int(whole.sum()), j, np.int64))
                T.append(tid[whole])
                V.append(conv[whole])
        for r, i in enumerate(rows.tolist()):
            if whole[r]:
                continue
            idx = cols[r]
            values = tuple(decode_scalars(c, reps[idx])[0].tolist())
            asset, decls = fallback(paths[i], twin_schemas[i], None if odd_prim[i] else layout, values)
            slow += 1
            fields[0][i], fields[1][i], fields[2][i] = asset.kind, asset.asset_id, asset.model
            for j, d in enumerate(decls):
                P.append(np.asarray([i]))
                J.append(np.asarray([j]))
                T.append(np.asarray([templates.setdefault((d.name, d.type, d.unit, d.min, d.max, d.role, d.drives, d.description), len(templates))]))
                V.append(_objects([d.value]))
    if P:
        p, j, t = np.concatenate(P), np.concatenate(J), np.concatenate(T)
        v = np.concatenate(V)
        srt = np.lexsort((j, p))
        dp, dt, dv = p[srt], t[srt], v[srt]
    else:
        dp, dt, dv = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object)
    return {"paths": paths, "fields": [f.tolist() for f in fields], "templates": list(templates), "decl_prim": dp, "decl_template": dt,
            "decl_value": dv, "slow_prims": slow, "layers": 1}


def plan_layout(layout: tuple, schemas: tuple) -> dict[str, Any]:
    """Where a layout ((name, type name), ...) keeps the asset's fields (``asset``: kind, assetId, model) and,
    per ``TwinStateAPI:<name>`` in ``schemas`` order, the declaration's (name, value index, twin type, metadata
    indexes in ``_FIELDS`` order); None where the layout has no such attribute. The one rule both the
    prim-by-prim builder (``_read._Plan``) and the columns follow."""
    index = {n: i for i, (n, _) in enumerate(layout)}
    types = {n: t for n, t in layout if t}
    decls = []
    for schema in schemas:
        if schema.startswith(_STATE_PREFIX):
            name = schema[len(_STATE_PREFIX) :]
            attr = _PREFIX + name
            decls.append((name, index.get(attr), _USD_TO_TWIN.get(types.get(attr, "")), [index.get(f"{attr}:{f}") for f in _FIELDS]))
    return {"asset": [index.get(n) for n in ("twin:kind", "twin:assetId", "twin:model")], "decls": decls}


def _value_ok(ttype: str, kind: np.ndarray, rtype: np.ndarray) -> np.ndarray:
    """Values the columns convert exactly as the builder would (the rest go through it)."""
    if ttype == "vec3":
        return kind == VEC3
    allowed = _INTEGRAL if ttype == "int" else _NUMERIC
    return (kind == SCALAR) & np.isin(rtype, allowed)


def _convert(ttype: str, objs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Python values as the builder makes them, finite mask)."""
    if ttype == "float":
        f = objs.astype(np.float64)
        return f.astype(object), np.isfinite(f)
    if ttype == "int":
        return _objects([int(v) for v in objs]), np.ones(len(objs), bool)
    if ttype == "bool":
        return _objects([bool(v) for v in objs]), np.ones(len(objs), bool)
    rows = [tuple(float(x) for x in v) for v in objs]
    fin = np.isfinite(np.asarray(rows, np.float64).reshape(len(rows), 3)).all(axis=1) if rows else np.zeros(0, bool)
    return _objects(rows), fin


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), object)
    for i, v in enumerate(items):
        out[i] = v
    return out


def _paths(c: C.Crate, path_idx: np.ndarray) -> list[str]:
    """Prim path strings: each parent's string once, then one concatenation per prim."""
    parents = c.path_parent[path_idx]
    uniq = dense(parents + 1, len(c.path_parent) + 1)[0] - 1  # (no sort; -1 only in a corrupt tree)
    heads = dict(zip(uniq.tolist(), c.path_strings(uniq)))
    tokens = c.tokens
    return [(h if h != "/" else "") + "/" + tokens[t] for h, t in zip(map(heads.__getitem__, parents.tolist()), c.path_token[path_idx].tolist())]


def _plans(keys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows grouped by identical key rows: [(key, member rows)] (one group when all agree, the usual case)."""
    if not len(keys):
        return []
    if (keys == keys[:1]).all():
        return [(keys[0], np.arange(len(keys)))]
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    return [(uniq[u], order[bounds[u] : bounds[u + 1]]) for u in range(len(uniq))]
