"""Check a spec against its scene: names → rows, units → the attribute's unit, ranges, files.

:func:`resolve` turns a :class:`ScenarioSpec` plus an engine on its scene into a
:class:`Plan` (everything the runner needs, already converted) or raises
:class:`ScenarioError` naming the spec file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


from ._spec import ScenarioError, ScenarioSpec


@dataclass
class Ref:
    prim: str
    name: str
    row: int

    @property
    def key(self) -> str:
        return f"{self.prim}.{self.name}"


@dataclass
class PlannedEvent:
    t: float
    kind: str
    ref: Ref | None = None
    value: Any = None
    to: float | None = None
    over: float | None = None
    file: str | None = None


@dataclass
class PlannedExpect:
    kind: str
    text: str
    ref: Ref | None
    threshold: Any
    t0: float
    t1: float


@dataclass
class Plan:
    spec: ScenarioSpec
    initial: list[tuple[Ref, Any]] = field(default_factory=list)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    events: list[PlannedEvent] = field(default_factory=list)
    expects: list[PlannedExpect] = field(default_factory=list)
    metrics: list[Ref] = field(default_factory=list)
    params_file: str | None = None

    @property
    def faults(self) -> bool:
        return any(e.kind in ("fail", "bias", "restore") for e in self.events)


def find_prim(engine: Any, text: str) -> str | None:
    """Full path of the prim ``text`` names (full path, path suffix, or ``twin:assetId``), or None."""
    prims = engine.table.prim_index
    if text.startswith("/"):
        return text if text in prims else None
    hits = [p for p in prims if p.endswith("/" + text)]
    if not hits:
        hits = [p for p, a in engine.assets.items() if getattr(a, "asset_id", None) == text]
    if len(hits) > 1:
        raise KeyError(f"{text!r} is ambiguous ({', '.join(hits[:4])}); give the full path")
    return hits[0] if hits else None


def resolve_ref(engine: Any, text: str, where: str) -> Ref:
    prim_text, dot, name = text.rpartition(".")
    if not dot or not prim_text or not name:
        raise ScenarioError(f"{where}: {text!r} is not Prim.attribute (e.g. Valve2.opening or /Testbed/Valve2.opening)")
    try:
        prim = find_prim(engine, prim_text)
    except KeyError as exc:
        raise ScenarioError(f"{where}: {exc.args[0]}") from None
    if prim is None:
        raise ScenarioError(f"{where}: unknown prim {prim_text!r} (twin prims: {', '.join(engine.table.prims[:8])}{', …' if len(engine.table.prims) > 8 else ''})")
    attrs = engine.table.attributes(prim)
    if name not in attrs:
        raise ScenarioError(f"{where}: {prim} has no twin attribute {name!r} (it has {', '.join(attrs)})")
    return Ref(prim, name, engine.table.row(prim, name))


def convert(engine: Any, ref: Ref, value: float, unit: str | None, where: str) -> float:
    if unit is None:
        return float(value)
    from ..units import UnitError
    from ..units import convert as _convert

    try:
        return float(_convert(float(value), unit, engine.table.channels[ref.name].unit, ref.key))
    except UnitError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def check_range(engine: Any, ref: Ref, value: float, where: str) -> None:
    ch = engine.table.channels[ref.name]
    lo, hi = float(ch.lo[ref.row]), float(ch.hi[ref.row])
    if not math.isfinite(value) or value < lo or value > hi:
        u = f" {ch.unit}" if ch.unit not in ("", "1") else ""
        raise ScenarioError(f"{where}: {value:g}{u} is outside {ref.key}'s range [{lo:g}, {hi:g}]{u}")


def _value(engine: Any, ref: Ref, value: Any, unit: str | None, where: str) -> Any:
    ch = engine.table.channels[ref.name]
    if ch.type == "bool":
        return bool(value)
    if ch.type not in ("float", "int"):
        raise ScenarioError(f"{where}: {ref.key} is a {ch.type} attribute; scenarios set float, int and bool attributes")
    v = convert(engine, ref, value, unit, where)
    check_range(engine, ref, v, where)
    return int(v) if ch.type == "int" else v


def _check_models(engine: Any, models: dict[str, dict[str, float]], where: str) -> None:
    for mname, params in models.items():
        model = engine.models.get(mname)
        current = getattr(model, "params", None)
        if model is None or current is None:
            have = [n for n, m in engine.models.items() if getattr(m, "params", None) is not None]
            raise ScenarioError(f"{where}: models.{mname}: no model with parameters named {mname!r} in this scene (have {', '.join(have) or 'none'})")
        known = {f.name for f in fields(current)}
        for key, v in params.items():
            if key not in known:
                raise ScenarioError(f"{where}: models.{mname}.{key}: model {mname!r} has no parameter {key!r} (has {', '.join(sorted(known))})")
            if not math.isfinite(v):
                raise ScenarioError(f"{where}: models.{mname}.{key}: must be finite")


def resolve(spec: ScenarioSpec, engine: Any) -> Plan:
    """Check ``spec`` against ``engine``'s scene; a :class:`Plan` with rows and converted values."""
    w = spec.where()
    plan = Plan(spec)
    for key, value in spec.initial.items():
        ref = resolve_ref(engine, key, f"{w}: initial.{key}")
        plan.initial.append((ref, _value(engine, ref, value, None, f"{w}: initial.{key}")))
    _check_models(engine, spec.models, w)
    plan.models = {k: dict(v) for k, v in spec.models.items()}
    if spec.params:
        p = spec.file(spec.params)
        if not p.is_file():
            raise ScenarioError(f"{w}: params: no such parameter layer {p}")
        plan.params_file = str(p)
    for i, ev in enumerate(spec.events):
        f = f"{w}: events[{i}].{ev.kind}"
        if ev.kind == "replay":
            p = spec.file(ev.replay)
            if not p.is_file():
                raise ScenarioError(f"{f}: no such telemetry file {p}")
            plan.events.append(PlannedEvent(ev.at, "replay", file=str(p)))
            continue
        ref = resolve_ref(engine, ev.target, f)
        if ev.kind in ("fail", "bias", "restore"):
            role = engine.table.channels[ref.name].role[ref.row]
            if role != "measured" or "sensor" not in engine.models:
                raise ScenarioError(f"{f}: {ref.key} is not a simulated sensor reading (role {role!r}); fail/bias/restore apply to sensor prims' readings")
            value = convert(engine, ref, ev.value, ev.unit, f) - convert(engine, ref, 0.0, ev.unit, f) if ev.kind == "bias" else None
            plan.events.append(PlannedEvent(ev.at, ev.kind, ref, value))
        elif ev.kind == "set":
            plan.events.append(PlannedEvent(ev.at, "set", ref, _value(engine, ref, ev.value, ev.unit, f"{w}: events[{i}].value")))
        else:  # ramp
            to = _value(engine, ref, ev.to, ev.unit, f"{w}: events[{i}].to")
            if ev.at + ev.over > spec.duration + 1e-9:
                raise ScenarioError(f"{w}: events[{i}].over: the ramp ends at {ev.at + ev.over:g} s, after the end of the run ({spec.duration:g} s)")
            plan.events.append(PlannedEvent(ev.at, "ramp", ref, to=to, over=ev.over))
    plan.events.sort(key=lambda e: e.t)  # stable: same-time events keep the file's order
    for i, ex in enumerate(spec.expect):
        f = f"{w}: expect[{i}]"
        ref = resolve_ref(engine, ex.attribute, f"{f}.attribute") if ex.attribute else None
        t0 = ex.after
        t1 = spec.duration
        thr: Any = None
        if ex.kind in ("exceeds", "below"):
            thr = convert(engine, ref, getattr(ex, ex.kind), ex.unit, f"{f}.{ex.kind}")
            if ex.within:
                t1 = ex.after + ex.within
        elif ex.kind == "final_between":
            thr = tuple(convert(engine, ref, v, ex.unit, f"{f}.final_between") for v in ex.final_between)
        elif ex.kind == "no_alarm_before":
            t0, t1 = 0.0, ex.no_alarm_before
        else:
            t1 = ex.alarm_by
        if t1 > spec.duration + 1e-9 or t0 > spec.duration:
            raise ScenarioError(f"{f}: looks at {t1:g} s, after the end of the run (duration {spec.duration:g} s)")
        plan.expects.append(PlannedExpect(ex.kind, ex.describe(), ref, thr, t0, t1))
    for i, m in enumerate(spec.metrics):
        plan.metrics.append(resolve_ref(engine, m, f"{w}: metrics[{i}]"))
    if not plan.metrics:  # default: every float entry of a small scene, else what the spec mentions
        if engine.table.n_entries <= 64:
            plan.metrics = [Ref(p, n, engine.table.row(p, n)) for p in engine.table.prims for n in engine.table.attributes(p)
                            if engine.table.channels[n].type in ("float", "int")]
        else:
            seen = {}
            for r in [e.ref for e in plan.events] + [x.ref for x in plan.expects] + [r for r, _ in plan.initial]:
                if r is not None:
                    seen.setdefault(r.key, r)
            plan.metrics = list(seen.values())
    keys = [r.key for r in plan.metrics]
    for r in [x.ref for x in plan.expects if x.ref is not None]:
        if r.key not in keys:
            plan.metrics.append(r)
            keys.append(r.key)
    return plan


