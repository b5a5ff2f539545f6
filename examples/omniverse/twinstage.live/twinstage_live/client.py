"""A small asyncio client for the twinstage bridge (no twinstage install needed: websockets + numpy).

``run_client(url, on_hello, on_state)`` connects, subscribes, calls ``on_hello(hello)`` and
``on_state(update)`` for every snapshot/delta, and on a dropped connection reconnects with
``resume`` (the server replays what was missed as one delta, or sends a snapshot).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

log = logging.getLogger("twinstage_live")
_HEADER = struct.Struct("<4sBBHIIQQdd")


@dataclass
class Update:
    """One snapshot or delta, or one part of a big one (``first``/``last``: a snapshot's first part clears
    what was known; the message is complete after its last): flat entry indices with their values
    (vec3 values are (m, 3))."""

    kind: str
    seq: int
    tick: int
    sim_time: float
    indices: np.ndarray
    values: np.ndarray
    vec3_indices: np.ndarray
    vec3_values: np.ndarray
    first: bool = True
    last: bool = True


def decode_binary(data: bytes) -> Update:
    magic, kind_byte, _, _, n, m, seq, tick, sim_time, _ = _HEADER.unpack_from(data, 0)
    kind = kind_byte & 0x3F  # + 0x40: a later part of a message in parts; + 0x80: more parts follow
    if magic != b"TWB1" or len(data) != 48 + 13 * n + 29 * m:
        raise ValueError("not a twinstage binary frame")
    o = 48
    values = np.frombuffer(data, "<f8", n, o)
    o += 8 * n
    vec3 = np.frombuffer(data, "<f8", 3 * m, o).reshape(m, 3)
    o += 24 * m
    idx = np.frombuffer(data, "<u4", n, o)
    vidx = np.frombuffer(data, "<u4", m, o + 4 * n)
    return Update("delta" if kind == 1 else "snapshot", seq, tick, sim_time, idx, values, vidx, vec3, not kind_byte & 0x40, not kind_byte & 0x80)


def decode_json(msg: dict[str, Any]) -> Update:
    return Update(msg["type"], msg["seq"], msg["tick"], msg["simTime"], np.asarray(msg["indices"], dtype=np.int64), np.asarray(msg["values"], dtype=float),
                  np.asarray(msg["vec3Indices"], dtype=np.int64), np.asarray(msg["vec3Values"], dtype=float).reshape(-1, 3),
                  msg.get("part", 0) == 0, msg.get("part", 0) >= msg.get("parts", 1) - 1)


class LiveClient:
    """Connect, subscribe, dispatch; ``run()`` keeps reconnecting (with resume) until ``stop()``."""

    def __init__(self, url: str, *, token: str = "", encoding: str = "binary", max_rate: float = 0.0, prefixes: list[str] | None = None,
                 on_hello: Callable[[dict], Any] | None = None, on_state: Callable[[Update], Any] | None = None,
                 on_message: Callable[[dict], Any] | None = None, retry_s: float = 1.0):
        self.url = url
        self.token = token
        self.encoding = encoding
        self.max_rate = max_rate
        self.prefixes = prefixes or []
        self.on_hello = on_hello
        self.on_state = on_state
        self.on_message = on_message
        self.retry_s = retry_s
        self.session = ""
        self.seq = 0
        self.connected = asyncio.Event()
        self.connections = 0
        self._stop = False
        self._ws: Any = None

    async def _maybe_await(self, r: Any) -> None:
        if inspect.isawaitable(r):
            await r

    async def run_once(self) -> None:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        url = self.url  # this client reads the rows hello; without ?hello= a big scene's server sends compact
        if "hello=" not in urlsplit(url).query:
            url += ("&" if urlsplit(url).query else "?") + "hello=rows"
        async with connect(url, additional_headers=headers, subprotocols=["twinstage.v1"], compression=None, max_size=None, proxy=None) as ws:
            self._ws = ws
            self.connections += 1
            sub = {"prefixes": self.prefixes, "attributes": [], "encoding": self.encoding, "maxRate": self.max_rate}
            async for raw in ws:
                if isinstance(raw, bytes):
                    up = decode_binary(raw)
                else:
                    msg = json.loads(raw)
                    t = msg.get("type")
                    if t == "hello":
                        resume = bool(self.session) and msg["session"] == self.session and self.seq > 0
                        if self.on_hello is not None:
                            await self._maybe_await(self.on_hello(msg))
                        if resume:
                            await ws.send(json.dumps({"type": "resume", "id": "resume", **sub, "session": self.session, "lastSeq": self.seq}))
                        else:
                            await ws.send(json.dumps({"type": "subscribe", "id": "subscribe", **sub}))
                        self.session = msg["session"]
                        continue
                    if t not in ("snapshot", "delta"):
                        if t == "error":
                            log.warning("twinstage bridge: %s: %s", msg.get("code"), msg.get("message"))
                        if self.on_message is not None:
                            await self._maybe_await(self.on_message(msg))
                        continue
                    up = decode_json(msg)
                if up.last:  # a resume names complete messages only
                    self.seq = up.seq
                self.connected.set()
                if self.on_state is not None:
                    await self._maybe_await(self.on_state(up))

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        while not self._stop:
            try:
                await self.run_once()
            except (ConnectionClosed, InvalidHandshake, OSError) as exc:
                log.warning("twinstage bridge %s: %s; retrying in %.1f s", self.url, exc, self.retry_s)
            self.connected.clear()
            if not self._stop:
                await asyncio.sleep(self.retry_s)

    async def stop(self) -> None:
        self._stop = True
        if self._ws is not None:
            await self._ws.close()

    async def send(self, msg: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(msg))
