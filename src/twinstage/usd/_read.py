"""Read a whole twin from a stage in one pass: assets and attribute declarations.

:func:`read_twin` gives exactly what :func:`~twinstage.usd.twin_prims` +
:func:`~twinstage.usd.read_asset` + :func:`~twinstage.usd.read_attributes` give
prim by prim, at a fraction of the cost on big scenes. Those read every value
through ``Usd.Attribute.Get`` (~2–3 µs a call, 35 calls per factory machine); here
the stage is traversed once for the twin prims (their composed ``apiSchemas``), and
each prim's values are resolved from its *prim stack* (``Usd.Prim.GetPrimStack``:
its specs in every layer and composition arc, strongest first). A spec's ``twin:*``
attributes are read once per (layer, spec path) — a prototype referenced by 10k
machines is read once — and, for layers backed by an unmodified file, remembered in
an on-disk cache keyed by the SHA-256 of the file's bytes (see :mod:`._readcache`),
so opening the same file again reads no values through the API at all. On top of
that, the whole description (assets and declarations) is cached per *stage*: keyed by
the hashes of every layer the stage uses plus how it was opened (load rules,
population mask, variant fallbacks), so a warm open skips the traversal too and only
spot-checks a sample of prims against the stage (a stage with a non-empty session
layer or an anonymous or edited layer is never served from it).

A first (cold) open of a ``.usdc`` file reads no values through the API either: where
composition cannot change the twin (one crate layer; machines as ``instanceable``
prims referencing a prototype in the same file — see :mod:`._crate_stage`), the
whole description comes from the file's sections in one vectorised pass
(:mod:`._crate`), spot-checked against the prim-by-prim reader; for other stages,
each crate layer's ``twin:*`` attributes are still decoded at once
(:mod:`._read_layers`). ``stats["crate"]`` says which ("read", or why not).

Anything the fast path does not model — a value block, a value attribute with
time samples but no default, a value type it does not know, a declaration that
fails validation — sends that one prim through the prim-by-prim reader, so the
result (or the :class:`~twinstage.usd.SchemaError`) is always the same.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import os
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pxr import Usd

from ..state import Declaration, DeclarationColumns
from ..state._decls import declaration_maker
from . import _crate_stage, _readcache
from ._crate_plain import plan_layout
from ._read_layers import LayerReader, merge
from ._schema import ASSET_API, ROLES, AssetDecl, read_asset, read_attributes, register


@dataclass(frozen=True)
class TwinDescription:
    """Everything :class:`~twinstage.Twin` needs from the stage to build its state.

    ``assets`` in stage traversal order; ``declarations`` per asset in the order of
    its ``TwinStateAPI`` instances (the order of the prim-by-prim reader): a tuple, or
    (from the crate reader and the read cache) :class:`~twinstage.state.DeclarationColumns`,
    which reads like and equals that tuple and lets a ``StateTable`` skip making the objects.
    """

    assets: tuple[AssetDecl, ...]
    declarations: tuple[Declaration, ...] | DeclarationColumns
    stats: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def prims(self) -> list[str]:
        return [a.path for a in self.assets]


class _Plan:
    """:func:`._crate_plain.plan_layout` as getters over a prim's values (plus a trailing None for what is missing)."""

    __slots__ = ("asset", "decls")

    def __init__(self, layout: tuple, schemas: tuple):
        plan = plan_layout(layout, schemas)
        missing = len(layout)  # values get a trailing None: a missing attribute reads as None
        self.asset = itemgetter(*(missing if i is None else i for i in plan["asset"]))
        self.decls = tuple((name, missing if vi is None else vi, twin_type, itemgetter(*(missing if m is None else m for m in meta)))
                           for name, vi, twin_type, meta in plan["decls"])


def _norm_meta(raw: tuple) -> tuple | None:
    """(unit, min, max, description, role, drives) as the slow reader makes them; None if invalid."""
    unit, lo, hi, desc, role, drives = raw
    try:
        out = (
            "" if unit is None else str(unit),
            -math.inf if lo is None else float(lo),
            math.inf if hi is None else float(hi),
            "" if desc is None else str(desc),
            "state" if role is None else str(role),
            "" if drives is None else str(drives),
        )
    except (TypeError, ValueError, OverflowError):
        return None
    if out[4] not in ROLES or not out[1] <= out[2]:
        return None
    return out


