"""Scripted events over sim time, applied to an engine (or anything with ``set``).

:class:`Script` is the one place events take effect: the headless runner calls
:meth:`Script.advance` before every tick; a live twin (the bridge's ``run scenario``
command) can drive the same object from its Frame callback. Sensor faults (``fail``,
``bias``) act through :class:`FaultySensors`, a wrapper of the scene's ``sensor``
model that perturbs readings after the model wrote them: a failed reading is set
non-finite, which the engine's quality stage turns into BAD with the last good value
held (exactly how a real dead sensor reads in the twin).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from ._resolve import Plan, PlannedEvent


class FaultySensors:
    """Wraps a model (the scene's ``sensor`` model) and applies active faults after each step."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.order = getattr(inner, "order", 0)
        #: (channel, row) → ("fail", None) | ("bias", offset)
        self.active: dict[tuple[str, int], tuple[str, float | None]] = {}

    def bind(self, table: Any, prims: np.ndarray, stage: Any) -> None:
        self.inner.bind(table, prims, stage)

    def fed(self, fed: dict[str, np.ndarray]) -> None:
        fn = getattr(self.inner, "fed", None)
        if callable(fn):
            fn(fed)

    def step(self, table: Any, t: float, dt: float, rng: np.random.Generator) -> None:
        self.inner.step(table, t, dt, rng)
        for (ch, row), (kind, value) in self.active.items():
            if kind == "fail":
                table[ch][row] = np.nan
            else:
                table[ch][row] += value

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    def __getattr__(self, name: str) -> Any:  # params, rows, … of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class _QuietFaults(logging.Filter):
    """Drops the engine's per-tick 'non-finite values' error for readings a scenario failed on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(f"non-finite values in twin:{ch};" in msg for ch in self.channels)


class Script:
    """Applies a :class:`Plan`'s events as sim time passes.

    ``set_fn(prim, name, value)`` queues a value (``engine.set``); ``replay_fn(file)``
    attaches a telemetry file; ``faults`` is the :class:`FaultySensors` wrapper (needed
    only when the plan has fail/bias/restore events).
    """

    def __init__(self, plan: Plan, set_fn: Callable[[str, str, Any], None], *, faults: FaultySensors | None = None,
                 replay_fn: Callable[[str], Any] | None = None, t0: float = 0.0):
        self.plan = plan
        self.events: list[PlannedEvent] = list(plan.events)
        self.set_fn = set_fn
        self.faults = faults
        self.replay_fn = replay_fn
        self.t0 = t0
        self.ramps: list[tuple[PlannedEvent, float]] = []
        self.applied = 0
        self.quiet = _QuietFaults()

    @property
    def done(self) -> bool:
        return not self.events and not self.ramps

    def advance(self, sim_time: float, dt: float, current: Callable[[str, str], Any]) -> None:
        """Apply every event due by ``sim_time`` (relative to ``t0``); values enter the tick ending at ``sim_time + dt``."""
        t = sim_time - self.t0
        while self.events and self.events[0].t <= t + 1e-9:
            ev = self.events.pop(0)
            self.applied += 1
            self._apply(ev, current)
        if self.ramps:
            keep = []
            for ev, v0 in self.ramps:
                frac = min(1.0, max(0.0, (t + dt - ev.t) / ev.over))
                self.set_fn(ev.ref.prim, ev.ref.name, v0 + (ev.to - v0) * frac)
                if frac < 1.0:
                    keep.append((ev, v0))
            self.ramps = keep

    def _apply(self, ev: PlannedEvent, current: Callable[[str, str], Any]) -> None:
        if ev.kind == "set":
            self.set_fn(ev.ref.prim, ev.ref.name, ev.value)
        elif ev.kind == "ramp":
            self.ramps.append((ev, float(current(ev.ref.prim, ev.ref.name))))
        elif ev.kind == "replay":
            if self.replay_fn is None:
                raise RuntimeError("this twin cannot attach a replay")
            self.replay_fn(ev.file)
        else:
            if self.faults is None:
                raise RuntimeError(f"{ev.kind} needs the scene's sensor model wrapped (FaultySensors)")
            key = (ev.ref.name, ev.ref.row)
            if ev.kind == "restore":
                self.faults.active.pop(key, None)
            else:
                self.faults.active[key] = (ev.kind, ev.value)
                if ev.kind == "fail":
                    self.quiet.channels.add(ev.ref.name)
