"""What-if scenarios: specs, scripted events, the headless runner, sweeps, comparison.

    from twinstage.scenarios import load_spec, run_scenario
    result = run_scenario("scenes/scenarios/valve2_throttle.toml")
    assert result.passed, result.report()

Sweeps (:func:`run_sweep`) run a spec over a grid or seeded samples of its
parameters on local worker processes or a Dask cluster (:func:`local_cluster`
starts one tuned for sweeps); :func:`compare_runs`
diffs two runs. Nothing heavy is imported until a name is used.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "ScenarioError": ("twinstage.scenarios._spec", "ScenarioError"),
    "ScenarioSpec": ("twinstage.scenarios._spec", "ScenarioSpec"),
    "load_spec": ("twinstage.scenarios._spec", "load_spec"),
    "parse_spec": ("twinstage.scenarios._spec", "parse_spec"),
    "ScenarioResult": ("twinstage.scenarios._runner", "ScenarioResult"),
    "run_scenario": ("twinstage.scenarios._runner", "run_scenario"),
    "plan_for": ("twinstage.scenarios._runner", "plan_for"),
    "Script": ("twinstage.scenarios._script", "Script"),
    "run_sweep": ("twinstage.scenarios._sweep", "run_sweep"),
    "local_cluster": ("twinstage.scenarios._dask", "local_cluster"),
    "sweep_points": ("twinstage.scenarios._points", "sweep_points"),
    "compare_runs": ("twinstage.scenarios._compare", "compare_runs"),
    "whatif": ("twinstage.scenarios._whatif", "whatif"),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
