"""``whatif`` (client → server) and ``forecast`` (server → client): what-if from now, for operators.

Beside :mod:`._messages` (same rules: camelCase on the wire, JsonUtility-friendly shapes —
arrays of records, never maps keyed by name).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_POINTS = 32  #: predictions per request (the product of the grid axes' lengths)
MAX_SERIES_POINTS = 600  #: samples per band sent (longer predictions are sent every k-th tick)


def _finite(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


Number = Annotated[float, BeforeValidator(_finite)]


class _Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


class GridAxis(_Base):
    """One swept parameter: ``events.<name>.value`` (an event's value; give the event a ``name``),
    ``Prim.attribute`` (an initial value) or ``model.param`` (a model parameter of the prediction)."""

    key: str = Field(min_length=1, max_length=256)
    values: list[Number] = Field(min_length=1, max_length=MAX_POINTS)


class WhatIf(_Base):
    """Predict from the twin's current state (operator). The server forks the running twin (with its
    assimilated estimate, where a data-assimilation stage wrote one), runs one headless prediction per
    grid point faster than real time off the tick thread, then sends one ``forecast`` per attribute
    and finally one ack (``count``: predictions that succeeded; ``detail``: a summary) — or one error."""

    type: Literal["whatif"] = "whatif"
    id: str = Field(min_length=1, max_length=128)
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=100,
                                         description="scenario events timed from now, as in a scenario file: "
                                                     "{at, set|ramp, value|to, over, unit, name}; [] = no change (a plain forecast)")
    horizon: Number = Field(gt=0, le=86_400, description="seconds of sim time to predict")
    grid: list[GridAxis] = Field(default_factory=list, max_length=4, description=f"swept parameters (at most {MAX_POINTS} points in all)")
    attributes: list[str] = Field(default_factory=list, max_length=256,
                                  description="Prim.attribute keys to send bands for; [] = every predicted attribute")


class Forecast(_Base):
    """The band of one attribute over the predictions of a ``whatif`` request (``id``): per predicted
    tick, the minimum, 10th percentile, mean, 90th percentile and maximum over the grid points."""

    type: Literal["forecast"] = "forecast"
    id: str = Field(description="the id of the whatif request")
    prim: str
    attribute: str
    unit: str
    start_tick: int = Field(description="the twin's tick the predictions start from")
    start_sim_time: float = Field(description="the twin's sim time the predictions start from")
    runs: int = Field(description="predictions in the band")
    times: list[float] = Field(description="seconds after startSimTime")
    min: list[float]
    p10: list[float]
    mean: list[float]
    p90: list[float]
    max: list[float]
