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
from ._crate_twin import OTHER, SCALAR, VEC3, decode_scalars, twin_tokens
from ._schema import ASSET_API, NAMESPACE, STATE_API, _USD_TO_TWIN

_PREFIX = NAMESPACE + ":"
_STATE_PREFIX = STATE_API + ":"
_FIELDS = ("unit", "min", "max", "description", "role", "drives")
_NUMERIC = np.array([C.BOOL, C.UCHAR, C.INT, C.UINT, C.INT64, C.UINT64, C.HALF, C.FLOAT, C.DOUBLE])
_INTEGRAL = np.array([C.BOOL, C.UCHAR, C.INT, C.UINT, C.INT64, C.UINT64])

#: fallback(path, schemas, layout, values) -> (AssetDecl, [Declaration]) for prims the columns do not cover
Fallback = Callable[[str, tuple, tuple, tuple], tuple[Any, list]]


def plain_description(layer: Any, order: list[int], schemas_of: Callable, fallback: Fallback, norm_meta: Callable) -> dict[str, Any]:
    c = layer.crate
    order_a = np.asarray(order, np.int64)
    api = layer.api[order_a]
    uniq, which = np.unique(api, return_inverse=True)
    schemas = [schemas_of(c, int(r)) if r else () for r in uniq.tolist()]
    is_twin = np.asarray([ASSET_API in s for s in schemas], bool)
    keep = is_twin[which.reshape(-1)]
    twin_a = order_a[keep]
    twin_which = which.reshape(-1)[keep]
    twin_schemas = [schemas[i] for i in twin_which.tolist()]
    n = len(twin_a)
    pos_of_spec = np.full(len(layer.prims), -1, np.int64)
    pos_of_spec[twin_a] = np.arange(n)
    paths = _paths(c, layer.prim_path[twin_a])
    # the twin prims' twin:* attributes, grouped by prim (traversal order), then by name
    sp = c.spec_path
    tokens = c.tokens
    twin_tok = twin_tokens(c)
    attrs = np.flatnonzero((c.spec_type == C.ATTRIBUTE) & c.path_is_prop[sp] & twin_tok[c.path_token[sp]])
    owner = layer.spec_of_path[c.path_parent[sp[attrs]]]
    owner = np.where(owner >= 0, pos_of_spec[np.maximum(owner, 0)], -1)
    keep = owner >= 0
    attrs, owner = attrs[keep], owner[keep]
    name = c.path_token[sp[attrs]]
    uname, name_i = _dense(name, len(tokens))
    key = owner * max(len(uname), 1) + name_i
    if len(key) > 1 and (np.diff(key) < 0).any():
        srt = np.argsort(key, kind="stable")
        attrs, owner, name, name_i = attrs[srt], owner[srt], name[srt], name_i[srt]
    reps = c.reps(c.field("default", attrs))
    vals, kind = decode_scalars(c, reps)
    rtype = ((reps >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int64)
    trep = c.reps(c.field("typeName", attrs))
    ttok = np.where(trep != 0, (trep & C._PAYLOAD).astype(np.int64), -1)
    if (ttok >= len(tokens)).any():
        raise C.CrateError(f"{c.path}: an attribute's typeName names a token that does not exist")
    utype, type_i = _dense(ttok + 1, len(tokens) + 1)
    upair, pair = _dense(name_i * len(utype) + type_i, max(len(uname), 1) * len(utype))
    pairs = []
    for k in upair.tolist():
        nm, tt = tokens[int(uname[k // len(utype)])], int(utype[k % len(utype)]) - 1
        pairs.append((nm, (tokens[tt] if tt >= 0 else "") if nm.count(":") == 1 else ""))
    vec_ok = np.asarray([bool(t) and _USD_TO_TWIN.get(t) == "vec3" for _, t in pairs], bool)
    odd = (kind == OTHER) | ((kind == VEC3) & ~vec_ok[pair])
    counts = np.bincount(owner, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    odd_prim = np.bincount(owner[odd], minlength=n) > 0
    plans = _plans(twin_which, schemas, pair, starts, counts)

    templates: dict[tuple, int] = {}
    P, J, T, V = [], [], [], []  # per declaration: prim position, order in prim, template, value
    fields = [np.full(n, "", object) for _ in range(3)]
    slow = 0
    for (schemas, sig), rows in plans.items():
        members = rows.tolist()
        layout = tuple(pairs[p] for p in sig)
        plan = _plan(layout, schemas)
        L = len(sig)
        cols = starts[rows][:, None] + np.arange(L)  # attribute index per (prim, layout position)
        whole = ~odd_prim[rows]  # covered by the columns (the rest: the builder, prim by prim)
        for f, at in zip(fields, plan["asset"]):
            if at is not None:
                col = vals[cols[:, at]]
                if not (kind[cols[:, at]] == SCALAR).all() or not np.isin(rtype[cols[:, at]], (C.TOKEN, C.STRING)).all():
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
                combos, which = mcols[:1], np.zeros(len(rows), np.int64)
            else:
                combos, which = np.unique(mcols, axis=0, return_inverse=True)
            tids = np.empty(len(combos), np.int64)
            for u in range(len(combos)):
                first = int(np.argmax(which.reshape(-1) == u))
                raw = tuple(None if m is None else vals[int(cols[first, m])] for m in meta_at)
                try:
                    meta = norm_meta(raw)
                except TypeError:
                    meta = None
                if meta is None:
                    tids[u] = -1
                    continue
                unit, lo, hi, desc, role, drives = meta
                tids[u] = templates.setdefault((dname, ttype, unit, lo, hi, role, drives, desc), len(templates))
            tid = tids[which.reshape(-1)]
            conv = np.empty(len(rows), object)
            fin = np.zeros(len(rows), bool)
            if ok.any():
                conv[ok], fin[ok] = _convert(ttype, vals[a[ok]])
            whole &= ok & fin & (tid >= 0)
            decl_cols.append((j, tid, conv))
        else:
            for j, tid, conv in decl_cols:
                P.append(rows[whole])
                J.append(np.full(int(whole.sum()), j, np.int64))
                T.append(tid[whole])
                V.append(conv[whole])
        for r, i in enumerate(members):
            if whole[r]:
                continue
            a, k = int(starts[i]), int(counts[i])
            layout_i = None if odd_prim[i] else tuple(pairs[p] for p in pair[a : a + k].tolist())
            asset, decls = fallback(paths[i], twin_schemas[i], layout_i, tuple(vals[a : a + k].tolist()))
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
        dp, dt, dv = p[srt].tolist(), t[srt].tolist(), v[srt].tolist()
    else:
        dp, dt, dv = [], [], []
    return {"paths": paths, "fields": [f.tolist() for f in fields], "templates": list(templates), "decl_prim": dp, "decl_template": dt, "decl_value": dv,
            "slow_prims": slow, "layers": 1}


def _plan(layout: tuple, schemas: tuple) -> dict[str, Any]:
    """Where a layout keeps the asset's fields and each declaration's value and metadata (as ``_read._Plan``)."""
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
    uniq = np.unique(parents)
    heads = dict(zip(uniq.tolist(), c.path_strings(uniq)))
    tokens = c.tokens
    return [(h if h != "/" else "") + "/" + tokens[t] for h, t in zip(map(heads.__getitem__, parents.tolist()), c.path_token[path_idx].tolist())]


def _dense(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, index of each value among them) for ints in [0, bound), without sorting."""
    seen = np.zeros(bound, bool)
    seen[values] = True
    uniq = np.flatnonzero(seen)
    table = np.zeros(bound, np.int64)
    table[uniq] = np.arange(len(uniq))
    return uniq, table[values]


def _plans(s_of: np.ndarray, by_schema: list[tuple], pair: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> dict[tuple, np.ndarray]:
    """Twin prims grouped by (apiSchemas, layout as pair ids): {(schemas, sig): prim positions}
    (``s_of``: each prim's index into ``by_schema``)."""
    out: dict[tuple, np.ndarray] = {}
    group = s_of * (int(counts.max(initial=0)) + 1) + counts
    for g in np.unique(group).tolist():
        members = np.flatnonzero(group == g)
        L = int(counts[members[0]])
        sch = by_schema[int(s_of[members[0]])]
        m = pair[starts[members][:, None] + np.arange(L)]
        if (m == m[:1]).all():
            out[(sch, tuple(m[0].tolist()))] = members
            continue
        uniq, inv = np.unique(m, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        for u in range(len(uniq)):
            out[(sch, tuple(uniq[u].tolist()))] = members[inv == u]
    return out
