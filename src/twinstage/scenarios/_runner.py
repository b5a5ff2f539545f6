"""Run one scenario headless: :func:`run_scenario` → :class:`ScenarioResult`.

The scene is read once per process (:func:`base_engine`); every run is a
:meth:`~twinstage.runtime.Engine.fork` with its own seed and models, so a sweep's
per-run cost is the run itself. The same spec, overrides and seed give the same
result, bit for bit, on any worker.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._resolve import Plan, apply_overrides, resolve
from ._script import FaultySensors, Script
from ._spec import ScenarioError, ScenarioSpec, load_spec

ALARM_BITS = np.uint8(2 | 16)  # OUT_OF_RANGE | BAD: what the bridge raises as alarms
_BASES: dict[tuple, Any] = {}


@dataclass
class ScenarioResult:
    """Outcome of one run: trajectories of the watched attributes, alarms, expectations, metrics."""

    name: str
    seed: int
    overrides: dict[str, float]
    status: str = "ok"  #: "ok" or "failed"
    error: str = ""
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    series: dict[str, np.ndarray] = field(default_factory=dict)  #: "prim.attr" → values per tick
    alarm: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  #: any alarm active, per tick
    alarms: dict[str, np.ndarray] = field(default_factory=dict)  #: per watched attribute
    expectations: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    recording: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ticks: int = 0
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "ok" and all(e["passed"] for e in self.expectations)

    def report(self) -> str:
        lines = [f"scenario {self.name} (seed {self.seed}): {self.status}{': ' + self.error if self.error else ''}; "
                 f"{self.ticks} ticks in {self.wall_s:.2f} s wall"]
        for e in self.expectations:
            lines.append(f"  [{'PASS' if e['passed'] else 'FAIL'}] {e['text']}: {e['detail']}")
        return "\n".join(lines)


def _scene_file(spec: ScenarioSpec, cache_dir: str | Path | None) -> Path:
    if isinstance(spec.scene, str):
        p = spec.file(spec.scene)
        if not p.is_file():
            raise ScenarioError(f"{spec.where()}: scene: no such scene file {p}")
        return p.resolve()
    f = spec.scene  # a generated factory: written once per cache dir, atomically (workers race)
    d = Path(cache_dir or os.environ.get("TWINSTAGE_SCENE_CACHE") or Path(tempfile.gettempdir()) / "twinstage-scenes")
    target = (d / f"factory_{f.factory}_{f.items}_{f.seed}.usda").resolve()
    if not target.exists():
        from ..scenes import generate_factory

        d.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.usda")
        generate_factory(f.factory, tmp, items=f.items, seed=f.seed)
        os.replace(tmp, target)
    return target


def base_engine(spec: ScenarioSpec, cache_dir: str | Path | None = None) -> Any:
    """The process-wide headless engine on ``spec``'s scene (read once, then forked)."""
    from ..runtime import open as open_twin

    path = _scene_file(spec, cache_dir)
    key = (str(path), path.stat().st_mtime_ns)
    eng = _BASES.get(key)
    if eng is None:
        eng = _BASES[key] = open_twin(path, headless=True)
    return eng


def plan_for(spec: ScenarioSpec | str | Path, overrides: dict[str, float] | None = None, *, cache_dir: Any = None) -> tuple[Plan, Any]:
    """Load, apply sweep ``overrides`` and check a spec against its scene: ``(plan, base engine)``."""
    if not isinstance(spec, ScenarioSpec):
        spec = load_spec(spec)
    base = base_engine(spec, cache_dir)
    if overrides:
        spec = apply_overrides(spec, overrides, base)
    return resolve(spec, base), base


def _models(plan: Plan) -> tuple[list[Any], FaultySensors | None]:
    """Models to fork with: the scene's ``sensor`` model wrapped when the plan has sensor faults."""
    from ..models import builtin_models

    if not plan.faults:
        return [], None
    faults = FaultySensors(builtin_models()["sensor"]())
    return [faults], faults