def _text(v: Any) -> str:
    return str(v) if v is not None else ""


class _Builder:
    """Turns resolved (layout, values) into an asset and its declarations, memoising plans and metadata."""

    def __init__(self) -> None:
        self.plans: dict[tuple, _Plan] = {}
        self.metas: dict[tuple, tuple | None] = {}
        self.makers: dict[tuple, Any] = {}  # (name, type, meta) -> declaration_maker

    def build(self, path: str, schemas: tuple, layout: tuple, values: tuple) -> tuple[AssetDecl, list[Declaration]] | None:
        key = (layout, schemas)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = _Plan(layout, schemas)
        vals = values + (None,)
        kind, asset_id, model = plan.asset(vals)
        asset = AssetDecl(path, _text(kind), _text(asset_id), _text(model))
        decls = []
        metas = self.metas
        for name, vi, twin_type, meta_of in plan.decls:
            value = vals[vi]
            if value is None or twin_type is None:
                return None
            raw = meta_of(vals)
            try:
                meta = metas[raw]
            except KeyError:
                meta = metas[raw] = _norm_meta(raw)
            except TypeError:  # unhashable
                return None
            if meta is None:
                return None
            try:
                if twin_type == "float":
                    value = float(value)
                    if not math.isfinite(value):
                        return None
                elif twin_type == "vec3":
                    value = tuple(float(c) for c in value)
                    if len(value) != 3 or not all(math.isfinite(c) for c in value):
                        return None
                elif twin_type == "int":
                    value = int(value)
                else:
                    value = bool(value)
            except (TypeError, ValueError, OverflowError):
                return None
            mk = (name, twin_type, meta)
            make = self.makers.get(mk)
            if make is None:
                unit, lo, hi, desc, role, drives = meta
                make = self.makers[mk] = declaration_maker(name, twin_type, unit, lo, hi, role, drives, desc)
            decls.append(make(path, value))
        return asset, decls


def _slow_prim(prim: Usd.Prim) -> tuple[AssetDecl, list[Declaration]]:
    asset = read_asset(prim)
    decls = [Declaration(asset.path, d.name, d.type, v, d.unit, d.min, d.max, d.role, d.drives, d.description) for d, v in read_attributes(prim)]
    return asset, decls


def read_twin(stage: Usd.Stage, *, cache: bool | str | os.PathLike[str] | None = None) -> TwinDescription:
    """Every twin asset of ``stage`` (traversal order) and every attribute declaration.

    The same result as ``twin_prims`` + ``read_asset`` + ``read_attributes``, in one
    pass. ``cache``: ``None`` follows ``TWINSTAGE_READ_CACHE`` (``0`` turns the
    on-disk cache off; a path puts it there; default ``$XDG_CACHE_HOME/twinstage/read``),
    ``False`` never touches the disk, ``True`` or a folder uses the cache there.
    """
    with _no_gc():
        return _read_twin(stage, cache)


