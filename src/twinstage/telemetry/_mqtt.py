"""MQTT source (paho-mqtt 2.x): subscribe to bound topics, push Samples into the Inbox.

``MqttSource(host, port, bindings)`` with bindings of kind ``"mqtt"`` whose key is a
topic or a topic filter (``+`` one level, ``#`` the rest). Messages are parsed by
:func:`~twinstage.telemetry._payload.parse_payload` (number, JSON object, JSON batch or
the binary batch) on paho's network thread and handed over as one :class:`Samples`
per channel; the tick never waits on the network.

* QoS 1 subscriptions; ``batch_topics`` are subscribed too (their batch entries are
  routed by key like topics).
* Reconnect: paho's loop reconnects with exponential back-off between
  ``reconnect_min`` and ``reconnect_max`` seconds and this source resubscribes on every
  connect; ``stats()["reconnects"]`` counts the connects after the first.
* Bad input never stops the loop: an unreadable or oversized payload is rejected,
  counted and remembered with its topic and reason (:attr:`MqttSource.rejects`, the
  last 100); a non-finite value or a payload that says ``bad`` enters as a BAD sample
  with its reason (the engine holds the previous good value).

Topic → bindings lookups are cached per concrete topic (bounded), and binary batch
key blocks per key block, so the hot path is a dict hit and a few numpy operations.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Sequence

import numpy as np

from ._binding import Binding
from ._live import LiveSource
from ._payload import Parsed, PayloadError, Plan, Router, parse_payload
from ._source import Inbox, Samples, TelemetryError

log = logging.getLogger(__name__)
_ids = itertools.count(1)
_CACHE_MAX = 200_000


def _is_filter(key: str) -> bool:
    return "+" in key or "#" in key


def _check_filter(key: str, where: str) -> None:
    parts = key.split("/")
    if not key or "\0" in key:
        raise TelemetryError(f"{where}: empty topic or NUL in topic")
    for i, p in enumerate(parts):
        if ("#" in p and (p != "#" or i != len(parts) - 1)) or ("+" in p and p != "+"):
            raise TelemetryError(f"{where}: invalid topic filter {key!r} ('+' is a whole level, '#' only last)")


class MqttSource(LiveSource):
    """A live source fed by an MQTT broker (see the module docstring)."""

    reject_label = "rejected payload on topic"

    def __init__(
        self,
        host: str,
        port: int,
        bindings: Sequence[Binding],
        *,
        name: str = "",
        batch_topics: Sequence[str] = (),
        qos: int = 1,
        client_id: str = "",
        keepalive: int = 10,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        max_payload: int = 16 << 20,
    ):
        self.host, self.port = host, int(port)
        self.name = name or f"mqtt:{host}:{port}"
        self.router = Router(self.name, "mqtt", bindings)
        for b in self.router.bindings:
            _check_filter(b.key, b.where)
        for t in batch_topics:
            _check_filter(t, f"{self.name}: batch topic")
        self.batch_topics = tuple(batch_topics)
        self.qos, self.keepalive, self.max_payload = int(qos), int(keepalive), int(max_payload)
        self.client_id = client_id or f"twinstage-{next(_ids)}-{id(self):x}"
        self._init_live(("messages", "samples", "bad_samples", "unbound"), reconnect_min, reconnect_max)
        exact: dict[str, list[int]] = {}
        filters: dict[str, list[int]] = {}
        for i, b in enumerate(self.router.bindings):
            (filters if _is_filter(b.key) else exact).setdefault(b.key, []).append(i)
        self._exact = {k: np.array(v, np.int64) for k, v in exact.items()}
        self._filters = {k: np.array(v, np.int64) for k, v in filters.items()}
        self._topic_cache: dict[str, np.ndarray] = {}
        self._block_cache: dict[bytes, tuple] = {}
        self._plan_cache: dict[tuple[str, ...], tuple] = {}
        self._block_nk: dict[bytes, int] = {}  # cached key block → its number of keys
        self._client = None

    # -- Source protocol (bind, resolved, feeds, poll: LiveSource) ----------
    def describe(self) -> str:
        """Provenance: where the data came from."""
        return f"mqtt://{self.host}:{self.port} ({len(self.router.bindings)} bindings, QoS {self.qos})"

    def start(self, inbox: Inbox) -> None:
        self._check_start(self._client is not None)
        import paho.mqtt.client as mqtt

        self._inbox = inbox
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        c.reconnect_delay_set(min_delay=self.reconnect_min, max_delay=self.reconnect_max)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client = c
        c.loop_start()

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.disconnect()
            finally:
                c.loop_stop()
        self._connected.clear()

    # -- paho callbacks (network thread) ------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("%s: connect refused: %s", self.name, reason_code)
            return
        subs = [(t, self.qos) for t in [*self._exact, *self._filters, *self.batch_topics]]
        for i in range(0, len(subs), 1000):  # one SUBSCRIBE per 1000 filters
            client.subscribe(subs[i:i + 1000])
        self._on_connected()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._on_lost()
        if self._client is not None:
            log.info("%s: disconnected (%s); reconnecting with back-off", self.name, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.feed(msg.topic, msg.payload)
        except Exception as exc:  # never let a bug in one message stop the network loop
            log.exception("%s: message on %s failed", self.name, msg.topic)
            self._reject(msg.topic, f"internal error: {exc!r}")

    # -- the hot path (also callable directly) ------------------------------
    def feed(self, topic: str, payload: bytes, arrival: float | None = None) -> int:
        """Parse and route one message; returns the number of samples handed over."""
        arrival = time.time() if arrival is None else arrival
        try:
            p = parse_payload(topic, payload, arrival=arrival, max_bytes=self.max_payload, known_blocks=self._block_nk)
        except PayloadError as exc:
            self._reject(topic, str(exc))
            return 0
        idx, col, unbound, plan = self._route(topic, p)
        n_t = len(p.ts)
        out: list[Samples] = []
        why = f"quality flagged in the payload on {topic}"
        if not len(idx):
            pass
        elif n_t == 1:  # the hot path: one time point, a cached plan
            raw = p.values[0] if col is None else p.values[0, col]
            out = self.router.emit(plan, raw, float(p.ts[0]), p.quality[0] if col is None else p.quality[0, col], arrival=arrival, why=why)
        else:
            c = slice(None) if col is None else col
            raw, q = p.values[:, c].reshape(-1), p.quality[:, c].reshape(-1)
            out = self.router.samples(np.tile(idx, n_t), raw, np.repeat(p.ts, len(idx)), q, arrival=arrival, why=why)
        if self._inbox is not None:
            for s in out:
                self._inbox.put(s)
        n = sum(len(s) for s in out)
        with self._lock:
            st = self._stats
            st["messages"] += 1
            st["samples"] += n
            st["unbound"] += unbound
            st["bad_samples"] += sum(int(np.count_nonzero(s.quality & 16)) for s in out if s.reason)  # flagged batches carry a reason
            if n_t:
                st["lag_s"] = arrival - float(p.ts[-1])
        return n

    def _match(self, key: str) -> np.ndarray:
        hit = self._topic_cache.get(key)
        if hit is not None:
            return hit
        from paho.mqtt.client import topic_matches_sub

        parts = [self._exact[key]] if key in self._exact else []
        if not key.startswith("$"):
            parts += [ix for f, ix in self._filters.items() if topic_matches_sub(f, key)]
        hit = np.concatenate(parts) if parts else np.empty(0, np.int64)
        if len(self._topic_cache) >= _CACHE_MAX:
            self._topic_cache.clear()
        self._topic_cache[key] = hit
        return hit

    def _route(self, topic: str, p: Parsed) -> tuple[np.ndarray, np.ndarray | None, int, Plan | None]:
        """Binding indices, the key column feeding each (None: column i feeds binding i), the
        count of keys no binding wants, and the cached :class:`Plan` of the routing."""
        if p.key_block:
            hit = self._block_cache.get(p.key_block)
            if hit is not None:
                return hit
        else:
            hit = self._plan_cache.get(p.keys)
            if hit is not None:
                return hit
        idx_parts, col_parts, unbound = [], [], 0
        for k, key in enumerate(p.keys):
            ix = self._match(key)
            if len(ix):
                idx_parts.append(ix)
                col_parts.append(np.full(len(ix), k, np.int64))
            else:
                unbound += 1
        if idx_parts:
            idx, col = np.concatenate(idx_parts), np.concatenate(col_parts)
            if len(col) == len(p.keys) and (col == np.arange(len(col))).all():
                col = None
            res = (idx, col, unbound, self.router.plan(idx))
        else:
            res = (np.empty(0, np.int64), np.empty(0, np.int64), unbound, None)
        cache, key = (self._block_cache, p.key_block) if p.key_block else (self._plan_cache, p.keys)
        if len(cache) >= (16 if p.key_block else _CACHE_MAX):
            cache.clear()
            self._block_nk.clear()
        cache[key] = res
        if p.key_block:
            self._block_nk[p.key_block] = len(p.keys)
        return res
