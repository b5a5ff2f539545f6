"""Every ``twin:*`` attribute of a crate layer, read in one vectorised pass.

:func:`layer_specs` gives, for every prim spec of a ``.usdc`` file, exactly the
entry that :class:`._read_layers.LayerReader` would extract spec by spec through pxr:
``(layout, values)`` of its ``twin:*`` attributes, ``()`` when it has none, ``None``
when only the prim-by-prim reader can tell (a value block, an array, a value type
the fast path does not model). Values are decoded from the file's value reps with
numpy (see :mod:`._crate`), about 40× cheaper than ``Sdf.AttributeSpec.default``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _crate as C
from ._schema import NAMESPACE, _USD_TO_TWIN

_PREFIX = NAMESPACE + ":"
# what a value's kind is: absent (None), a scalar Python value, a 3-vector, or something else
MISSING, SCALAR, VEC3, OTHER = 0, 1, 2, 3
_VEC3_BYTES = {C.VEC3D: ("<f8", 8), C.VEC3F: ("<f4", 4), C.VEC3H: ("<f2", 2)}


def _at(crate: C.Crate, offsets: np.ndarray, dtype: str, count: int = 1) -> np.ndarray:
    """``count`` values of ``dtype`` at each file offset (bounds-checked)."""
    width = np.dtype(dtype).itemsize * count
    if len(offsets) and (offsets.min() < 0 or offsets.max() + width > len(crate.bytes)):
        raise C.CrateError(f"{crate.path}: a value offset points outside the file")
    idx = offsets[:, None] + np.arange(width)
    return crate.bytes[idx].copy().view(dtype).reshape(len(offsets), count)


_SCALAR_TYPES = (C.BOOL, C.UCHAR, C.INT, C.UINT, C.INT64, C.UINT64, C.HALF, C.FLOAT, C.DOUBLE, C.TOKEN, C.STRING)
# per (type << 1 | inlined): the kind a value of that encoding decodes to
_KIND_OF_CODE = np.full(512, OTHER, np.int8)
for _t in _SCALAR_TYPES:
    _KIND_OF_CODE[_t * 2 + 1] = SCALAR
for _t in _VEC3_BYTES:
    _KIND_OF_CODE[_t * 2 + 1] = _KIND_OF_CODE[_t * 2] = VEC3
for _t in (C.DOUBLE, C.INT64, C.UINT64):
    _KIND_OF_CODE[_t * 2] = SCALAR


def _codes(reps: np.ndarray) -> np.ndarray:
    """(type << 1 | inlined) per rep; -1 for arrays and absent values."""
    code = ((reps >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int64) * 2 + ((reps & C._INLINED) != 0)
    code[((reps & C._ARRAY) != 0) | (reps == 0)] = -1
    return code


def classify(reps: np.ndarray) -> np.ndarray:
    """The kind each value rep decodes to (what :func:`decode_scalars` says), without decoding."""
    code = _codes(reps)
    kind = np.where(code >= 0, _KIND_OF_CODE[np.maximum(code, 0)], OTHER).astype(np.int8)
    kind[reps == 0] = MISSING
    return kind


def decode_scalars(crate: C.Crate, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values as an object array, kind per value) for the value reps of attribute defaults."""
    n = len(reps)
    vals = np.empty(n, object)
    kind = np.full(n, OTHER, np.int8)
    kind[reps == 0] = MISSING
    code = _codes(reps)  # each present encoding is decoded once
    seen = np.zeros(512, bool)
    seen[code[code >= 0]] = True
    tokens = None
    for cd in np.flatnonzero(seen).tolist():
        m = code == cd
        t, inl = cd >> 1, cd & 1
        pay = (reps[m] & C._PAYLOAD).astype(np.int64)
        lo = (pay & 0xFFFFFFFF).astype(np.uint32)
        k = SCALAR
        if inl:
            if t == C.BOOL:
                v = ((lo & 0xFF) != 0).astype(object)
            elif t == C.UCHAR:
                v = (lo & 0xFF).astype(np.int64).astype(object)
            elif t in (C.INT, C.INT64):
                v = lo.view(np.int32).astype(np.int64).astype(object)
            elif t in (C.UINT, C.UINT64):
                v = lo.astype(np.int64).astype(object)
            elif t == C.HALF:
                v = (lo & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64).astype(object)
            elif t in (C.FLOAT, C.DOUBLE):
                v = lo.view(np.float32).astype(np.float64).astype(object)
            elif t in (C.TOKEN, C.STRING):
                if tokens is None:
                    tokens = np.asarray(crate.tokens, dtype=object)
                idx = lo.astype(np.int64)
                if t == C.STRING:
                    if idx.max() >= len(crate.strings):
                        raise C.CrateError(f"{crate.path}: a string value names a string that does not exist")
                    idx = crate.strings[idx]
                if idx.max() >= len(tokens):
                    raise C.CrateError(f"{crate.path}: a token value names a token that does not exist")
                v = tokens[idx]
            elif t in _VEC3_BYTES:
                v = _tuples(np.stack([(pay >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).view(np.int8).astype(np.float64))
                k = VEC3
            else:
                continue
        elif t == C.DOUBLE:
            v = _at(crate, pay, "<f8")[:, 0].astype(object)
        elif t in (C.INT64, C.UINT64):
            v = _at(crate, pay, "<i8" if t == C.INT64 else "<u8")[:, 0].astype(object)
        elif t in _VEC3_BYTES:
            v = _tuples(_at(crate, pay, _VEC3_BYTES[t][0], 3).astype(np.float64))
            k = VEC3
        else:
            continue
        vals[m] = v
        kind[m] = k
    return vals, kind


def _tuples(rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), object)
    for i, r in enumerate(rows.tolist()):
        out[i] = tuple(r)
    return out


def twin_tokens(crate: C.Crate) -> np.ndarray:
    """Per token: is it the name of a property path and does it start with ``twin:`` (memoised on the
    crate; only the few distinct property names are tested, not every prim name and value token)."""
    got = getattr(crate, "_twin_tokens", None)
    if got is None:
        tokens = crate.tokens
        got = np.zeros(len(tokens), bool)
        names = np.flatnonzero(np.bincount(crate.path_token[crate.path_is_prop], minlength=len(tokens)))
        got[names] = np.fromiter((tokens[t].startswith(_PREFIX) for t in names.tolist()), bool, len(names))
        crate._twin_tokens = got
    return got


def dense(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, index of each value among them) for ints in [0, bound), without sorting."""
    seen = np.zeros(bound, bool)
    seen[values] = True
    uniq = np.flatnonzero(seen)
    table = np.zeros(bound, np.int64)
    table[uniq] = np.arange(len(uniq))
    return uniq, table[values]


def attribute_types(crate: C.Crate, name_tok: np.ndarray, attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per attribute spec: the type name token its layout keeps (-1: none — metadata attributes
    ``twin:<name>:<field>`` keep none, as ``LayerReader._extract``), and whether a 3-vector default
    is allowed (a value attribute of a vec3 type); the rule the spec-by-spec reader applies."""
    tokens = crate.tokens
    names, name_i = dense(name_tok, len(tokens))
    value = np.flatnonzero(np.asarray([tokens[t].count(":") == 1 for t in names.tolist()], bool)[name_i])
    rep = crate.reps(crate.field("typeName", attrs[value]))  # (metadata attributes, most of them, need none)
    ttok = np.where(rep != 0, (rep & C._PAYLOAD).astype(np.int64), -1)
    if (ttok >= len(tokens)).any():
        raise C.CrateError(f"{crate.path}: an attribute's typeName names a token that does not exist")
    tname = np.full(len(attrs), -1, np.int64)
    tname[value] = ttok
    types, type_i = dense(ttok + 1, len(tokens) + 1)
    vec_ok = np.zeros(len(attrs), bool)
    vec_ok[value] = np.asarray([t > 0 and _USD_TO_TWIN.get(tokens[t - 1]) == "vec3" for t in types.tolist()], bool)[type_i]
    return tname, vec_ok


def layer_specs(crate: C.Crate) -> dict[str, Any]:
    """Prim spec path -> ``(layout, values)`` / ``()`` / ``None`` for every prim spec of the layer
    outside variants (see the module docstring)."""
    tokens = crate.tokens
    st, sp = crate.spec_type, crate.spec_path
    prims = np.flatnonzero(st == C.PRIM)
    twin_tok = twin_tokens(crate)
    attrs = np.flatnonzero((st == C.ATTRIBUTE) & crate.path_is_prop[sp] & twin_tok[crate.path_token[sp]])
    owner = crate.path_parent[sp[attrs]]
    prim_paths = crate.path_strings(sp[prims])
    out: dict[str, Any] = {p: () for p in prim_paths if "{" not in p}
    if not len(attrs):
        return out
    # attributes grouped by owning prim (stable: file order within a prim)
    if len(owner) > 1 and (np.diff(owner) < 0).any():
        order = np.argsort(owner, kind="stable")
        attrs, owner = attrs[order], owner[order]
    name_tok = crate.path_token[sp[attrs]].astype(np.int64)
    vals, kind = decode_scalars(crate, crate.reps(crate.field("default", attrs)))
    tname, vec_ok = attribute_types(crate, name_tok, attrs)
    odd_attr = (kind == OTHER) | ((kind == VEC3) & ~vec_ok)
    # per distinct (name, type name): the layout pair
    uniq, inv = np.unique(name_tok * (len(tokens) + 1) + (tname + 1), return_inverse=True)
    pairs = [(tokens[k // (len(tokens) + 1)], tokens[k % (len(tokens) + 1) - 1] if k % (len(tokens) + 1) else "") for k in uniq.tolist()]
    pair_list = [pairs[i] for i in inv.reshape(-1).tolist()]
    values = vals.tolist()
    bounds = np.flatnonzero(np.diff(owner)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(owner)])).tolist()
    owners = crate.path_strings(owner[starts])
    odd_prim = np.add.reduceat(odd_attr.astype(np.int64), starts) > 0 if len(starts) else np.zeros(0, bool)
    intern: dict[tuple, tuple] = {}
    for path, a, b, odd in zip(owners, starts, ends, odd_prim.tolist()):
        if path not in out:
            continue  # a property of a path the layer holds no prim spec for, or inside a variant
        if odd:
            out[path] = None
            continue
        layout = tuple(pair_list[a:b])
        layout = intern.setdefault(layout, layout)
        out[path] = (layout, tuple(values[a:b]))
    return out
