"""Reading the scene for an engine, and the provenance of a run (what produced it, how to reproduce it)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from pxr import Usd

from .. import __version__
from ..models import parameters_hash
from ..state import Declaration
from ..usd import StageError, read_asset, read_attributes, twin_prims


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(engine: Any) -> dict[str, Any]:
    models = {m.name: {"parameters": m.parameters(), "hash": parameters_hash(m.parameters())} for m in engine._model_order}
    prov: dict[str, Any] = {
        "tool": f"twinstage {__version__}",
        "scene": engine.source,
        "seed": engine.seed,
        "rate": engine.clock.rate,
        "models": models,
        "parametersHash": parameters_hash({k: v["parameters"] for k, v in models.items()}),
        "dataSources": list(engine.data_sources),
        "usd": ".".join(str(v) for v in Usd.GetVersion()),
        "python": sys.version.split()[0],
        "command": " ".join(sys.argv),
    }
    if os.path.isfile(engine.source):
        prov["sceneSha256"] = _file_sha256(engine.source)
    return prov


def read_scene(stage: Usd.Stage, source: str) -> tuple[list[str], dict[str, Any], list[Declaration]]:
    """Twin prims, their assets and attribute declarations (the part of opening that reads USD)."""
    prims = twin_prims(stage)
    if not prims:
        raise StageError(f"{source}: has no twin prims (no prim applies TwinAssetAPI); see `twinstage info` for candidate assets")
    assets: dict[str, Any] = {}
    decls: list[Declaration] = []
    for prim in prims:
        asset = read_asset(prim)
        assets[asset.path] = asset
        for d, value in read_attributes(prim):
            decls.append(Declaration(asset.path, d.name, d.type, value, d.unit, d.min, d.max, d.role, d.drives, d.description))
    return [str(p.GetPath()) for p in prims], assets, decls
