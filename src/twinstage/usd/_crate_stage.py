"""A whole twin description straight from a stage's one crate file, when composition cannot change it.

For the shape big plant scenes have — one ``.usdc`` layer, machines that are
``instanceable`` prims referencing a prototype in the same file, twin data authored
on the machines themselves — everything :func:`~twinstage.usd.read_twin` needs
(which prims a ``Traverse`` visits and in what order, their ``apiSchemas``, their
``twin:*`` attribute defaults) is in the layer's specs, and :mod:`._crate` reads all
of them with numpy in one pass. :func:`describe` returns the description as the
plain columns of :mod:`._readcache` (``paths``, ``fields``, ``templates``,
``decl_*``), or ``None`` with the reason the stage is not of that shape, and then
the reader walks the stage through pxr as before.

The shape (checked, never assumed): the stage uses only its root layer (a crate
file, unedited) and a session layer that changes nothing (empty, or holding only a
twin's fresh live layer of field-less ``over`` specs), with no population mask; the layer has
no variants, inherits, specializes, payloads, relocates, sublayers or ``primOrder``;
its only arcs are internal references without layer offsets' effect on defaults or
custom data, authored on prims that are locally ``def`` and ``instanceable`` (so
their namespace below is a prototype no traversal enters); and no reference target's
subtree holds twin data (a ``Twin*`` API schema or a ``twin:*`` attribute) or authors
``active`` on the target. Under those rules a prim's composed ``apiSchemas`` and
``twin:*`` defaults are its local spec's, and the traversal is the layer's
``primChildren`` order, pruned at ``over``/``class``/inactive prims and at instances.
Prims whose values the vectorised rules do not cover go through the prim-by-prim
builder; the caller spot-checks a sample of prims against the prim-by-prim reader.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from pxr import Sdf, Usd

from . import _crate as C
from ._crate_plain import Fallback, NotCovered, plain_description
from ._crate_twin import twin_tokens
from ._schema import NAMESPACE, SchemaError
from ._session import inert_session_layers

_PREFIX = NAMESPACE + ":"
_BLOCKING_FIELDS = ("inheritPaths", "specializes", "variantSetNames", "variantSelection", "variantChildren", "relocates",
                    "subLayers", "primOrder", "payload", "layerRelocates")
# listop header bits, in the order the lists follow the header
_LISTS = ((1 << 1, "explicitItems"), (1 << 2, "addedItems"), (1 << 5, "prependedItems"), (1 << 6, "appendedItems"),
          (1 << 3, "deletedItems"), (1 << 4, "orderedItems"))



def _stage_shape(stage: Usd.Stage) -> str:
    """The root layer's file path, or raise :class:`NotCovered`."""
    root = stage.GetRootLayer()
    session = inert_session_layers(stage)  # empty, or only field-less overs (a twin's fresh live layer)
    if session is None:
        raise NotCovered("the session layer holds opinions")
    if any(layer.identifier != root.identifier and layer.identifier not in session for layer in stage.GetUsedLayers()):
        raise NotCovered("the stage uses more than its root layer")
    if root.anonymous or root.dirty or not root.realPath:
        raise NotCovered("the root layer is anonymous or edited")
    if not stage.GetPopulationMask().IncludesSubtree(Sdf.Path.absoluteRootPath):
        raise NotCovered("a population mask")
    if not C.is_crate(root.realPath):
        raise NotCovered("the root layer is not a crate file")
    return root.realPath


def _listop(crate: C.Crate, rep: int, item: str) -> tuple[bool, dict[str, list]]:
    """(explicit, lists) of a list op value whose items are fixed-size ``struct`` items."""
    if rep & (1 << 62) or rep & (1 << 63):
        raise NotCovered("an inlined or array list op")
    pos = rep & ((1 << 48) - 1)
    if pos >= len(crate.data):
        raise C.CrateError(f"{crate.path}: a list op points outside the file")
    bits = crate.data[pos]
    pos += 1
    out = {}
    for bit, name in _LISTS:
        if bits & bit:
            items = crate.read_vector(pos, item)
            out[name] = items
            pos += 8 + len(items) * struct.calcsize("<" + item)
    return bool(bits & 1), out


