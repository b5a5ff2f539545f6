"""Protocol messages: the single source of truth of the bridge's JSON wire format.

Every JSON message is an object with a ``type``. Field names on the wire are
camelCase (``simTime``, ``lastSeq``); the Python attributes are snake_case.
Shapes are chosen so that Unity's ``JsonUtility`` can parse and write them:
objects holding arrays of records, never maps keyed by path; optional client
fields take JsonUtility's defaults (``""``, ``0``, ``[]``) to mean "default".

``docs/protocol.schema.json`` is generated from these classes
(``python -m twinstage.bridge.schema``); a test keeps it in sync.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel
from ._glb_message import GLB_DOC, SceneModel  # hello.glb (a module of its own: this one is at its length limit)
from ._freshness_message import Freshness  # the freshness message (same reason)
from ._values_message import Parted, StateLimits, Values  # compact state; part/parts; limits.maxStateBytes (same reason)
from ._whatif_message import Forecast, WhatIf  # what-if from now (same reason)

PROTOCOL = "twinstage.bridge"
VERSION = 1
SUBPROTOCOL = "twinstage.v1"
FOXGLOVE_SUBPROTOCOL = "foxglove.websocket.v1"
#: a limit of +-this value means "unbounded" (JSON has no infinity; JsonUtility has no null doubles)
UNBOUNDED = 1.7976931348623157e308

ROLES = ("viewer", "operator", "admin", "ingest")
ENCODINGS = ("json", "binary", "compact")
COMMANDS = ("ping", "pause", "resume", "step", "scenario", "clients")
ERROR_CODES = (
    "bad_json",  # not valid JSON (or NaN/Infinity literals)
    "bad_message",  # valid JSON, wrong shape or field types
    "unknown_type",  # unknown message ``type`` or command name
    "binary_not_accepted",  # clients send text frames only
    "unauthorized",  # missing or wrong token
    "forbidden",  # the token's role may not do this
    "not_found",  # unknown prim or attribute
    "invalid_value",  # wrong type for the attribute, not finite, out of limits, bad unit
    "rate_limited",  # over the per-connection command rate
    "timeout",  # the twin did not answer in time
    "internal",  # a server bug; the message says what
)


def _finite_number(v: Any) -> Any:
    """JSON numbers only: a bool is not a number, ``0`` is a fine double; no NaN/inf."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


def _encoding(v: Any) -> Any:
    """JsonUtility writes "" for a string left unset: it means the default, json."""
    return "json" if v == "" else v


def _int(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"expected an integer, got {type(v).__name__} {v!r}")
    return int(v)


def _value(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return _finite_number(v)
    if isinstance(v, list):
        if len(v) != 3:
            raise ValueError(f"a vector value has 3 numbers, got {len(v)}")
        return [_finite_number(c) for c in v]
    raise ValueError(f"expected a number, a bool or a list of 3 numbers, got {type(v).__name__} {v!r}")


Number = Annotated[float, BeforeValidator(_finite_number)]
Int = Annotated[int, BeforeValidator(_int)]
Value = Annotated[Union[StrictBool, float, list[float]], BeforeValidator(_value)]


class _Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)

    def wire(self) -> dict[str, Any]:
        """The message as it goes on the wire (camelCase keys)."""
        return self.model_dump(by_alias=True, mode="json")


# -- records ---------------------------------------------------------------------------

class AttributeInfo(_Base):
    """One entry of the attribute table: flat index → prim, attribute, type, unit."""

    index: int = Field(description="flat entry index used by snapshots, deltas and binary frames")
    prim: str = Field(description="prim path, e.g. /Testbed/Pump")
    attribute: str = Field(description="twin attribute name without the twin: namespace, e.g. flowRate")
    kind: Literal["float", "int", "bool", "vec3"] = Field(alias="type", description="value type; bool travels as 0/1 in values arrays")
    unit: str = Field(description="pint unit string; '1' is dimensionless")
    min: float = Field(description=f"lower limit; -{UNBOUNDED} means unbounded")
    max: float = Field(description=f"upper limit; {UNBOUNDED} means unbounded")
    role: str = Field(description="state, input, parameter or measured")
    drives: str = Field(description="a plain USD attribute this value is mirrored into (e.g. xformOp:translate), or ''")
    description: str = ""


