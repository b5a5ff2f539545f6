"""Bridge ingest: a live telemetry source fed by websocket clients (``ingest`` messages).

Clients whose token has the ``ingest`` role push batches of ``(key, value, time, quality)``
over the bridge's websocket. The bridge validates the message shape; this source checks
the batch against its bindings (``Binding(kind="ingest", key=...)``) — every key known,
every value finite and finite after unit conversion, times and quality in range — and
either accepts the whole batch (one :class:`Samples` per channel, converted to the
attribute's unit, into the :class:`Inbox`) or rejects it whole with a
:class:`TelemetryError` naming the first bad sample. Nothing is half-applied.

::

    src = BridgeIngestSource([Binding("/Testbed/Pump", "ambientTemperature", "ingest", "room.temp", unit="degF")])
    twin.add_source(src)                       # bind(table) + start(inbox)
    serve(twin, tokens=["plc:ingest:..."], ingest=src)
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Sequence

import numpy as np

from ._binding import Binding
from ._payload import Router
from ._source import Inbox, Samples, TelemetryError

MAX_BATCH = 10_000


class BridgeIngestSource:
    """A live :class:`~twinstage.telemetry._source.Source` that the bridge server hands ingest batches to."""

    kind = "live"

    def __init__(self, bindings: Sequence[Binding], *, name: str = "ingest", max_batch: int = MAX_BATCH):
        self.name = name
        self.router = Router(name, "ingest", bindings)
        keys: dict[str, int] = {}
        for i, b in enumerate(self.router.bindings):
            if not b.key or len(b.key) > 256:
                raise TelemetryError(f"{b.where}: an ingest key is 1..256 characters")
            if b.key in keys:
                raise TelemetryError(f"{b.where}: key {b.key!r} is already bound by {self.router.bindings[keys[b.key]].where}")
            keys[b.key] = i
        self._keys = keys
        self.max_batch = int(max_batch)
        self._inbox: Inbox | None = None
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(("batches", "samples", "rejected_batches", "rejected_samples"), 0.0)

    # -- Source protocol ---------------------------------------------------------------------
    def bind(self, table: Any) -> None:
        self.router.bind(table)

    @property
    def resolved(self) -> list:
        return self.router.resolved

    def describe(self) -> str:
        return f"bridge ingest {self.name} ({len(self._keys)} keys)"

    def feeds(self) -> dict[str, np.ndarray]:
        return self.router.feeds()

    def start(self, inbox: Inbox) -> None:
        if not self.router.bound:
            raise TelemetryError(f"{self.name}: bind(table) before start(inbox)")
        self._inbox = inbox

    def poll(self, t0: float, t1: float) -> Iterable[Samples]:
        return ()

    def close(self) -> None:
        self._inbox = None

    def stats(self) -> dict[str, float]:
        with self._lock:
            return dict(self._stats)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    # -- the bridge's entry point ---------------------------------------------------------------
    def push(self, keys: Sequence[str], values: Sequence[float], times: Sequence[float] | None = None, quality: Sequence[int] | None = None, *,
             arrival: float | None = None) -> int:
        """Accept a whole batch or raise :class:`TelemetryError` naming the first bad sample (nothing is queued then).

        ``times``: event times (UNIX seconds; 0 = the arrival time). ``quality``: Quality bits per sample (0 good).
        Returns the number of samples queued. Thread-safe (called from the bridge's loop thread).
        """
        try:
            return self._push(keys, values, times, quality, arrival)
        except TelemetryError:
            with self._lock:
                self._stats["rejected_batches"] += 1
                self._stats["rejected_samples"] += len(keys)
            raise

    def _push(self, keys: Sequence[str], values: Sequence[float], times: Sequence[float] | None, quality: Sequence[int] | None,
              arrival: float | None) -> int:
        inbox = self._inbox
        if inbox is None:
            raise TelemetryError(f"{self.name}: not started (add it to the twin with twin.add_source(src))")
        n = len(keys)
        if n == 0:
            return 0
        if n > self.max_batch:
            raise TelemetryError(f"{self.name}: {n} samples in one batch; at most {self.max_batch}")
        if len(values) != n or (times is not None and len(times) != n) or (quality is not None and len(quality) != n):
            raise TelemetryError(f"{self.name}: keys, values, times and quality must have the same length")
        idx = np.empty(n, np.int64)
        for i, k in enumerate(keys):
            j = self._keys.get(k)
            if j is None:
                raise TelemetryError(f"{self.name}: sample {i}: unknown key {str(k)[:80]!r} (bound keys: {', '.join(sorted(self._keys)[:10])}"
                                     f"{', …' if len(self._keys) > 10 else ''})")
            idx[i] = j
        raw = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(raw))
        if len(bad):
            raise TelemetryError(f"{self.name}: sample {int(bad[0])} ({keys[int(bad[0])]}): value {raw[bad[0]]!r} is not finite")
        now = time.time() if arrival is None else float(arrival)
        et = np.full(n, now) if times is None else np.asarray(times, dtype=np.float64)
        badt = np.flatnonzero(~np.isfinite(et) | (et < 0))
        if len(badt):
            raise TelemetryError(f"{self.name}: sample {int(badt[0])} ({keys[int(badt[0])]}): time {et[badt[0]]!r} must be >= 0 (0 = now)")
        et = np.where(et == 0, now, et)
        q = np.zeros(n, np.uint8) if quality is None else np.asarray(quality, dtype=np.int64)
        if quality is not None:
            badq = np.flatnonzero((q < 0) | (q > 255))
            if len(badq):
                raise TelemetryError(f"{self.name}: sample {int(badq[0])} ({keys[int(badq[0])]}): quality {int(q[badq[0]])} is not 0..255")
            q = q.astype(np.uint8)
        r = self.router
        with np.errstate(over="ignore", invalid="ignore"):
            conv = raw * r.a[idx] + r.b[idx]
        badc = np.flatnonzero(~np.isfinite(conv))
        if len(badc):
            raise TelemetryError(f"{self.name}: sample {int(badc[0])} ({keys[int(badc[0])]}): {raw[badc[0]]!r} overflows after unit conversion")
        chan = r.chan[idx]
        batches = []
        for c in np.unique(chan):
            sel = np.flatnonzero(chan == c)
            batches.append(Samples.make(r.channels[int(c)], r.row[idx[sel]], conv[sel], et[sel], q[sel], arrival_time=now, source=self.name))
        for s in batches:  # validated in full first: the batch goes in whole
            inbox.put(s)
        with self._lock:
            self._stats["batches"] += 1
            self._stats["samples"] += n
        return n
