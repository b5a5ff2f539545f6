"""What the live sources (:class:`MqttSource`, :class:`OpcUaSource`) share: binding resolution
through a :class:`~twinstage.telemetry._payload.Router`, the Source protocol's passive half, locked
stats with connect/reconnect/disconnect counts, and the log of rejected input."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Iterable, Sequence

from ._payload import Router
from ._source import Inbox, Samples, TelemetryError

log = logging.getLogger(__name__)

#: the counters every live source keeps (besides its own)
LIVE_STATS = ("rejected", "connects", "reconnects", "disconnects", "lag_s")


class LiveSource:
    """Base of the live sources; a subclass sets ``name`` and ``router`` then calls :meth:`_init_live`."""

    kind = "live"
    name: str
    router: Router
    #: how a rejected input is logged: "<name>: <reject_label> <key>: <reason>"
    reject_label = "rejected"

    def _init_live(self, stats: Sequence[str], reconnect_min: float, reconnect_max: float) -> None:
        self.reconnect_min, self.reconnect_max = float(reconnect_min), float(reconnect_max)
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise TelemetryError(f"{self.name}: reconnect back-off needs 0 < reconnect_min <= reconnect_max "
                                 f"(got {reconnect_min} and {reconnect_max})")
        self.rejects: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)
        self._inbox: Inbox | None = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stats = dict.fromkeys((*stats, *LIVE_STATS), 0.0)

    # -- Source protocol ----------------------------------------------------
    def bind(self, table: Any) -> None:
        self.router.bind(table)

    @property
    def resolved(self):
        """The resolved bindings (the engine reads each one's align/period/stale_after)."""
        return self.router.resolved

    def feeds(self):
        return self.router.feeds()

    def poll(self, t0: float, t1: float) -> Iterable[Samples]:
        return ()  # live: everything comes through the inbox

    def _check_start(self, running: bool) -> None:
        if not self.router.bound:
            raise TelemetryError(f"{self.name}: bind(table) before start(inbox)")
        if running:
            raise TelemetryError(f"{self.name}: already started")

    # -- state ----------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        with self._lock:
            out = dict(self._stats)
        out["connected"] = float(self._connected.is_set())
        return out

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block (not on the tick thread!) until subscribed; for scripts and tests."""
        return self._connected.wait(timeout)

    def _count(self, key: str, n: float = 1.0) -> None:
        with self._lock:
            self._stats[key] += n

    def _on_connected(self) -> None:
        """Subscribed: count it (``reconnects`` = connects after the first) and say so."""
        with self._lock:
            self._stats["connects"] += 1
            self._stats["reconnects"] = self._stats["connects"] - 1
        self._connected.set()

    def _on_lost(self, counted: bool = True) -> None:
        self._connected.clear()
        if counted:
            self._count("disconnects")

    def _reject(self, key: str, reason: str) -> None:
        self.rejects.append((key, reason))
        self._count("rejected")
        log.warning("%s: %s %s: %s", self.name, self.reject_label, key, reason)