def _references(crate: C.Crate, rep: int) -> list[int]:
    """Target path indexes of an internal-only reference list op (else :class:`NotCovered`)."""
    if (rep >> 48) & 0xFF != C.REFERENCE_LIST_OP or rep & (3 << 62):
        raise NotCovered("references of an unexpected encoding")
    data, pos = crate.data, rep & ((1 << 48) - 1)
    bits = data[pos]
    pos += 1
    targets = []
    for bit, name in _LISTS:
        if not bits & bit:
            continue
        n = crate.u64(pos)
        pos += 8
        for _ in range(n):
            if pos + 32 > len(data):
                raise C.CrateError(f"{crate.path}: a reference runs past the end of the file")
            asset, prim, _offset, _scale, ndict = struct.unpack_from("<IIddQ", data, pos)
            pos += 32
            if ndict:
                raise NotCovered("a reference with custom data")
            if asset >= len(crate.strings) or prim >= len(crate.path_parent):
                raise C.CrateError(f"{crate.path}: a reference names a string or path that does not exist")
            if crate.tokens[crate.strings[asset]]:
                raise NotCovered("a reference to another file")
            if name != "deletedItems":
                targets.append(prim)
    return targets


def _schemas(crate: C.Crate, rep: int) -> tuple[str, ...]:
    """A token list op applied to nothing (what ``GetMetadata('apiSchemas')`` composes from one opinion)."""
    if (rep >> 48) & 0xFF != C.TOKEN_LIST_OP:
        raise NotCovered("apiSchemas of an unexpected type")
    explicit, lists = _listop(crate, rep, "I")
    tokens = crate.tokens
    if any(i >= len(tokens) for items in lists.values() for (i,) in items):
        raise C.CrateError(f"{crate.path}: apiSchemas names a token that does not exist")
    op = Sdf.TokenListOp()
    if explicit:  # an explicit list op holds its explicit items only
        op.ClearAndMakeExplicit()
        op.explicitItems = [tokens[i] for (i,) in lists.get("explicitItems", ())]
    else:
        for name, items in lists.items():
            setattr(op, name, [tokens[i] for (i,) in items])
    return tuple(op.ApplyOperations([]))


def _inline(reps: np.ndarray, code: int) -> np.ndarray:
    """Inlined payloads of reps of type ``code`` (-1 where absent or of another type)."""
    t = (reps >> np.uint64(48)) & np.uint64(0xFF)
    ok = (t == code) & ((reps & C._INLINED) != 0) & ((reps & C._ARRAY) == 0)
    return np.where(ok, (reps & np.uint64(0xFFFFFFFF)).astype(np.int64), np.where(reps == 0, -1, -2))