def run_scenario(spec: ScenarioSpec | str | Path, *, overrides: dict[str, float] | None = None, seed: int | None = None,
                 record: str | Path | None = None, cache_dir: Any = None, engine: Any = None, raise_errors: bool = False,
                 sinks: tuple[Any, ...] = ()) -> ScenarioResult:
    """Run ``spec`` (a :class:`ScenarioSpec` or a spec file) headless and check its expectations.

    ``overrides``: sweep values (``{"Valve2.opening": 0.4, "pump_loop.motor_tau": 600}``).
    ``seed`` replaces the spec's. ``record``: write the run's state to this USD layer
    (reproducible: same inputs, same bytes). ``engine``: run on this engine instead of
    a fork of the scene (e.g. ``twin.fork()`` with copied state, for what-if runs).
    ``sinks``: extra Frame sinks for the run (e.g. a :class:`~twinstage.observability.MetricsSink`).
    Invalid specs raise :class:`ScenarioError` before anything runs; an error during the
    run gives ``status="failed"`` with the error (or raises with ``raise_errors``).
    """
    if not isinstance(spec, ScenarioSpec):
        spec = load_spec(spec)
    digest = spec.digest()  # of the spec as written; the overrides are recorded beside it
    plan, base = plan_for(spec, overrides, cache_dir=cache_dir)
    spec = plan.spec
    seed = spec.seed if seed is None else int(seed)
    res = ScenarioResult(spec.name, seed, dict(overrides or {}))
    t_start = time.perf_counter()
    models, faults = _models(plan)
    eng = engine if engine is not None else base.fork(seed=seed, models=models, rate=spec.rate)
    if engine is not None and faults is not None:
        raise ScenarioError(f"{spec.where()}: fail/bias events need a fresh engine (engine= cannot wrap its sensor model)")
    log = logging.getLogger("twinstage")
    script = Script(plan, lambda p, n, v: eng.set(p, **{n: v}), faults=faults, replay_fn=lambda f: _attach_replay(eng, f), t0=eng.sim_time)
    log.addFilter(script.quiet)
    try:
        if plan.params_file:
            from ..fidelity import apply_params

            apply_params(eng, plan.params_file)
        for name, params in plan.models.items():  # inline overrides win over the parameter layer
            m = eng.models[name]
            m.params = replace(m.params, **params)
        for ref, value in plan.initial:
            eng.set(ref.prim, **{ref.name: value})
        for sink in sinks:
            eng.add_sink(sink)
        if record is not None:
            res.recording = str(record)
            eng.record(record, reproducible=True, save_every_s=1e9)
        _loop(eng, plan, script, res)
    except Exception as exc:
        if raise_errors:
            raise
        res.status, res.error = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        try:
            eng.close()
        finally:
            log.removeFilter(script.quiet)
    res.errors = [e for e in eng.errors if not any(f"non-finite values in twin:{c};" in e for c in script.quiet.channels)]
    res.provenance = {**eng.provenance(), "command": "", "scenario": spec.name, "specDigest": digest, "specFile": spec.path or "",
                      "overrides": dict(overrides or {}), "seed": seed}
    if res.recording and res.status == "ok":
        _stamp(Path(res.recording), res.provenance)
    if res.status == "ok":
        _evaluate(plan, res)
    res.wall_s = time.perf_counter() - t_start
    logging.getLogger("twinstage.scenarios").info("scenario %s: %s, %d ticks, %d/%d expectations met", spec.name, res.status, res.ticks,
                                                  sum(e["passed"] for e in res.expectations), len(res.expectations),
                                                  extra={"scenario": spec.name, "status": res.status, "overrides": dict(overrides or {}), "seed": seed})
    return res


def _attach_replay(eng: Any, file: str) -> Any:
    from ..telemetry._attach import attach_replay

    return attach_replay(eng, file)


