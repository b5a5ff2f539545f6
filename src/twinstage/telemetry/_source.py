"""The Source protocol: how telemetry enters a tick, vectorised.

A *source* (CSV/Parquet replay, MQTT, OPC UA, SQL historian, bridge ingest) turns
what it reads into :class:`Samples` — one channel, many rows at once, values already
converted to the twin attribute's unit — and hands them to the engine. It declares
up front which rows it feeds (:meth:`Source.feeds`); a row fed by a source is never
written by a model.

Two ways in, one batch type:

* **live** sources (MQTT, OPC UA, bridge ingest) run on their own thread or event
  loop and call ``inbox.put(samples)`` from there. :class:`Inbox` is bounded and never
  blocks: when it is full the oldest batch is dropped, counted, and the rows it
  carried are flagged ``OVERFLOW`` on the next tick, so a slow tick never loses
  accepted samples silently.
* **replay** sources (files, historian) are deterministic: the engine calls
  ``poll(t0, t1)`` on the tick thread with the *data-time* window the tick covers and
  gets back the samples whose event time falls in ``(t0, t1]`` — an in-memory slice
  (searchsorted over preloaded arrays), so it never blocks a tick either.

Event time is in seconds: UNIX epoch seconds for live sources (the engine aligns
them against each tick's wall time, with an estimated clock offset per source);
*sim* seconds for replay sources, which map their data's own clock onto sim time
explicitly and say how in their provenance (``describe()``): the first timestamp lands
at the sim time the source is added (the engine calls ``anchor(sim_time)`` if the
source has it) or at an explicit start, one data second per sim second unless the
source says otherwise; how fast sim time runs against the wall is the clock's
business. Arrival time is the wall time the source received the batch.

Optional members the engine uses when present: ``resolved`` (the
:class:`~twinstage.telemetry._binding.Resolved` bindings: each row's align rule,
period and stale_after; without it a row holds, period unknown, stale after 3 of the
observed period), ``anchor(sim_time)`` and ``describe()`` (provenance text).

Sources are built from :class:`~twinstage.telemetry._binding.Binding` lists without a
twin; ``twin.add_source(src)`` calls ``src.bind(table)`` (resolve every binding,
raising :class:`TelemetryError` naming the binding), then ``src.start(inbox)``.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..state import StateTable


class TelemetryError(ValueError):
    """Bad telemetry input or binding; the message names file/line/topic/node/binding."""


@dataclass(frozen=True, slots=True)
class Samples:
    """A vectorised batch for one channel: ``values[i]`` is row ``rows[i]`` at ``event_time[i]``.

    ``values`` are float64 in the twin attribute's unit (sources convert on the way
    in). ``quality`` is a uint8 :class:`~twinstage.state.Quality` bit field per sample
    (0 = good) and ``reason`` an optional short text per flagged batch (e.g.
    ``"non-finite"``, ``"opcua status BadSensorFailure"``), or per sample with
    ``reason_index`` + ``reasons``. ``source`` names the source for provenance and
    error messages; the engine routes inbox batches to their source by it.
    """

    channel: str
    rows: np.ndarray  # int64, rows of ``channel`` (StateTable row numbering)
    values: np.ndarray  # float64, same length as rows (shape (n, 3) for vec3 channels)
    event_time: np.ndarray  # float64 seconds, same length as rows
    quality: np.ndarray  # uint8 Quality flags, same length as rows
    arrival_time: float = field(default_factory=time.time)
    source: str = ""
    reason: str = ""
    #: optional per-sample reasons: ``reasons[reason_index[i]]`` explains sample ``i`` ('' = none);
    #: for batches whose flagged samples have different causes (a file's bad cells, each on its line)
    reason_index: np.ndarray | None = None
    reasons: tuple[str, ...] = ()

    @classmethod
    def make(cls, channel: str, rows, values, event_time, quality=None, *, arrival_time: float | None = None, source: str = "", reason: str = "") -> "Samples":
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64)
        n = len(rows)
        et = np.broadcast_to(np.asarray(event_time, dtype=np.float64), (n,)).copy()
        q = np.zeros(n, dtype=np.uint8) if quality is None else np.broadcast_to(np.asarray(quality, dtype=np.uint8), (n,)).copy()
        if len(values) != n:
            raise TelemetryError(f"{source or channel}: {len(values)} values for {n} rows")
        return cls(channel, rows, values, et, q, time.time() if arrival_time is None else float(arrival_time), source, reason)

    def __len__(self) -> int:
        return len(self.rows)


class Inbox:
    """Bounded, non-blocking hand-over from source threads to the tick thread.

    ``put`` never blocks and never raises on a full buffer: the oldest batch is
    dropped and counted in :attr:`dropped_batches` / :attr:`dropped_samples`, and its
    ``(channel, rows)`` are remembered so the engine can flag them ``OVERFLOW``.
    ``drain`` takes everything queued, in arrival order, plus the overflow list.
    """

    def __init__(self, max_samples: int = 1_000_000):
        if max_samples <= 0:
            raise ValueError("max_samples must be > 0")
        self.max_samples = int(max_samples)
        self._q: collections.deque[Samples] = collections.deque()
        self._n = 0
        self._lock = threading.Lock()
        self._overflowed: list[tuple[str, np.ndarray, str]] = []
        self.accepted_samples = 0
        self.dropped_batches = 0
        self.dropped_samples = 0

    def put(self, samples: Samples) -> None:
        with self._lock:
            self._q.append(samples)
            self._n += len(samples)
            self.accepted_samples += len(samples)
            while self._n > self.max_samples and len(self._q) > 1:
                old = self._q.popleft()
                self._n -= len(old)
                self.dropped_batches += 1
                self.dropped_samples += len(old)
                self._overflowed.append((old.channel, old.rows, old.source))

    def drain(self) -> tuple[list[Samples], list[tuple[str, np.ndarray, str]]]:
        with self._lock:
            batches, self._q = list(self._q), collections.deque()
            overflowed, self._overflowed = self._overflowed, []
            self._n = 0
        return batches, overflowed

    def __len__(self) -> int:
        return self._n


@runtime_checkable
class Source(Protocol):
    """What every telemetry source implements (see the module docstring).

    ``name`` is unique per twin (it appears in quality reasons, metrics and
    provenance). ``bind(table)`` resolves the source's bindings against the twin's
    StateTable (:func:`~twinstage.telemetry._binding.resolve`). ``feeds()`` maps channel → rows this source owns. ``start(inbox)``
    is called once when the source is added (live sources start their thread or
    loop here; replay sources ignore it). ``poll(t0, t1)`` returns the samples with
    event time in ``(t0, t1]`` (live sources return ``()``). ``close()`` stops any
    thread and releases connections; it is idempotent. ``stats()`` returns counters
    (received, rejected, reconnects, lag …) for metrics.
    """

    name: str
    kind: str  # "replay" (polled on the tick thread) or "live" (pushes into the inbox)

    def bind(self, table: "StateTable") -> None: ...

    def feeds(self) -> Mapping[str, np.ndarray]: ...

    def start(self, inbox: Inbox) -> None: ...

    def poll(self, t0: float, t1: float) -> Iterable[Samples]: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, float]: ...
