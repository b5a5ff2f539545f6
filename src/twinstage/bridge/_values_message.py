"""``values`` (the compact state message), ``part``/``parts`` of the state messages and ``limits.maxStateBytes``
(beside :mod:`._messages`, same rules; a module of its own: that one is at its length limit). Parts: :mod:`._split`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


class Parted(BaseModel):
    """Mixed into ``snapshot``, ``delta`` and ``values``: a message larger than ``limits.maxStateBytes`` comes in parts."""

    part: int = Field(ge=0, description="which part of its message this is, from 0; every part has the same seq, tick and times")
    parts: int = Field(ge=1, description="how many parts the message has (1: whole); complete once part parts - 1 is applied")


class StateLimits(BaseModel):
    """Mixed into ``hello.limits``."""

    max_state_bytes: int = Field(description="bytes: no snapshot, delta or values message is larger (bigger ones come in parts); 0 = no limit")


class Values(_Base, Parted):
    """Compact JSON state (encoding ``compact``); quality only where it is not 0 (good).

    When at least half of the subscribed entries changed, ``indices``/``vec3Indices`` are empty and
    ``values``/``vec3Values`` hold every subscribed entry in the order of the last snapshot's
    ``indices``/``vec3Indices`` (``state[snapshot.indices[i]] = values[i]``). Otherwise they hold the
    changed entries only, aligned with ``indices``/``vec3Indices`` as in a delta. Like a delta it
    stands for ``merged`` frames (latest values win). The last snapshot's order is the indices of all
    its parts, in order; a ``values`` message in parts always lists its indices.
    """

    type: Literal["values"] = "values"
    seq: int
    tick: int
    sim_time: float
    wall_time: float
    merged: int = Field(description="number of frames merged into this message")
    indices: list[int] = Field(description="[] = values holds every subscribed scalar in the last snapshot's order; else their indices")
    values: list[float] = Field(description="scalar values (bool as 0/1)")
    vec3_indices: list[int] = Field(description="[] = vec3Values holds every subscribed vec3 in the last snapshot's order; else their indices")
    vec3_values: list[float] = Field(description="vec3 values, 3 numbers each, flattened")
    flagged: list[int] = Field(description="flat indices of entries whose quality is not 0 (good); every other entry is good")
    flagged_quality: list[int] = Field(description="their quality bits, aligned with flagged")