class PrimInfo(_Base):
    """A prim for clients that build a scene: where it is and how big (world space, stage units)."""

    path: str
    kind: str = Field(description="twin:kind (pump, valve, machine, ...) or the prim's type name for non-twin prims")
    asset_id: str = ""
    model: str = ""
    position: list[float] = Field(description="world translation of the prim's origin [x, y, z]")
    origin: list[float] = Field(description="world translation of the parent; a vec3 attribute that drives xformOp:translate is relative to it")
    center: list[float] = Field(description="bounding box centre relative to position [x, y, z]")
    size: list[float] = Field(description="bounding box size [x, y, z]; [0, 0, 0] when it has no geometry")
    color_by: int = Field(-1, description="index of the attribute clients colour this prim by (-1: none)")
    attributes: list[int] = Field(default_factory=list, description="indices of this prim's attributes")


class Categories(_Base):
    """A string column: the distinct ``values`` and each row's ``index`` into them ([] = every row is values[0])."""

    values: list[str]
    index: list[int] = Field(default_factory=list)


class Triples(_Base):
    """A vector column: distinct [x, y, z] triples (flattened) and each row's index ([] = every row is the first)."""

    values: list[float]
    index: list[int] = Field(default_factory=list)


class ChannelInfo(_Base):
    """Compact hello: one channel's rows of the attribute table (entry index = offset + row)."""

    name: str
    kind: Literal["float", "int", "bool", "vec3"] = Field(alias="type")
    unit: str
    offset: int = Field(description="flat index of row 0")
    count: int
    prim_start: int = Field(description="when prims is []: row r belongs to asset primStart + r")
    prims: list[int] = Field(description="asset index per row, or [] (contiguous from primStart)")
    min: list[float] = Field(description="one per row, or one for all rows")
    max: list[float] = Field(description="one per row, or one for all rows")
    role: Categories
    drives: Categories
    description: Categories


class AssetTable(_Base):
    """Compact hello: the assets as columns (asset i = the i-th prim record of the rows layout)."""

    count: int = 0
    parents: list[str] = Field(default_factory=list, description="distinct parent paths")
    parent: list[int] = Field(default_factory=list, description="per asset: index into parents; path = parent + '/' + name")
    names: list[str] = Field(default_factory=list)
    kinds: Categories = Field(default_factory=lambda: Categories(values=[""]))
    asset_ids: Categories = Field(default_factory=lambda: Categories(values=[""]))
    models: Categories = Field(default_factory=lambda: Categories(values=[""]))
    position: list[float] = Field(default_factory=list, description="3 numbers per asset")
    origin: Triples = Field(default_factory=lambda: Triples(values=[0.0, 0.0, 0.0]))
    center: Triples = Field(default_factory=lambda: Triples(values=[0.0, 0.0, 0.0]))
    size: Triples = Field(default_factory=lambda: Triples(values=[0.0, 0.0, 0.0]))
    color_by: list[int] = Field(default_factory=list)


class Limits(_Base, StateLimits):
    max_message_bytes: int = Field(description="larger client messages close the connection with 1009")
    commands_per_second: float = Field(description="sustained rate of set/command/subscribe per connection")
    command_burst: int
    command_timeout: float = Field(description="seconds after which an unanswered command gets a timeout error")
    send_deadline: float = Field(description="seconds a send may take before a stalled client is disconnected")
    max_rate: float = Field(description="the server's tick rate; maxRate above it means every tick")
    ring_frames: int = Field(description="how many recent frames a resume can replay as one delta")


class ClientInfo(_Base):
    id: int
    user: str
    role: str
    dialect: str
    encoding: str
    sent: int
    merged: int
    snapshots: int


# -- server → client -------------------------------------------------------------------