@contextlib.contextmanager
def _no_gc():
    """No cyclic GC while building many small acyclic objects (half a million declarations at
    100k assets): each gen-2 pass walks the whole growing heap, ~half the build time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_twin(stage: Usd.Stage, cache: bool | str | os.PathLike[str] | None) -> TwinDescription:
    register()
    store = _readcache.Cache.open(cache)
    keys: dict[str, str | None] = {}  # layer identifier -> cache key (each file hashed once)
    stage_key = store.stage_key(stage, keys) if store is not None else None
    if stage_key is not None:
        got = _cached_description(stage, store, stage_key)
        if got is not None:
            return got
    got, why = _crate_description(stage)
    if got is not None:
        if stage_key is not None:
            store.store(stage_key, _readcache.stored_form(got[1]))
        return got[0]
    readers: dict[str, LayerReader] = {}
    assets: list[AssetDecl] = []
    decls: list[Declaration] = []
    slow = 0
    builder = _Builder()
    for prim in stage.Traverse():
        op = prim.GetMetadata("apiSchemas")
        if not op:
            continue
        schemas = tuple(op.ApplyOperations([]))
        if ASSET_API not in schemas:
            continue
        path = str(prim.GetPath())
        entries = []
        odd = False
        for ps in prim.GetPrimStack():
            layer = ps.layer
            ident = layer.identifier
            reader = readers.get(ident)
            if reader is None:
                reader = readers[ident] = LayerReader(layer, store, keys.get(ident))
            e = reader.get(ps, str(ps.path))
            if e is None:
                odd = True
                break
            if e:
                entries.append(e)
        got = None
        if not odd:
            layout, values = merge(entries) if entries else ((), ())
            got = builder.build(path, schemas, layout, values)
        if got is None:
            got = _slow_prim(prim)
            slow += 1
        assets.append(got[0])
        decls.extend(got[1])
    hits = sum(1 for r in readers.values() if r.loaded)
    for r in readers.values():
        r.save()
    if stage_key is not None:
        store.store(stage_key, _readcache.description_to_plain(assets, decls, slow, len(readers)))
    return TwinDescription(tuple(assets), tuple(decls), {"slow_prims": slow, "layers": len(readers), "cached_layers": hits, "crate": why})


def _crate_description(stage: Usd.Stage) -> tuple[tuple[TwinDescription, dict] | None, str]:
    """The description read in one vectorised pass from the stage's crate file (:mod:`._crate_stage`),
    spot-checked against the prim-by-prim reader; (None, why) for a stage of another shape."""
    builder = _Builder()
    slow = [0]

    def fallback(path: str, schemas: tuple, layout: tuple | None, values: tuple) -> tuple[AssetDecl, list[Declaration]]:
        if layout is not None:
            got = builder.build(path, schemas, layout, values)
            if got is not None:
                return got
        slow[0] += 1
        return _slow_prim(stage.GetPrimAtPath(path))

    plain, why = _crate_stage.describe(stage, fallback, _norm_meta)
    if plain is None:
        return None, why
    plain["slow_prims"] = slow[0]
    if not plain["paths"]:
        return (TwinDescription((), (), {"slow_prims": 0, "layers": 1, "cached_layers": 0, "crate": "read"}), plain), ""
    got = _checked_description(stage, plain, {"slow_prims": slow[0], "layers": 1, "cached_layers": 0, "crate": "read"},
                               trusted=True)
    if got is None:
        return None, "the stage differs from its file (changed since it was opened?)"
    return (got, plain), ""


def _cached_description(stage: Usd.Stage, store: _readcache.Cache, key: str, sample: int = 16) -> TwinDescription | None:
    """The whole description stored for this stage's layers, spot-checked against the stage (None: a miss).

    A stage's twin description is a function of the content of the layers it uses
    (plus load rules, population mask and variant fallbacks, all in ``key``); as for
    the per-layer entries, a sample of prims is re-read prim by prim in case a file
    changed after its layer was opened.
    """
    plain = store.load(key)
    if plain is None:
        return None
    layers = plain.get("layers", 0)
    return _checked_description(stage, plain, {"slow_prims": plain.get("slow_prims", 0), "layers": layers, "cached_layers": layers,
                                               "description_cached": True}, sample)


def _checked_description(stage: Usd.Stage, plain: dict[str, Any], stats: dict[str, Any], sample: int = 16,
                         trusted: bool = False) -> TwinDescription | None:
    """Objects from a plain description, if a spread sample of its prims (and the last) reads the same
    prim by prim from ``stage``; None otherwise."""
    try:
        assets, decls, slow = _readcache.description_from_plain(plain, AssetDecl, trusted)
    except Exception:  # noqa: BLE001 - malformed entry: a miss
        return None
    if not assets:
        return None
    dp = plain["decl_prim"]  # sorted: an asset's declarations are decls[bisect_left(dp, i):bisect_right(dp, i)]
    step = max(1, len(assets) // sample)
    for i in sorted(set(range(0, len(assets), step)[:sample]) | {len(assets) - 1}):
        a = assets[i]
        prim = stage.GetPrimAtPath(a.path)
        if not prim:
            return None
        try:
            want = _slow_prim(prim)
        except Exception:  # noqa: BLE001 - the stage now says something else: re-read it
            return None
        if want[0] != a or tuple(want[1]) != tuple(decls[bisect.bisect_left(dp, i) : bisect.bisect_right(dp, i)]):
            return None
    return TwinDescription(tuple(assets), decls, stats)  # DeclarationColumns: objects only where read