class _Layer:
    """The prim-level facts of one crate layer the traversal needs."""

    def __init__(self, crate: C.Crate):
        self.crate = c = crate
        if np.isin(c.spec_type, (C.VARIANT, C.VARIANT_SET)).any():
            raise NotCovered("variants")
        names = c.field_names()
        blocking = sorted(names.intersection(_BLOCKING_FIELDS))
        if blocking:
            raise NotCovered("the layer authors " + ", ".join(blocking))
        self.prims = np.flatnonzero(c.spec_type == C.PRIM)
        self.prim_path = c.spec_path[self.prims]
        self.spec_of_path = np.full(len(c.path_parent), -1, np.int64)
        self.spec_of_path[self.prim_path] = np.arange(len(self.prims))
        roots = np.flatnonzero(c.spec_type == C.PSEUDO_ROOT)
        if len(roots) != 1:
            raise C.CrateError(f"{c.path}: {len(roots)} pseudo-root specs")
        self.root_spec = roots[0]
        spec = c.field("specifier", self.prims)
        self.specifier = _inline(c.reps(spec), C.SPECIFIER)
        if (self.specifier < -1).any():
            raise C.CrateError(f"{c.path}: a specifier of the wrong type")
        self.active = _inline(c.reps(c.field("active", self.prims)), C.BOOL)
        self.instanceable = _inline(c.reps(c.field("instanceable", self.prims)), C.BOOL)
        if (self.active < -1).any() or (self.instanceable < -1).any():
            raise NotCovered("active or instanceable of an unexpected type")
        self.refs = c.reps(c.field("references", self.prims))
        self.api = c.reps(c.field("apiSchemas", self.prims))
        self.children = c.reps(c.field("primChildren", self.prims))
        self.root_children = int(c.reps(c.field("primChildren", np.asarray([self.root_spec])))[0])
        # child lookup: (parent path, name token) -> path index, for prim paths
        prim_paths = np.flatnonzero(c.path_known & ~c.path_is_prop & (c.path_parent >= 0))
        key = c.path_parent[prim_paths].astype(np.int64) * len(c.tokens) + c.path_token[prim_paths]
        order = np.argsort(key)
        self._keys, self._paths = key[order], prim_paths[order]

    def child_paths(self, parent: int, rep: int) -> np.ndarray:
        """Path indexes of a prim's children, in its ``primChildren`` order."""
        if rep == 0:
            return np.zeros(0, np.int64)
        if (rep >> 48) & 0xFF != C.TOKEN_VECTOR or rep & (3 << 62):
            raise NotCovered("primChildren of an unexpected encoding")
        c = self.crate
        pos = rep & ((1 << 48) - 1)
        n = c.u64(pos)
        if pos + 8 + 4 * n > len(c.data):
            raise C.CrateError(f"{c.path}: primChildren runs past the end of the file")
        toks = np.frombuffer(c.data, np.uint32, n, pos + 8).astype(np.int64)
        key = parent * len(c.tokens) + toks
        at = np.searchsorted(self._keys, key)
        at = np.minimum(at, len(self._keys) - 1)
        if len(key) and (self._keys[at] != key).any():
            raise NotCovered("primChildren names a child the layer has no path for")
        return self._paths[at]

    def check_references(self) -> np.ndarray:
        """Spec indexes of instances (prims with references); raises unless every arc is harmless."""
        c = self.crate
        has = np.flatnonzero(self.refs != 0)
        if not len(has):
            return has
        if ((self.specifier[has] != 0) | (self.instanceable[has] != 1)).any():
            raise NotCovered("a reference on a prim that is not a locally defined instanceable prim")
        targets = set()
        for rep in sorted(set(self.refs[has].tolist())):  # (a set: np.unique's first call imports numpy.ma, ~60 ms)
            targets.update(_references(c, int(rep)))
        # twin data anywhere in a target's subtree, or `active` authored on a target, would flow into instances
        twin_tok = twin_tokens(c)
        attrs = (c.spec_type == C.ATTRIBUTE) & c.path_is_prop[c.spec_path]
        marked = np.zeros(len(c.path_parent), bool)
        marked[c.path_parent[c.spec_path[attrs & twin_tok[c.path_token[c.spec_path]]]]] = True
        for rep in sorted(set(self.api[self.api != 0].tolist())):
            if any(s.startswith("Twin") for s in _schemas(c, int(rep))):
                marked[self.prim_path[self.api == rep]] = True
        cur = np.flatnonzero(marked)
        while len(cur):  # up to every ancestor
            cur = c.path_parent[cur]
            cur = cur[(cur >= 0) & ~marked[np.maximum(cur, 0)]]
            marked[cur] = True
        tl = np.fromiter(targets, np.int64, len(targets))
        if len(tl) and (marked[tl].any() or (self.spec_of_path[tl] < 0).any()):
            raise NotCovered("a reference target holds twin data or is not a prim in this layer")
        if len(tl) and (self.active[self.spec_of_path[tl]] >= 0).any():
            raise NotCovered("a reference target authors active")
        return has

    def traverse(self, instances: np.ndarray) -> list[int]:
        """Prim spec indexes a default ``Usd.Stage.Traverse`` visits, in order."""
        is_instance = np.zeros(len(self.prims), bool)
        is_instance[instances] = True
        visible = (self.specifier == 0) & (self.active != 0)
        out: list[int] = []
        root_path = int(self.crate.spec_path[self.root_spec])
        if self.crate.path_parent[root_path] != -1:
            raise C.CrateError(f"{self.crate.path}: the pseudo-root is not the root path")
        roots = self.spec_of_path[self.child_paths(root_path, self.root_children)]
        if (roots < 0).any():
            raise NotCovered("a root child without a spec")
        stack = [iter(roots.tolist())]
        prim_path, spec_of_path = self.prim_path, self.spec_of_path
        vis, inst, children = visible.tolist(), is_instance.tolist(), self.children.tolist()
        while stack:
            for s in stack[-1]:
                if s < 0 or not vis[s]:
                    continue
                out.append(s)
                rep = children[s]
                if rep and not inst[s]:
                    kids = spec_of_path[self.child_paths(int(prim_path[s]), rep)]
                    stack.append(iter(kids.tolist()))
                    break
            else:
                stack.pop()
        return out


def describe(stage: Usd.Stage, fallback: Fallback, norm_meta: Any) -> tuple[dict[str, Any] | None, str]:
    """(plain description, "") for a stage of the covered shape, else (None, why).

    ``fallback(path, schemas, layout, values)`` reads a prim the columns do not cover
    (``layout`` None: only the prim-by-prim reader can); ``norm_meta`` is the builder's
    metadata rule."""
    try:
        path = _stage_shape(stage)
        crate = C.Crate(path)
    except (NotCovered, C.CrateError, OSError) as exc:
        return None, str(exc)
    try:
        layer = _Layer(crate)
        order = layer.traverse(layer.check_references())
        return plain_description(layer, order, _schemas, fallback, norm_meta), ""
    except SchemaError:
        raise  # a prim the prim-by-prim reader rejects: the same error either way
    except (NotCovered, C.CrateError) as exc:
        return None, str(exc)
    except (IndexError, ValueError, OverflowError, struct.error) as exc:  # a file this reader misjudged: pxr decides
        return None, f"corrupt crate file ({type(exc).__name__}: {exc})"
    finally:
        crate.close()