class Hello(_Base):
    """First message of every session (after authentication)."""

    type: Literal["hello"] = "hello"
    protocol: str = PROTOCOL
    version: int = VERSION
    session: str = Field(description="new for every server start; resume only within one session")
    server: str = Field(description="server software and version")
    scene: str = Field(description="scene file name")
    role: str = Field(description="this connection's role: viewer, operator, admin or ingest")
    user: str = Field(description="name of the token used ('' when anonymous)")
    tick_rate: float
    tick: int
    sim_time: float
    seq: int = Field(description="the latest frame sequence number")
    paused: bool
    up_axis: str
    meters_per_unit: float
    encodings: list[str]
    limits: Limits
    attributes: list[AttributeInfo]
    prims: list[PrimInfo] = Field(description="the twin assets")
    added: list[PrimInfo] = Field(default_factory=list, description="prims added to the stage since the server started")
    removed: list[str] = Field(default_factory=list, description="prims removed from the stage since the server started")
    layout: Literal["rows", "compact"] = Field("rows", description="compact (asked for with ?hello=compact): attributes and prims are [], "
                                                                   "channels and assets hold the same information as columns")
    channels: list[ChannelInfo] = Field(default_factory=list)
    assets: AssetTable = Field(default_factory=AssetTable)
    glb: SceneModel = Field(default_factory=SceneModel, description=GLB_DOC)


class _State(_Base, Parted):
    seq: int = Field(description="frame sequence number; strictly increasing within a session")
    tick: int
    sim_time: float
    wall_time: float = Field(description="seconds since the epoch when the twin produced the frame")
    indices: list[int] = Field(description="scalar entries (float, int, bool) in this message")
    values: list[float] = Field(description="their values, aligned with indices (bool as 0/1)")
    quality: list[int] = Field(description="their quality bits (0 good, 1 stale, 2 out of range, 4 estimated, 8 late, 16 bad)")
    vec3_indices: list[int] = Field(description="vec3 entries in this message")
    vec3_values: list[float] = Field(description="their values, 3 numbers each, flattened")
    vec3_quality: list[int]


class Snapshot(_State):
    """The full state of everything the client subscribed to, at ``seq``."""

    type: Literal["snapshot"] = "snapshot"
    reason: Literal["subscribe", "resume", "behind"] = Field(description="why: a new subscription, a resume outside the ring, or a client too far behind")


class Delta(_State):
    """Entries changed since the previous state message this client got, latest values.

    ``merged`` > 1: the client was behind and several frames were merged (latest
    value wins); the seq jumps. The seq also jumps over frames that changed
    nothing the client subscribed to.
    """

    type: Literal["delta"] = "delta"
    merged: int = Field(description="number of frames merged into this delta")


class Structure(_Base):
    """Prims added to or removed from the stage while running (the attribute table does not change).

    A record in ``added`` for a path the client already has replaces it (a prim added while
    running that was then moved or resized).
    """

    type: Literal["structure"] = "structure"
    seq: int
    tick: int
    added: list[PrimInfo]
    removed: list[str]


class Alarm(_Base):
    """An entry went out of its limits (warning) or was rejected as bad (critical), or came back."""

    type: Literal["alarm"] = "alarm"
    seq: int
    tick: int
    sim_time: float
    index: int
    prim: str
    attribute: str
    severity: Literal["warning", "critical"]
    active: bool = Field(description="true when raised, false when cleared")
    value: float = Field(description="the value (vec3: its first component); 0 for a bad value")
    message: str


class Event(_Base):
    """Something happened: paused, resumed, stepped, a scenario started/finished, a twin error."""

    type: Literal["event"] = "event"
    tick: int
    sim_time: float
    kind: str
    message: str
    user: str = ""


class Error(_Base):
    """A request failed. ``id`` matches the request's id ('' for messages without one)."""

    type: Literal["error"] = "error"
    id: str = ""
    of: str = Field("", description="the type (or command name) of the message it answers")
    code: str = Field(description="one of: " + ", ".join(ERROR_CODES))
    message: str