def apply_overrides(spec: ScenarioSpec, overrides: dict[str, float], engine: Any) -> ScenarioSpec:
    """A copy of ``spec`` with sweep values applied: ``Prim.attr`` (initial state),
    ``model.param`` (model parameter) or ``events.NAME.field`` (at, value, to, over)."""
    from ._spec import parse_spec

    data = spec.model_dump(mode="json", exclude_none=True)
    data.setdefault("initial", {})
    data.setdefault("models", {})
    for key, value in overrides.items():
        kind, *rest = classify_axis(key, engine, spec)
        if kind == "event":
            name, fld = rest
            evs = [e for e in data.get("events", []) if e.get("name") == name]
            evs[0][fld] = value
        elif kind == "model":
            m, p = rest
            data["models"].setdefault(m, {})[p] = value
        else:
            data["initial"][key] = value
    out = parse_spec(data, spec.path or "<spec>")
    return out


def classify_axis(key: str, engine: Any, spec: ScenarioSpec) -> tuple:
    """``("attribute",)``, ``("model", name, param)`` or ``("event", name, field)``; ScenarioError if unknown."""
    w = f"{spec.where()}: sweep axis {key!r}"
    if key.startswith("events."):
        parts = key.split(".")
        if len(parts) != 3 or parts[2] not in ("at", "value", "to", "over"):
            raise ScenarioError(f"{w}: expected events.NAME.at|value|to|over")
        if not any(e.name == parts[1] for e in spec.events):
            raise ScenarioError(f"{w}: no event named {parts[1]!r} (name events with name = \"...\")")
        return ("event", parts[1], parts[2])
    head, dot, tail = key.partition(".")
    if dot and "/" not in head and head in engine.models and find_prim(engine, head) is None:
        _check_models(engine, {head: {tail: 0.0}}, spec.where())
        return ("model", head, tail)
    resolve_ref(engine, key, w)
    return ("attribute",)
