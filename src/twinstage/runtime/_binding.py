"""Binding a scene's models: each ``twin:model`` name to a model instance (given, else built in), bound to
its prims' rows, in stepping order, each with its own random stream seeded from ``(seed, model name)``."""

from __future__ import annotations

import zlib
from typing import Any, Iterable

import numpy as np
import numpy.random  # noqa: F401 - every engine seeds generators; loaded with the module, not by the first open

from ..models import Model, ModelError, builtin_models
from ..state import StateTable


def bind_models(table: StateTable, assets: dict[str, Any], stage: Any, given: Iterable[Model], seed: int
                ) -> tuple[dict[str, Model], list[Model], dict[str, np.random.Generator]]:
    """``(models by name, models in stepping order, random generator by model name)`` for the table's prims.

    A prim whose ``twin:model`` is neither given nor built in is an error naming it and the choices.
    """
    given = {m.name: m for m in given}
    known = builtin_models()
    by_model: dict[str, list[int]] = {}
    for i, path in enumerate(table.prims):
        m = assets[path].model
        if m:
            by_model.setdefault(m, []).append(i)
    models: dict[str, Model] = {}
    for name in sorted(by_model):
        if name in given:
            model = given[name]
        elif name in known:
            model = known[name]()
        else:
            first = table.prims[by_model[name][0]]
            raise ModelError(f"{first}: twin:model {name!r} is not a known model (built-in: {', '.join(sorted(known))}; "
                             "pass your own with models=[...])")
        model.bind(table, np.array(by_model[name], dtype=np.int32), stage)
        models[name] = model
    order = sorted(models.values(), key=lambda m: (getattr(m, "order", 0), m.name))
    rngs = {m.name: np.random.default_rng([seed, zlib.crc32(m.name.encode())]) for m in order}
    return models, order, rngs


__all__ = ["bind_models"]
