"""OPC UA source (asyncua client): subscribe to nodes, push data changes into the Inbox.

``OpcUaSource("opc.tcp://host:4840/", bindings)`` with bindings of kind ``"opcua"``
whose key is a NodeId string (``ns=2;s=Pressure``, ``ns=3;i=1001``). The client runs
its own asyncio loop on a daemon thread; each data change notification becomes a
:class:`Samples` in the attribute's unit whose event time is the value's
*SourceTimestamp* (ServerTimestamp when the server sends none, arrival time when
neither). Status codes map onto quality flags:

* Good → 0;
* Uncertain… → UNCERTAIN, reason ``opcua status <name> (<node>)``;
* Bad… → BAD with the same kind of reason (the engine holds the previous good value).

A server that disappears (connection lost, watchdog probe failing) makes the source
reconnect with exponential back-off between ``reconnect_min`` and ``reconnect_max``
seconds and recreate its subscription; ``stats()`` counts ``reconnects`` and says
whether it is ``connected``; :attr:`OpcUaSource.last_error` says why it is not. A
node the server does not know is reported (``stats()["unknown_nodes"]`` and
:attr:`OpcUaSource.rejects`, naming the node) while the other nodes keep flowing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Sequence

import numpy as np

from ._binding import Binding
from ._live import LiveSource
from ._payload import Router
from ._source import Inbox, Samples, TelemetryError

log = logging.getLogger(__name__)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _seconds(t) -> float | None:
    if not isinstance(t, dt.datetime):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return (t - _EPOCH).total_seconds()


class OpcUaSource(LiveSource):
    """A live source subscribed to an OPC UA server (see the module docstring)."""

    reject_label = "node"

    def __init__(self, url: str, bindings: Sequence[Binding], *, name: str = "", period: float = 0.05, timeout: float = 4.0,
                 watchdog: float = 0.5, reconnect_min: float = 0.2, reconnect_max: float = 5.0):
        self.url = url
        self.name = name or f"opcua:{url}"
        self.router = Router(self.name, "opcua", bindings)
        from asyncua import ua

        nodes: dict[str, list[int]] = {}
        for i, b in enumerate(self.router.bindings):
            try:
                key = ua.NodeId.from_string(b.key).to_string()
            except Exception as exc:  # asyncua raises several kinds for a bad NodeId string
                raise TelemetryError(f"{b.where}: not a NodeId string ({exc})") from None
            nodes.setdefault(key, []).append(i)
        self._nodes = {k: np.array(v, np.int64) for k, v in nodes.items()}
        self.period, self.timeout, self.watchdog = float(period), float(timeout), float(watchdog)
        self._init_live(("notifications", "samples", "bad_samples", "uncertain_samples", "unknown_nodes"), reconnect_min, reconnect_max)
        self.last_error = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- Source protocol (bind, resolved, feeds, poll: LiveSource) ----------
    def describe(self) -> str:
        """Provenance: where the data came from."""
        return f"{self.url} ({len(self.router.bindings)} bindings)"

    def start(self, inbox: Inbox) -> None:
        self._check_start(self._thread is not None)
        self._inbox = inbox
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name=f"twinstage-{self.name}")
        self._thread.start()
        ready.wait(5)

    def close(self) -> None:
        loop, stop, th = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if th is not None:
            th.join(10)
        self._thread = None
        self._connected.clear()

    # -- the client loop (its own thread) -------------------------------------
    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop, self._stop = loop, asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _main(self) -> None:
        from asyncua import Client, ua

        delay = self.reconnect_min
        while not self._stop.is_set():
            client = Client(self.url, timeout=self.timeout, watchdog_intervall=self.watchdog)
            lost = asyncio.Event()

            async def on_lost(exc, lost=lost):
                self.last_error = f"connection lost: {exc!r}"
                lost.set()

            client.connection_lost_callback = on_lost
            subscribed = False
            try:
                await client.connect()
                sub = await client.create_subscription(self.period * 1000.0, self)
                keys = list(self._nodes)
                res = await sub.subscribe_data_change([client.get_node(k) for k in keys])
                for key, r in zip(keys, res):
                    if isinstance(r, ua.StatusCode):
                        self._reject(key, f"cannot subscribe: {r.name}")
                        self._count("unknown_nodes")
                subscribed = True
                self._on_connected()
                delay = self.reconnect_min
                stop_w, lost_w = asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(lost.wait())
                await asyncio.wait({stop_w, lost_w}, return_when=asyncio.FIRST_COMPLETED)
                stop_w.cancel()
                lost_w.cancel()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("%s: %s; retrying in %.1fs", self.name, self.last_error, delay)
            finally:
                self._on_lost(counted=subscribed)
                try:
                    await asyncio.wait_for(client.disconnect(), 2.0)
                except Exception:
                    pass
            if self._stop.is_set():
                break
            await self._sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    # -- asyncua subscription handler ---------------------------------------
    def datachange_notification(self, node, val, data) -> None:
        try:
            self._notification(node.nodeid.to_string(), val, data.monitored_item.Value)
        except Exception as exc:  # never let one notification stop the client loop
            log.exception("%s: notification failed", self.name)
            self._reject(str(getattr(node, "nodeid", node)), f"internal error: {exc!r}")

    def status_change_notification(self, status) -> None:
        self.last_error = f"subscription status {getattr(status, 'Status', status)}"

    def event_notification(self, event) -> None:
        pass

    def _notification(self, key: str, val, dv) -> None:
        arrival = time.time()
        idx = self._nodes.get(key)
        if idx is None:
            return
        code = dv.StatusCode if dv is not None and dv.StatusCode is not None else None
        q, why = 0, ""
        if code is not None and not code.is_good():
            q = 1 if code.is_uncertain() else 2
            why = f"opcua status {code.name}"
        if isinstance(val, bool) or not isinstance(val, (int, float, np.number)):
            if q == 2:  # a Bad status often carries no value: flagged, previous value held
                val = float("nan")
            else:
                self._reject(key, f"value of type {type(val).__name__} is not a number")
                return
        t = None
        if dv is not None:
            t = _seconds(dv.SourceTimestamp) or _seconds(dv.ServerTimestamp)
        t = arrival if t is None else t
        n = len(idx)
        out = self.router.samples(idx, np.full(n, float(val)), np.full(n, t), np.full(n, q, np.uint8), arrival=arrival, why=why)
        if self._inbox is not None:
            for s in out:
                self._inbox.put(s)
        with self._lock:
            st = self._stats
            st["notifications"] += 1
            st["samples"] += n
            st["bad_samples"] += sum(int(np.count_nonzero(s.quality & 16)) for s in out)
            st["uncertain_samples"] += n if q == 1 else 0
            st["lag_s"] = arrival - t
