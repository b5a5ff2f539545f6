"""Frame: the immutable record of what one tick changed."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterator, Mapping

import numpy as np


class Quality(enum.IntFlag):
    """Per-value quality flags (a bit field, 0 = good)."""

    GOOD = 0
    STALE = 1  #: no fresh input within its expected period
    OUT_OF_RANGE = 2  #: outside the attribute's declared limits
    ESTIMATED = 4  #: produced by a model/assimilation, not measured
    LATE = 8  #: arrived after later samples (out of order)
    BAD = 16  #: rejected (non-finite, failed a check); the previous value is kept
    UNCERTAIN = 32  #: the source says the value is of uncertain quality (e.g. OPC UA Uncertain)
    OVERFLOW = 64  #: samples for this value were dropped because a buffer was full


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True)
class Change:
    """Changed rows of one channel: ``rows`` index the channel, ``values``/``quality`` align with them."""

    rows: np.ndarray
    values: np.ndarray
    quality: np.ndarray

    @classmethod
    def make(cls, rows: np.ndarray, values: np.ndarray, quality: np.ndarray) -> "Change":
        return cls(_frozen(rows.astype(np.int32, copy=False)), _frozen(values), _frozen(quality.astype(np.uint8, copy=False)))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, slots=True)
class Frame:
    """One tick: its number, sim time, wall time and the changed entries per channel.

    Immutable: its arrays are read-only and ``changes`` is a read-only mapping, so
    every sink sees the same Frame and none can disturb another.
    """

    tick: int
    sim_time: float
    wall_time: float
    changes: Mapping[str, Change] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def make(cls, tick: int, sim_time: float, wall_time: float, changes: dict[str, Change]) -> "Frame":
        return cls(tick, sim_time, wall_time, MappingProxyType(dict(changes)))

    @property
    def n_changed(self) -> int:
        return sum(len(c) for c in self.changes.values())

    def items(self) -> Iterator[tuple[str, int, object, int]]:
        """Yield ``(channel, row, value, quality)`` for every change (slow path, for scripts)."""
        for name, ch in self.changes.items():
            for row, value, q in zip(ch.rows.tolist(), ch.values.tolist(), ch.quality.tolist()):
                yield name, row, value, q
