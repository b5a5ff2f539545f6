"""The prim-by-prim reading of a twin that read_twin (and its crate fast path) must match exactly."""

from __future__ import annotations

from pxr import Usd

from twinstage.state import Declaration
from twinstage.usd import read_asset, read_attributes, twin_prims


def reference_description(stage: Usd.Stage) -> tuple[tuple, tuple]:
    """(assets, declarations) the way the Twin read them before read_twin: prim by prim through Usd."""
    assets, decls = [], []
    for prim in twin_prims(stage):
        a = read_asset(prim)
        assets.append(a)
        decls.extend(Declaration(a.path, d.name, d.type, v, d.unit, d.min, d.max, d.role, d.drives, d.description) for d, v in read_attributes(prim))
    return tuple(assets), tuple(decls)
