"""Scenario specs: pydantic models, loading (TOML/YAML) and validation against the scene.

A spec names a base scene, optional calibrated parameters, initial-state overrides,
scripted events over sim time, the run's duration/rate/seed and expected outcomes.
Attribute references are ``Prim.attribute`` where ``Prim`` is a full path
(``/Testbed/Valve2``), a path suffix (``Valve2``, ``Sensors/FlowMeter``) or a
``twin:assetId``. :func:`load_spec` checks the file's shape; :func:`resolve` checks
it against the scene (prim, attribute, unit, range, timing) before anything runs.
Every error is a :class:`ScenarioError` naming the spec file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ACTIONS = ("set", "ramp", "fail", "bias", "restore", "replay")


class ScenarioError(ValueError):
    """An invalid scenario or sweep: the message names the spec file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FactoryScene(_Strict):
    """A generated factory floor (:func:`twinstage.scenes.generate_factory`)."""

    factory: int = Field(ge=1, le=100_000, description="number of machines")
    items: int = Field(default=0, ge=0, le=100_000)
    seed: int = 0


class Event(_Strict):
    """One scripted action at sim time ``at`` (seconds from the start of the run).

    Exactly one action key: ``set`` (attribute → ``value``), ``ramp`` (attribute
    linearly to ``to`` over ``over`` seconds), ``fail`` (a sensor reading goes BAD,
    holding its last value), ``bias`` (a sensor reading is offset by ``value``),
    ``restore`` (undo ``fail``/``bias`` on that reading), ``replay`` (a CSV/Parquet
    telemetry file through the scene's bindings).
    """

    at: float = Field(ge=0.0)
    name: str | None = None
    set: str | None = None
    ramp: str | None = None
    fail: str | None = None
    bias: str | None = None
    restore: str | None = None
    replay: str | None = None
    value: float | bool | None = None
    to: float | None = None
    over: float | None = Field(default=None, gt=0.0)
    unit: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> "Event":
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"an event needs exactly one of {', '.join(ACTIONS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        if kind in ("set", "bias") and self.value is None:
            raise ValueError(f"a {kind} event needs value")
        if kind == "ramp" and (self.to is None or self.over is None):
            raise ValueError("a ramp event needs to and over (seconds)")
        if not all(math.isfinite(float(x)) for x in (self.at, self.value or 0.0, self.to or 0.0, self.over or 1.0)):
            raise ValueError("times and values must be finite")
        return self

    @property
    def kind(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    @property
    def target(self) -> str:
        return getattr(self, self.kind)


class Expect(_Strict):
    """An expected outcome. One of:

    * ``attribute`` + ``exceeds`` (or ``below``) + optional ``within``/``after``: the value
      goes above (below) the threshold at some tick in ``[after, after + within]``;
    * ``attribute`` + ``final_between = [a, b]``: the value at the end lies in ``[a, b]``;
    * ``no_alarm_before = t``: no alarm (a value flagged OUT_OF_RANGE or BAD, as the
      bridge raises them; only on ``attribute`` when given) before sim time ``t``;
    * ``alarm_by = t``: an alarm is active at some tick in ``[after, t]``.
    """

    attribute: str | None = None
    exceeds: float | None = None
    below: float | None = None
    within: float | None = Field(default=None, gt=0.0)
    after: float = Field(default=0.0, ge=0.0)
    final_between: tuple[float, float] | None = None
    no_alarm_before: float | None = Field(default=None, gt=0.0)
    alarm_by: float | None = Field(default=None, gt=0.0)
    unit: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Expect":
        kinds = [k for k in ("exceeds", "below", "final_between", "no_alarm_before", "alarm_by") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"an expectation needs exactly one of exceeds, below, final_between, no_alarm_before, alarm_by (got {', '.join(kinds) or 'none'})")
        if kinds[0] in ("exceeds", "below", "final_between") and not self.attribute:
            raise ValueError(f"{kinds[0]} needs attribute")
        if self.final_between is not None and not self.final_between[0] <= self.final_between[1]:
            raise ValueError("final_between must be [low, high] with low <= high")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("exceeds", "below", "final_between", "no_alarm_before", "alarm_by") if getattr(self, k) is not None)

    def describe(self) -> str:
        k, a = self.kind, self.attribute
        u = f" {self.unit}" if self.unit else ""
        win = (f" within {self.within:g} s" if self.within else "") + (f" after {self.after:g} s" if self.after else "")
        if k == "exceeds":
            return f"{a} exceeds {self.exceeds:g}{u}{win}"
        if k == "below":
            return f"{a} falls below {self.below:g}{u}{win}"
        if k == "final_between":
            return f"{a} at the end within [{self.final_between[0]:g}, {self.final_between[1]:g}]{u}"
        if k == "no_alarm_before":
            return f"no alarm{' on ' + a if a else ''} before {self.no_alarm_before:g} s"
        return f"an alarm{' on ' + a if a else ''} by {self.alarm_by:g} s" + (f" (after {self.after:g} s)" if self.after else "")


class SweepSpec(_Strict):
    """Default sweep axes: ``grid = {"Valve2.opening" = "0.2:1.0:9"}`` and/or random ranges."""

    grid: dict[str, str | list[float]] = Field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    samples: int = Field(default=0, ge=0, le=1_000_000)
    method: Literal["lhs", "random"] = "lhs"


class ScenarioSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    scene: str | FactoryScene
    params: str | None = None
    duration: float = Field(gt=0.0, le=1e7)
    rate: float = Field(default=10.0, gt=0.0, le=10_000.0)
    seed: int = 0
    initial: dict[str, float | bool] = Field(default_factory=dict)
    models: dict[str, dict[str, float]] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    #: where the spec came from (set by load_spec); relative paths resolve against its folder
    path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _events_in_run(self) -> "ScenarioSpec":
        for i, ev in enumerate(self.events):
            if ev.at > self.duration:
                raise ValueError(f"events[{i}].at = {ev.at:g} s is after the end of the run (duration {self.duration:g} s)")
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def where(self) -> str:
        return self.path or f"scenario {self.name!r}"

    def file(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base_dir / p

    def digest(self) -> str:
        """A hash of the spec's content (not its location): part of every run's provenance."""
        data = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(where: str, exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc or '(spec)'}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, where: str = "<spec>") -> ScenarioSpec:
    """A :class:`ScenarioSpec` from a dict (as read from TOML/YAML), or :class:`ScenarioError`."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: a scenario spec is a table/mapping, not {type(data).__name__}")
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(where, exc)) from None
    spec.path = where if where != "<spec>" else None
    return spec


def load_spec(path: str | Path) -> ScenarioSpec:
    """Read and check a scenario file (``.toml``, ``.yaml``/``.yml``)."""
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise ScenarioError(f"{path}: a scenario spec is .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario spec ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        raise ScenarioError(f"{path}: a scenario spec is .toml, .yaml or .yml")
    return parse_spec(data, str(path))
