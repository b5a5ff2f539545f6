"""``freshness``: per-entry age of the last good telemetry sample and quality reasons (beside :mod:`._messages`, same rules)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


class ReasonInfo(_Base):
    """Why an entry is flagged, in words; ``text`` '' = it is good again."""

    index: int
    text: str


class Freshness(_Base):
    """Telemetry freshness of the subscribed entries a source feeds, about once per second (``Server.freshness_interval``).

    ``ages`` are seconds of sim time since each entry's last good sample (-1: none yet), rounded to
    1 ms, aligned with ``indices``. ``indices`` [] with ``ages`` not empty: the same entries, in the
    same order, as the last freshness message that listed them (they are listed again when the set
    changes, e.g. after a new subscription). ``reasons``: only entries whose reason changed since the
    previous freshness message to this client (every flagged entry after a new subscription).
    Rows no source feeds (simulated values) are never listed.
    """

    type: Literal["freshness"] = "freshness"
    tick: int
    sim_time: float
    indices: list[int] = Field(description="flat entry indices; [] = those of the last freshness message that listed any")
    ages: list[float] = Field(description="seconds since the last good sample (-1: none yet), aligned with the indices")
    reasons: list[ReasonInfo] = Field(description="entries whose quality reason changed ('' = good again)")
