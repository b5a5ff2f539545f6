"""What a session layer can change, and where a stage's root prim will be before the stage is opened.

A :class:`~twinstage.Twin` opened with :func:`twinstage.open` gets its live layer in
the session layer *before* the stage is composed: inserting a sublayer into the
session layer of an open stage resyncs the whole stage (~1 s at 100k assets). Two
questions follow, answered here from layers alone:

* :func:`root_prim_before_open` — the prim ``state_prim_path`` will put the
  ``TwinState`` prim under (the ``defaultPrim``, else the first root prim a default
  traversal visits), when the root layer alone decides it; otherwise None and the
  caller inserts the live layer after opening, as for a user's own stage.
* :func:`inert_session_layers` — whether the session layer and its sublayers can
  change any composed value. The fresh live layer holds only field-less ``over``
  specs (the state prim and its parents), so readers that trust a stage's files
  (the crate fast path, the read cache) need not step aside for it; any real
  opinion (a ``def``, a property, metadata, a variant set, a non-anonymous or
  missing sublayer, a layer offset) still makes them do so.
"""

from __future__ import annotations

from pxr import Sdf, Usd

#: prim fields an arc-free root prim spec may hold for its definedness to be decided locally
_ARC_FIELDS = ("references", "payload", "inheritPaths", "specializes", "variantSetNames", "variantSelection")


def root_prim_before_open(root: Sdf.Layer) -> Sdf.Path | None:
    """The prim ``GetDefaultPrim()`` (else the first child of the pseudo-root) will be on a stage opened on
    ``root`` with a session layer holding only ``over`` specs below it; None where ``root`` alone cannot say."""
    if root.pseudoRoot.HasInfo("layerRelocates"):
        return None
    if root.defaultPrim:
        path = root.GetDefaultPrimAsPath()
        if path.isEmpty or path.pathElementCount != 1:
            return None
        if root.GetPrimAtPath(path) is not None:  # a root prim with a spec exists on the stage, defined or not
            return path
        if root.subLayerPaths:  # a sublayer may define it
            return None
    elif root.subLayerPaths:
        return None
    # the first root prim a default predicate accepts (active, loaded, defined, not abstract); decided
    # locally for arc-free specs: only the root layer (and the field-less session) has opinions on them
    if root.rootPrimOrder:
        return None
    for spec in root.rootPrims:
        if any(spec.HasInfo(f) for f in _ARC_FIELDS):
            return None
        if spec.specifier == Sdf.SpecifierDef and not (spec.HasInfo("active") and not spec.active):
            return spec.path
    return None  # no root prim: the state prim would be a root prim of its own; insert after opening


def _inert_prim(spec: Sdf.PrimSpec) -> bool:
    stack = [spec]
    while stack:
        s = stack.pop()
        if s.specifier != Sdf.SpecifierOver or s.ListInfoKeys() != ["specifier"] or s.properties or s.variantSets:
            return False
        stack.extend(s.nameChildren)
    return True


def inert_session_layers(stage: Usd.Stage) -> frozenset[str] | None:
    """Identifiers of ``stage``'s session layer and its sublayers when none of them can change a composed
    value; None when one holds a real opinion.

    Inert: the session layer holds no prims and no metadata but ``subLayers`` (with identity offsets);
    each sublayer is an anonymous layer in memory, without sublayers or metadata, whose prim specs are
    all ``over`` with no fields, properties or variant sets. An empty session layer is inert too.
    """
    session = stage.GetSessionLayer()
    if session is None:
        return frozenset()
    if session.rootPrims or not set(session.pseudoRoot.ListInfoKeys()) <= {"subLayers", "subLayerOffsets"}:
        return None
    if not all(off.IsIdentity() for off in session.subLayerOffsets):
        return None
    out = {session.identifier}
    for ident in session.subLayerPaths:
        layer = Sdf.Layer.Find(ident)
        if layer is None or not layer.anonymous or layer.pseudoRoot.ListInfoKeys():
            return None
        if not all(_inert_prim(p) for p in layer.rootPrims):
            return None
        out.add(layer.identifier)
    return frozenset(out)
