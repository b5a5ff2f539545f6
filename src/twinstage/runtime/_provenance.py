"""Reading the scene for an engine, and the provenance of a run (what produced it, how to reproduce it)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from pxr import Usd

from .. import __version__
from ..models import parameters_hash
from ..state import Declaration
from ..usd import StageError


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
    stages = [st.describe() for st in getattr(engine, "_stages", ()) if callable(getattr(st, "describe", None))]
    if stages:
        prov["stages"] = stages
    if getattr(engine, "params_layers", None):
        prov["paramsLayers"] = [dict(p) for p in engine.params_layers]
    if os.path.isfile(engine.source):
        prov["sceneSha256"] = _file_sha256(engine.source)
    return prov


def read_scene(stage: Usd.Stage, source: str) -> tuple[list[str], dict[str, Any], Sequence[Declaration]]:
    """Twin prims, their assets and attribute declarations (the part of opening that reads USD).

    One pass over the stage (:func:`twinstage.usd.read_twin`; the same result as reading
    prim by prim, measured 6× faster at 10k assets), cached per layer content hash.
    """
    from ..usd import read_twin

    desc = read_twin(stage)
    if not desc.assets:
        raise StageError(f"{source}: has no twin prims (no prim applies TwinAssetAPI); see `twinstage info` for candidate assets")
    return desc.prims, {a.path: a for a in desc.assets}, desc.declarations