def _loop(eng: Any, plan: Plan, script: Script, res: ScenarioResult) -> None:
    n = int(round(plan.spec.duration * plan.spec.rate))
    table = eng.table
    refs = plan.metrics
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, r in enumerate(refs):
        cols, rows = groups.get(r.name, ([], []))
        groups[r.name] = (cols + [i], rows + [r.row])
    groups_np = {ch: (np.array(c), np.array(rw)) for ch, (c, rw) in groups.items()}
    values = np.zeros((n, len(refs)))
    qual = np.zeros((n, len(refs)), dtype=np.uint8)
    times = np.zeros(n)
    alarm = np.zeros(n, dtype=bool)
    alarm_channels = [ch for ch, c in table.channels.items() if c.type in ("float", "int", "vec3")]
    dt = eng.clock.dt
    for k in range(n):
        script.advance(eng.sim_time, dt, eng.get)
        eng.tick()
        times[k] = eng.sim_time - script.t0
        for ch, (cols, rows) in groups_np.items():
            values[k, cols] = table[ch][rows]
            qual[k, cols] = table.quality(ch)[rows]
        alarm[k] = any((table.quality(ch) & ALARM_BITS).any() for ch in alarm_channels)
    res.ticks = n
    res.times = times
    res.alarm = alarm
    for i, r in enumerate(refs):
        res.series[r.key] = values[:, i].copy()
        res.alarms[r.key] = (qual[:, i] & ALARM_BITS) != 0
        res.units[r.key] = table.channels[r.name].unit


def _stamp(path: Path, prov: dict[str, Any]) -> None:
    """Add the scenario's provenance (spec digest, overrides, seed) to the recording's root layer."""
    import json

    from pxr import Sdf

    layer = Sdf.Layer.FindOrOpen(str(path))
    data = dict(layer.customLayerData)
    data["twinstage:scenario"] = json.dumps({k: prov[k] for k in ("scenario", "specDigest", "overrides", "seed")}, sort_keys=True)
    layer.customLayerData = data
    layer.Save()


def _evaluate(plan: Plan, res: ScenarioResult) -> None:
    t = res.times
    eps = 1e-9
    for ex in plan.expects:
        mask = (t >= ex.t0 - eps) & (t <= ex.t1 + eps)
        s = res.series[ex.ref.key] if ex.ref is not None else None
        u = f" {res.units[ex.ref.key]}" if ex.ref is not None else ""
        if ex.kind in ("exceeds", "below"):
            hit = (s > ex.threshold if ex.kind == "exceeds" else s < ex.threshold) & mask
            ok = bool(hit.any())
            extreme = (s[mask].max() if ex.kind == "exceeds" else s[mask].min()) if mask.any() else math.nan
            detail = (f"first at {t[hit][0]:g} s ({s[hit][0]:.4g}{u})" if ok
                      else f"{'max' if ex.kind == 'exceeds' else 'min'} {extreme:.4g}{u} in [{ex.t0:g}, {ex.t1:g}] s")
        elif ex.kind == "final_between":
            v = float(s[-1]) if len(s) else math.nan
            ok = ex.threshold[0] <= v <= ex.threshold[1]
            detail = f"final {v:.4g}{u}"
        else:
            a = res.alarms[ex.ref.key] if ex.ref is not None else res.alarm
            if ex.kind == "no_alarm_before":
                hit = a & (t < ex.t1 - eps)
                ok = not hit.any()
                detail = "none" if ok else f"alarm at {t[hit][0]:g} s"
            else:
                hit = a & mask
                ok = bool(hit.any())
                detail = f"first at {t[hit][0]:g} s" if ok else f"no alarm in [{ex.t0:g}, {ex.t1:g}] s"
        res.expectations.append({"text": ex.text, "passed": bool(ok), "detail": detail})
    for key, s in res.series.items():
        res.metrics[f"{key}:final"] = float(s[-1]) if len(s) else math.nan
        res.metrics[f"{key}:min"] = float(s.min()) if len(s) else math.nan
        res.metrics[f"{key}:max"] = float(s.max()) if len(s) else math.nan
        res.metrics[f"{key}:mean"] = float(s.mean()) if len(s) else math.nan
    first = np.flatnonzero(res.alarm)
    res.metrics["first_alarm_s"] = float(t[first[0]]) if len(first) else math.nan
    res.metrics["alarm_ticks"] = float(res.alarm.sum())
    res.metrics["expectations_failed"] = float(sum(not e["passed"] for e in res.expectations))
