"""What-if from now: fork a running twin's current state into a small sweep and predict.

    twin.run(ticks=600)
    w = whatif(twin, [{"at": 10.0, "set": "Valve2.opening", "value": 0.3, "name": "close"}],
               grid={"events.close.value": [0.2, 0.5, 0.8]}, horizon=120.0)
    band = w.band("/Testbed/Pump.pressure")     # min / p10 / mean / p90 / max per predicted tick

Each prediction runs on a headless fork of the twin's scene whose state table (values
and quality) and model parameters (e.g. calibrated ones) are copied from the twin at
the moment of the call — so an assimilated estimate, where a Kalman stage wrote one
into the table, is the starting point. The twin itself is not touched. Times in the
result are seconds from now. Runs are in this process (a what-if is small and must be
quick); for big ones use :func:`run_sweep` on a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._points import sweep_points
from ._runner import ScenarioResult, run_scenario
from ._spec import ScenarioSpec, load_spec, parse_spec


@dataclass
class WhatIf:
    points: list[dict[str, float]]
    runs: list[ScenarioResult]
    start_sim_time: float
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def band(self, key: str) -> dict[str, np.ndarray]:
        """Spread of ``prim.attr`` over the predictions, per predicted tick."""
        ok = [r for r in self.runs if r.status == "ok"]
        if not ok:
            raise ValueError("no prediction succeeded: " + "; ".join(r.error for r in self.runs))
        data = np.stack([r.series[key] for r in ok])
        return {"min": data.min(0), "p10": np.percentile(data, 10, axis=0), "mean": data.mean(0),
                "p90": np.percentile(data, 90, axis=0), "max": data.max(0)}


def fork_now(twin: Any, *, seed: int | None = None) -> Any:
    """A headless, unpaced engine continuing from the twin's current state and model parameters."""
    return twin.fork(seed=seed, copy_state=True, realtime=False)


def whatif(twin: Any, scenario: ScenarioSpec | str | list[dict[str, Any]], *, horizon: float | None = None, grid: dict[str, Any] | None = None,
           ranges: dict[str, tuple[float, float]] | None = None, samples: int = 0, method: str = "lhs", seed: int = 0) -> WhatIf:
    """Predict from the twin's current state under ``scenario`` (a spec, a spec file, or a list of
    event dicts timed from now) for each sweep point; ``horizon`` (s) replaces the spec's duration."""
    from ._points import parse_values

    if isinstance(scenario, list):
        if horizon is None:
            raise ValueError("whatif with a list of events needs horizon= (seconds to predict)")
        spec = parse_spec({"name": "whatif", "scene": str(twin.source), "duration": horizon, "rate": twin.clock.rate, "events": scenario})
    else:
        spec = scenario if isinstance(scenario, ScenarioSpec) else load_spec(scenario)
        changes: dict[str, Any] = {"scene": str(twin.source), "rate": twin.clock.rate, "initial": {}}
        if horizon is not None:
            changes["duration"] = horizon
        spec = parse_spec({**spec.model_dump(mode="json", exclude_none=True), **changes}, spec.path or "<whatif>")
    g = {k: parse_values(v, f"whatif grid {k}") for k, v in (grid or {}).items()}
    points = sweep_points(g, ranges, samples=samples, method=method, seed=seed)
    runs = [run_scenario(spec, overrides=pt, engine=fork_now(twin, seed=spec.seed)) for pt in points]
    ok = [r for r in runs if r.status == "ok"]
    return WhatIf(points, runs, float(twin.sim_time), ok[0].times if ok else np.zeros(0))
