"""Bindings: which external signal feeds which twin attribute, and how.

A :class:`Binding` is the authored form (stored in USD with the twin schema, or in
a mapping file); :func:`resolve` checks it against a twin's StateTable and returns a
:class:`Resolved` binding that sources use in their hot path: channel, row and a
vectorised converter from the source's unit (with scale/offset) to the attribute's
unit. Unknown targets and incompatible units are errors here, at bind time, naming
the binding — never a silent number later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from ..state import StateError, StateTable
from ..units import UnitError, converter
from ._source import TelemetryError

Align = Literal["hold", "linear", "mean"]
Kind = Literal["csv", "parquet", "mqtt", "opcua", "sql", "ingest"]


@dataclass(frozen=True)
class Binding:
    """One external signal → one twin attribute.

    ``key`` is what the source calls the signal: a CSV/Parquet column, an MQTT topic
    (wildcards allowed where the source supports them), an OPC UA NodeId string, a
    historian tag, or an ingest key. ``unit`` is the source's unit ('' = already in
    the attribute's unit); the value entering the twin is
    ``convert(raw * scale + offset)``. ``period`` is the expected sample period in
    seconds (0 = unknown); a binding without a good sample for ``period × stale_after``
    seconds goes STALE. ``align`` maps samples onto the tick grid: ``hold`` (last value
    at or before the tick), ``linear`` (interpolate between the samples around the
    tick), ``mean`` (mean of the samples in the tick's window).
    """

    prim: str
    attribute: str
    kind: str
    key: str
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    period: float = 0.0
    align: str = "hold"
    stale_after: float = 3.0
    name: str = ""  # instance name in USD; default derived from the key

    @property
    def where(self) -> str:
        return f"binding {self.kind}:{self.key} → {self.prim}.twin:{self.attribute}"


@dataclass(frozen=True)
class Resolved:
    binding: Binding
    channel: str
    row: int
    convert: Callable[[np.ndarray], np.ndarray]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw source values → the attribute's unit (vectorised)."""
        b = self.binding
        x = np.asarray(raw, dtype=np.float64)
        if b.scale != 1.0 or b.offset != 0.0:
            x = x * b.scale + b.offset
        return self.convert(x)


def resolve(table: StateTable, binding: Binding) -> Resolved:
    """Check ``binding`` against ``table``; raise :class:`TelemetryError` naming it when it cannot feed its target."""
    b = binding
    try:
        row = table.row(b.prim, b.attribute)
    except StateError as exc:
        raise TelemetryError(f"{b.where}: unknown target ({exc})") from None
    ch = table.channels[b.attribute]
    if ch.type not in ("float", "int"):
        raise TelemetryError(f"{b.where}: twin:{b.attribute} is {ch.type}; telemetry feeds float or int attributes")
    if b.align not in ("hold", "linear", "mean"):
        raise TelemetryError(f"{b.where}: align must be hold, linear or mean, not {b.align!r}")
    for what, v in (("scale", b.scale), ("offset", b.offset), ("period", b.period), ("stale_after", b.stale_after)):
        if not math.isfinite(v):
            raise TelemetryError(f"{b.where}: {what} must be finite, got {v!r}")
    if b.period < 0 or b.stale_after <= 0:
        raise TelemetryError(f"{b.where}: period must be >= 0 and stale_after > 0")
    try:
        conv = converter(b.unit or ch.unit, ch.unit, b.where)
    except UnitError as exc:
        raise TelemetryError(str(exc)) from None
    return Resolved(b, b.attribute, row, conv)
