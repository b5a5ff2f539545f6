"""The model protocol and the registry of built-in models."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..state import StateTable


class ModelError(ValueError):
    """A model cannot bind to the scene; the message names the prim and what is missing."""


@runtime_checkable
class Model(Protocol):
    """What a behaviour model implements.

    A model drives every twin prim whose ``twin:model`` equals its ``name``.
    :meth:`bind` is called once with those prims (indices into ``table.prims``)
    and resolves everything it needs (rows of channels, relationships); it raises
    :class:`ModelError` naming the prim when something is missing. :meth:`step`
    advances all its prims at once with numpy — no Python loop over prims — by
    writing into ``table[channel]`` in place. ``rng`` is the model's own
    generator, seeded from the run's seed and the model name, so runs repeat
    bit for bit.

    Optional: ``fed(mask)`` is called when telemetry sources are added or removed,
    with a bool mask per channel of the rows a source feeds; a model that writes
    such rows should skip them (the engine restores fed rows after every step
    anyway, so measured and simulated values never fight).
    """

    name: ClassVar[str]

    def bind(self, table: StateTable, prims: np.ndarray, stage: Any) -> None: ...

    def step(self, table: StateTable, t: float, dt: float, rng: np.random.Generator) -> None: ...

    def parameters(self) -> dict[str, Any]: ...


def parameters_hash(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataclass_params(obj: Any) -> dict[str, Any]:
    return asdict(obj) if is_dataclass(obj) else dict(obj)


_REGISTRY: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Class decorator: make a model available by its ``name`` to ``twin:model``."""
    _REGISTRY[cls.name] = cls
    return cls


def builtin_models() -> dict[str, type]:
    return dict(_REGISTRY)


def rows_for(table: StateTable, name: str, prims: np.ndarray, model: str) -> np.ndarray:
    """Rows of channel ``name`` for ``prims``, with an error naming the first prim that lacks it."""
    ch = table.channels.get(name)
    if ch is None:
        raise ModelError(f"{table.prims[int(prims[0])]}: model {model!r} needs twin:{name}, which no prim declares")
    pos = np.searchsorted(ch.prim_index, prims)
    pos = np.clip(pos, 0, len(ch) - 1)
    missing = ch.prim_index[pos] != prims
    if missing.any():
        raise ModelError(f"{table.prims[int(prims[missing][0])]}: model {model!r} needs twin:{name}, which this prim does not declare")
    return pos.astype(np.int64)


def require_unit(table: StateTable, name: str, unit: str, model: str) -> None:
    """Models compute in fixed units; a channel in a convertible unit is not enough (say which)."""
    ch = table.channels[name]
    if ch.unit != unit:
        from ..units import UnitError, converter

        try:
            converter(ch.unit, unit)
        except UnitError as exc:
            raise ModelError(f"model {model!r}: twin:{name} is in {ch.unit!r}, which is not {unit!r} ({exc})") from None
        raise ModelError(f"model {model!r}: twin:{name} must be declared in {unit!r} (it is {ch.unit!r})")
