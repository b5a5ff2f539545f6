"""Scenarios the bridge's ``scenario`` command runs on the live twin, on the one scenario runner.

A scenario is a :class:`~twinstage.scenarios.ScenarioSpec`, a spec file, or the short form
``[(seconds, prim, attribute, value), ...]`` (turned into a spec of ``set`` events). Each is
checked against the twin's table when the server starts (a bad one fails there, naming the
event), then run by a :class:`~twinstage.scenarios.Script` — the object the headless runner
uses — from the server's Frame callback: ``script.advance(frame.sim_time, dt, get)`` queues
the due sets/ramps through the bridge's control, timed from the sim time the command ran.

Sensor faults (``fail``/``bias``/``restore``), ``replay`` events, and model-parameter
changes (``models``/``params``) are for headless runs only: a live twin's sensors are real
and its parameters are an operator's business. Such a scenario is registered but the
command answers it with a clear ``invalid_value`` error.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

#: the short form of a scenario step: (seconds after start, prim, attribute, value)
ScenarioStep = tuple[float, str, str, Any]

_LIVE_KINDS = ("set", "ramp")


class ScenarioRejected(ValueError):
    """The scenario cannot run on a live twin (the message says why)."""


def _as_spec(name: str, scenario: Any) -> Any:
    from ..scenarios import ScenarioSpec, load_spec, parse_spec

    if isinstance(scenario, ScenarioSpec):
        return scenario
    if isinstance(scenario, (str, Path)):
        return load_spec(scenario)
    steps = sorted(scenario, key=lambda s: float(s[0]))
    events = []
    for i, step in enumerate(steps):
        if len(step) != 4:
            raise ValueError(f"scenario {name!r} step {i}: expected (seconds, prim, attribute, value), got {step!r}")
        t, prim, attr, value = step
        events.append({"at": float(t), "set": f"{prim}.{attr}", "value": value})
    duration = max([e["at"] for e in events] + [0.0]) + 1.0
    return parse_spec({"name": name, "scene": "<live twin>", "duration": duration, "events": events}, f"<bridge scenario {name!r}>")


class ScenarioRunner:
    def __init__(self, scenarios: dict[str, Any] | None, event: Callable[..., None]):
        self.scenarios = dict(scenarios or {})
        self.plans: dict[str, Any] = {}
        self.rejected: dict[str, str] = {}
        self.running: list[dict[str, Any]] = []
        self._event = event
        self._control: Any = None
        self._lock = threading.Lock()

    def bind(self, control: Any) -> None:
        """Check every scenario against the twin (a bad one raises here, naming the event)."""
        from ..scenarios._resolve import resolve

        view = SimpleNamespace(table=control.table, assets=control.assets, models={})
        for name, sc in self.scenarios.items():
            spec = _as_spec(name, sc)
            bad = sorted({ev.kind for ev in spec.events if ev.kind not in _LIVE_KINDS})
            if bad or spec.models or spec.params:
                what = ", ".join([f"{k} events" for k in bad] + (["models"] if spec.models else []) + (["params"] if spec.params else []))
                self.rejected[name] = (f"scenario {name!r} has {what}: those run headless only (twinstage scenario run); "
                                       "on a live twin a scenario may only set and ramp attributes")
                continue
            self.plans[name] = resolve(spec, view)
        self._control = control

    def start(self, name: str, user: str, sim_time: float | None = None) -> int:
        """Start scenario ``name`` from ``sim_time``; returns its number of events. Raises
        :class:`ScenarioRejected` for a scenario a live twin cannot run."""
        from ..scenarios import Script

        if name in self.rejected:
            raise ScenarioRejected(self.rejected[name])
        plan = self.plans[name]
        control = self._control
        t0 = control.sim_time if sim_time is None else sim_time
        script = Script(plan, lambda p, n, v: control.set(p, n, v), t0=t0)
        for ref, value in plan.initial:
            control.set(ref.prim, ref.name, value)
        with self._lock:
            self.running.append({"name": name, "script": script, "user": user})
        n = len(plan.events)
        self._event("scenario", f"scenario {name!r} started ({n} events)", user=user)
        return n

    def advance(self, frame: Any) -> None:
        """On the tick thread after each Frame: queue what is due for the next tick."""
        control = self._control
        dt = 1.0 / control.rate
        with self._lock:
            running = list(self.running)
        for sc in running:
            script = sc["script"]
            try:
                script.advance(frame.sim_time, dt, lambda p, n: control.table.get(p, n))
            except Exception as exc:
                self._event("error", f"scenario {sc['name']!r}: {exc}")
            if script.done:
                with self._lock:
                    if sc in self.running:
                        self.running.remove(sc)
                self._event("scenario", f"scenario {sc['name']!r} finished", user=sc["user"], tick=frame.tick)
