"""Scenarios the ``scenario`` command runs: ``{name: [(seconds, prim, attribute, value), ...]}``,
timed from the sim time each starts. Isolated here until the scenarios package takes it over."""

from __future__ import annotations

from typing import Any, Callable

#: a scenario step: (seconds after start, prim, attribute, value)
ScenarioStep = tuple[float, str, str, Any]


class ScenarioRunner:
    def __init__(self, scenarios: dict[str, list[ScenarioStep]] | None, event: Callable[..., None]):
        self.scenarios = dict(scenarios or {})
        self.running: list[dict[str, Any]] = []
        self._event = event
        self._control: Any = None

    def bind(self, control: Any) -> None:
        """Validate every step against the twin (a bad scenario fails here, naming the step)."""
        for steps in self.scenarios.values():
            for _t, prim, attr, value in steps:
                control.validate(prim, attr, value)
        self._control = control

    def start(self, name: str, user: str, sim_time: float | None = None) -> int:
        steps = sorted(self.scenarios[name], key=lambda s: s[0])
        t0 = self._control.sim_time if sim_time is None else sim_time
        self.running.append({"name": name, "t0": t0, "steps": list(steps), "user": user})
        self._event("scenario", f"scenario {name!r} started ({len(steps)} steps)", user=user)
        return len(steps)

    def advance(self, frame: Any) -> None:
        for sc in list(self.running):
            while sc["steps"] and sc["t0"] + sc["steps"][0][0] <= frame.sim_time + 1e-9:
                _, prim, attr, value = sc["steps"].pop(0)
                try:
                    self._control.set(prim, attr, value)
                except Exception as exc:
                    self._event("error", f"scenario {sc['name']!r}: {exc}")
            if not sc["steps"]:
                self.running.remove(sc)
                self._event("scenario", f"scenario {sc['name']!r} finished", user=sc["user"], tick=frame.tick)