class Ack(_Base):
    """A request succeeded. Exactly one ack or error answers every request with an id."""

    type: Literal["ack"] = "ack"
    id: str
    of: str = Field(description="the type (or command name) of the message it answers")
    tick: int = Field(description="the twin's tick when answered (set: the value enters a later tick)")
    seq: int = Field(0, description="subscribe/resume: the seq of the state that follows")
    count: int = Field(0, description="subscribe: entries matched; step: ticks stepped")
    paused: bool = False
    detail: str = ""
    clients: list[ClientInfo] = Field(default_factory=list, description="command 'clients' (admin)")


# -- client → server -------------------------------------------------------------------

class Auth(_Base):
    """Browsers cannot set headers: they send the token as their first message."""

    type: Literal["auth"] = "auth"
    token: str


class Subscribe(_Base):
    """Choose what to receive; answered by an ack, then a snapshot, then deltas."""

    type: Literal["subscribe"] = "subscribe"
    id: str = ""
    prefixes: list[str] = Field(default_factory=list, description="prim path prefixes (/Testbed/Pump matches it and its descendants); [] = all")
    attributes: list[str] = Field(default_factory=list, description="attribute names; [] = all")
    encoding: Annotated[Literal["json", "binary", "compact", ""], BeforeValidator(_encoding)] = Field(
        "json", description="json (indexed deltas), compact (JSON 'values' messages in the snapshot's order) or binary; '' = json")
    max_rate: Number = Field(0.0, ge=0, description="at most this many state messages per second (merged, latest wins); 0 = every tick")


class Resume(Subscribe):
    """Reconnect: the same fields as subscribe, plus where the client left off."""

    type: Literal["resume"] = "resume"  # type: ignore[assignment]
    session: str = Field(description="the session id of the hello the client last saw")
    last_seq: Int = Field(ge=0, description="the seq of the last snapshot/delta the client applied")


class Set(_Base):
    """Set one twin attribute (operator: input and parameter attributes; admin: any)."""

    type: Literal["set"] = "set"
    id: str = Field(min_length=1, max_length=128)
    prim: str
    attribute: str
    value: Value = Field(description="number (0 is a fine double), bool, or [x, y, z]; finite, within limits")
    unit: str = Field("", description="unit of value if not the attribute's own ('' = the attribute's unit)")


class Command(_Base):
    """Control the twin. Names: ping, pause, resume, step, scenario (operator), clients (admin)."""

    type: Literal["command"] = "command"
    id: str = Field(min_length=1, max_length=128)
    command: str
    steps: Int = Field(0, description="step: number of ticks (0 = 1)")
    scenario: str = Field("", description="scenario: the name of a scenario registered with the server")


class IngestSample(_Base):
    """One telemetry sample pushed by a client."""

    key: str = Field(min_length=1, max_length=256, description="the ingest key a Binding(kind='ingest', key=...) maps to a twin attribute")
    value: Number = Field(description="finite number in the binding's unit")
    time: Number = Field(0.0, ge=0, description="event time, UNIX seconds; 0 = when the server received it")
    quality: Int = Field(0, ge=0, le=255, description="quality bits (0 good, 1 stale, 4 estimated, 16 bad, 32 uncertain)")


class Ingest(_Base):
    """Push telemetry into the twin (role ``ingest`` or ``admin``): the whole batch is accepted or none of it."""

    type: Literal["ingest"] = "ingest"
    id: str = Field(min_length=1, max_length=128)
    samples: list[IngestSample] = Field(max_length=10_000, description="at most 10000 samples (and maxMessageBytes)")


ServerMessage = Annotated[Union[Hello, Snapshot, Delta, Values, Structure, Alarm, Event, Error, Ack, Freshness, Forecast], Field(discriminator="type")]
ClientMessage = Annotated[Union[Auth, Subscribe, Resume, Set, Command, Ingest, WhatIf], Field(discriminator="type")]
CLIENT_TYPES = {"auth": Auth, "subscribe": Subscribe, "resume": Resume, "set": Set, "command": Command, "ingest": Ingest, "whatif": WhatIf}
SERVER_TYPES = {"hello": Hello, "snapshot": Snapshot, "delta": Delta, "values": Values, "structure": Structure, "alarm": Alarm, "event": Event, "error": Error, "ack": Ack,
                "freshness": Freshness, "forecast": Forecast}
