"""The Python client (asyncio): keeps a local copy of the state it subscribed to.

::

    async with Client("ws://127.0.0.1:8765/", token=secret) as c:
        await c.subscribe(prefixes=["/Testbed/Pump"], encoding="binary")
        print(c.get("/Testbed/Pump", "flowRate"), c.unit("/Testbed/Pump", "flowRate"))
        await c.set("/Testbed/Valve1", "opening", 0.4)
        await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.4)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

import numpy as np

from ..state._replica import Replica
from . import _binary
from ._compact import CompactIndex, CompactTables, LazyHello
from .infra.auth import redacting_logger
from ._freshness_view import FreshnessView

SUBPROTOCOL = "twinstage.v1"  # as in ``_messages`` (a test checks): the client does not import pydantic's models

try:  # ~2x faster than the standard library on big messages (a JSON snapshot, the hello)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson comes with the bridge extra
    _loads = json.loads


class BridgeError(Exception):
    """The server answered a request with an error (``code`` as in the protocol)."""

    def __init__(self, code: str, message: str, of: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.of = of


class Client:
    """A bridge client. ``send_token``: "header" (Authorization: Bearer), "query"
    (``?token=``) or "message" (an ``auth`` first message, as browsers do). ``hello``: "auto"
    (the default) takes what the server sends without ``?hello=`` (rows, or compact when rows would
    exceed its ``maxStateBytes``), "rows" insists on rows, "compact" asks for the compact hello (``?hello=compact``, ~20x smaller for big scenes): the
    client keeps its columns and expands ``c.hello["attributes"]``/``["prims"]`` and
    ``c.attributes`` into the rows layout only when they are first read, so they look the same
    either way while ``get``/``unit``/``quality`` never need the expansion."""

    def __init__(self, url: str, *, token: str | None = None, send_token: str = "header", origin: str | None = None,
                 max_size: int | None = 256 * 1024 * 1024, open_timeout: float = 10.0, hello: str = "auto"):
        if send_token not in ("header", "query", "message"):
            raise ValueError("send_token must be 'header', 'query' or 'message'")
        self.url = url
        self.token = token
        self.send_token = send_token
        self.origin = origin
        self.max_size = max_size
        self.open_timeout = open_timeout
        if hello not in ("auto", "rows", "compact"):
            raise ValueError("hello must be 'auto', 'rows' or 'compact'")
        self.hello_layout = hello
        self.ws: Any = None
        self.hello: dict[str, Any] = {}
        #: (prim, attribute) -> entry index (a dict, or a view of the compact hello's columns)
        self.index: Mapping[tuple[str, str], int] = {}
        self._tables: CompactTables | None = None
        self._waiters = 0  # coroutines in wait_until: without any, a state message notifies nobody
        #: the client's copy of the subscribed state (:class:`twinstage.state.Replica`, laid out by the hello)
        self.replica = Replica({})
        self._order: tuple[np.ndarray, np.ndarray] = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        self.seq = 0
        self.tick = 0
        self.sim_time = 0.0
        self.wall_time = 0.0
        self.snapshots = 0
        self.deltas = 0
        self.gaps = 0  #: deltas whose seq jumped (merged or filtered frames)
        self.merged = 0  #: frames merged into deltas beyond the first
        self.alarms: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.structure: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []  #: errors that answer no request
        self.forecasts: dict[str, list[dict[str, Any]]] = {}  #: ``forecast`` messages by whatif request id
        self.fresh = FreshnessView()  #: the last ``freshness`` messages (see :meth:`freshness`, :meth:`reason`)
        self.received_at = 0.0
        self.on_state: list[Callable[[str, "Client"], None]] = []
        self._ids = itertools.count(1)
        self._replies: dict[str, asyncio.Future] = {}
        self._hello_fut: asyncio.Future | None = None
        self._state_cond: asyncio.Condition | None = None
        self._reader: asyncio.Task | None = None
        self._sub: dict[str, Any] | None = None
        self.closed_code: int | None = None

    # -- connection -----------------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        url = self.url
        if self.hello_layout != "auto":  # compact: the attribute table once per channel, ~20x smaller for big scenes
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(query=urlencode(parse_qsl(parts.query) + [("hello", self.hello_layout)])))
        headers = {}
        if self.token and self.send_token == "header":
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.token and self.send_token == "query":
            parts = urlsplit(url)
            q = parse_qsl(parts.query) + [("token", self.token)]
            url = urlunsplit(parts._replace(query=urlencode(q)))
        self.ws = await connect(url, additional_headers=headers or None, origin=self.origin, subprotocols=[SUBPROTOCOL], compression=None,
                                max_size=self.max_size, open_timeout=self.open_timeout, proxy=None, user_agent_header="twinstage-client",
                                logger=redacting_logger("twinstage.bridge.client"))
        loop = asyncio.get_running_loop()
        self._hello_fut = loop.create_future()
        self._state_cond = asyncio.Condition()
        self.closed_code = None
        self._reader = loop.create_task(self._read())
        if self.token and self.send_token == "message":
            await self.ws.send(json.dumps({"type": "auth", "token": self.token}))
        return await asyncio.wait_for(asyncio.shield(self._hello_fut), self.open_timeout)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                self._reader.cancel()

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def reconnect(self) -> dict[str, Any]:
        """Reconnect and resume where this client left off (a delta if the server still has
        the frames in its ring, else a snapshot). Returns the resume ack."""
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:
                pass
        session, last = self.hello.get("session", ""), self.seq
        await self.connect()
        sub = dict(self._sub or {"prefixes": [], "attributes": [], "encoding": "json", "maxRate": 0.0})
        return await self._state_request({"type": "resume", **sub, "session": session, "lastSeq": int(last)})

    # -- requests --------------------------------------------------------------------------
    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a message with a fresh id; return its ack or raise :class:`BridgeError`."""
        mid = msg.get("id") or f"py-{next(self._ids)}"
        msg = {**msg, "id": mid}
        fut = asyncio.get_running_loop().create_future()
        self._replies[mid] = fut
        try:
            await self.ws.send(json.dumps(msg))
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(mid, None)
        if reply["type"] == "error":
            raise BridgeError(reply["code"], reply["message"], reply.get("of", ""))
        return reply

    async def _state_request(self, msg: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        assert self._state_cond is not None
        before = self.snapshots + self.deltas
        ack = await self.request(msg, timeout)
        if ack.get("detail") == "current":  # a resume with nothing new: no state message follows
            return ack
        await self.wait_until(lambda c: c.snapshots + c.deltas > before and c.seq >= ack["seq"], timeout)
        return ack

    async def subscribe(self, prefixes: Sequence[str] = (), attributes: Sequence[str] = (), *, encoding: str = "binary", max_rate: float = 0.0,
                        timeout: float = 30.0) -> dict[str, Any]:
        """Subscribe; returns the ack once the snapshot has been applied."""
        self._sub = {"prefixes": list(prefixes), "attributes": list(attributes), "encoding": encoding, "maxRate": float(max_rate)}
        return await self._state_request({"type": "subscribe", **self._sub}, timeout)

    async def set(self, prim: str, attribute: str, value: Any, unit: str = "", *, timeout: float = 10.0) -> dict[str, Any]:
        if isinstance(value, tuple):
            value = list(value)
        return await self.request({"type": "set", "prim": prim, "attribute": attribute, "value": value, "unit": unit}, timeout)

    async def command(self, command: str, *, steps: int = 0, scenario: str = "", timeout: float = 10.0) -> dict[str, Any]:
        return await self.request({"type": "command", "command": command, "steps": steps, "scenario": scenario}, timeout)

    async def whatif(self, events: Sequence[dict[str, Any]], horizon: float, *, grid: dict[str, Sequence[float]] | None = None,
                     attributes: Sequence[str] = (), timeout: float = 60.0) -> dict[str, Any]:
        """What-if from now (operator): ``{"ack": ack, "forecasts": {"Prim.attr": forecast message}}`` (bands per predicted tick)."""
        mid = f"w{next(self._ids)}"
        ack = await self.request({"type": "whatif", "id": mid, "events": list(events), "horizon": horizon, "attributes": list(attributes),
                                  "grid": [{"key": k, "values": list(v)} for k, v in (grid or {}).items()]}, timeout)
        got = self.forecasts.pop(mid, [])
        return {"ack": ack, "forecasts": {f"{f['prim']}.{f['attribute']}": f for f in got}}

    async def ping(self) -> float:
        t = time.perf_counter()
        await self.command("ping")
        return time.perf_counter() - t

    async def pause(self) -> dict[str, Any]:
        return await self.command("pause")

    async def play(self) -> dict[str, Any]:
        return await self.command("resume")

    async def step(self, n: int = 1) -> dict[str, Any]:
        return await self.command("step", steps=n)

    # -- state -----------------------------------------------------------------------------
    def get(self, prim: str, attribute: str) -> Any:
        name, row = self.replica.locate(self.index[(prim, attribute)])
        if not self.replica.known[name][row]:
            raise KeyError(f"{prim}.{attribute} is not in this client's subscription")
        v = self.replica.value(name, row)
        return tuple(v) if isinstance(v, list) else v

    def quality(self, prim: str, attribute: str) -> int:
        name, row = self.replica.locate(self.index[(prim, attribute)])
        return int(self.replica.quality[name][row])

    def freshness(self, prim: str | None = None, attribute: str | None = None) -> Any:
        """Seconds since the last good sample of a fed entry (inf: none yet; NaN: not fed or not
        subscribed), or with no arguments a dict (prim, attribute) -> age of every fed entry sent."""
        if prim is None:
            return {self._key(i): a for i, a in self.fresh.ages.items()}
        return self.fresh.ages.get(self.index[(prim, attribute or "")], float("nan"))

    def reason(self, prim: str, attribute: str) -> str:
        """Why a fed entry is flagged, as the server said ('good' when it is not flagged)."""
        return self.fresh.reasons.get(self.index[(prim, attribute)], "good")

    def unit(self, prim: str, attribute: str) -> str:
        i = self.index[(prim, attribute)]
        return self._tables.unit_of(i) if self._tables is not None else self.attributes[i]["unit"]

    @property
    def attributes(self) -> list[dict[str, Any]]:
        """The hello's attribute table (rows layout; a compact hello's is expanded on first access)."""
        return self.hello["attributes"] if self.hello else []

    def _key(self, index: int) -> tuple[str, str]:
        if self._tables is not None:
            return self._tables.key_of(index)
        a = self.attributes[index]
        return a["prim"], a["attribute"]

    def values(self) -> dict[tuple[str, str], Any]:
        """Every known (prim, attribute) → value, in entry order."""
        r = self.replica
        known = []
        for name, (off, _, _) in r.layout.items():
            known += [(off + int(row), name, int(row)) for row in np.flatnonzero(r.known[name])]
        known.sort()
        out = {}
        for i, name, row in known:
            v = r.value(name, row)
            out[self._key(i)] = tuple(v) if isinstance(v, list) else v
        return out

    async def wait_until(self, predicate: Callable[["Client"], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(client)`` holds after some update (raises TimeoutError)."""
        assert self._state_cond is not None
        self._waiters += 1
        try:
            async with self._state_cond:
                await asyncio.wait_for(self._state_cond.wait_for(lambda: predicate(self) or self.closed_code is not None), timeout)
        finally:
            self._waiters -= 1
        if not predicate(self):
            raise ConnectionError(f"connection closed ({self.closed_code}) before the condition held")

    # -- reader ----------------------------------------------------------------------------
    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        try:
            async for raw in ws:
                self.received_at = time.time()
                if isinstance(raw, bytes):
                    self._apply_binary(_binary.decode(raw))
                    await self._notify("binary")
                else:
                    await self._dispatch(_loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.closed_code = ws.close_code if ws.close_code is not None else 1006
            exc = ConnectionError(f"connection closed ({self.closed_code} {ws.close_reason or ''})".strip())
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(exc)
            if self._hello_fut is not None and not self._hello_fut.done():
                self._hello_fut.set_exception(exc)
            await self._notify("closed")

    async def _notify(self, kind: str) -> None:
        for fn in self.on_state:
            fn(kind, self)
        if self._waiters:  # 60 messages/s per client: skip the condition's lock when nobody waits
            assert self._state_cond is not None
            async with self._state_cond:
                self._state_cond.notify_all()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        if t in ("snapshot", "delta"):
            self._apply_json(msg)
        elif t == "values":
            self._apply_values(msg)
        elif t in ("ack", "error"):
            fut = self._replies.get(msg.get("id") or "")
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif t == "error":
                self.errors.append(msg)
        elif t == "hello":
            self._on_hello(msg)
        elif t == "alarm":
            self.alarms.append(msg)
        elif t == "event":
            self.events.append(msg)
        elif t == "structure":
            self.structure.append(msg)
        elif t == "freshness":
            self.fresh.apply(msg)
        elif t == "forecast":
            self.forecasts.setdefault(msg.get("id") or "", []).append(msg)
        await self._notify(t or "")

    def _on_hello(self, msg: dict[str, Any]) -> None:
        if msg.get("layout") == "compact":  # kept as columns; c.hello expands attributes/prims on first access
            tables = CompactTables(msg)
            hello: dict[str, Any] = LazyHello(msg, tables)
            index: Mapping[tuple[str, str], int] = CompactIndex(tables)
            n, layout = tables.n_entries, tables.layout()
        else:
            tables, hello = None, msg
            index = {(a["prim"], a["attribute"]): a["index"] for a in msg["attributes"]}
            n, layout = len(msg["attributes"]), None
        same = self.hello.get("session") == msg.get("session") and self.replica.n_entries == n
        self.hello, self.index, self._tables = hello, index, tables
        if not same:
            track = self.replica.track_dirty
            self.replica = Replica(layout, track_dirty=track) if layout is not None else Replica.from_attributes(msg["attributes"], track_dirty=track)
            self.seq = 0
        if self._hello_fut is not None and not self._hello_fut.done():
            self._hello_fut.set_result(msg)

    def _apply(self, kind: str, seq: int, tick: int, sim_time: float, wall_time: float, merged: int, idx: Any, vals: Any, q: Any, vidx: Any,
               vvals: Any, vq: Any, first: bool = True, last: bool = True) -> None:
        """One state message, or one part of one (``first``/``last``): its entries now; the counters and
        ``seq`` once the last part is in (a reconnect before that resumes from the previous message)."""
        args = (seq, tick, sim_time, wall_time, idx, vals, q, vidx, vvals, vq)
        if kind == "snapshot":
            order = (np.asarray(idx, dtype=np.int64), np.asarray(vidx, dtype=np.int64))  # the order of compact "values": all parts'
            self._order = order if first else (np.concatenate([self._order[0], order[0]]), np.concatenate([self._order[1], order[1]]))
            self.replica.apply_snapshot(*args, first=first, last=last)
            self.snapshots += last
        else:
            if first:
                if self.seq and seq != self.seq + 1:
                    self.gaps += 1
                self.merged += max(0, merged - 1)
            self.replica.apply_delta(*args, first=first, last=last)
            self.deltas += last
        if last:
            self.seq, self.tick, self.sim_time, self.wall_time = seq, tick, sim_time, wall_time

    def _apply_json(self, m: dict[str, Any]) -> None:
        part, parts = m.get("part", 0), m.get("parts", 1)
        self._apply(m["type"], m["seq"], m["tick"], m["simTime"], m["wallTime"], m.get("merged", 1), m["indices"], m["values"], m["quality"],
                    m["vec3Indices"], m["vec3Values"], m["vec3Quality"], part == 0, part >= parts - 1)

    def _apply_values(self, m: dict[str, Any]) -> None:
        """A compact ``values`` message: every subscribed value in the last snapshot's order, or the listed ones."""
        idx, vidx = self._order
        if m["indices"] or not m["values"]:
            idx = np.asarray(m["indices"], dtype=np.int64)
        if m["vec3Indices"] or not m["vec3Values"]:
            vidx = np.asarray(m["vec3Indices"], dtype=np.int64)
        q = np.zeros(self.replica.n_entries, dtype=np.uint8)
        q[np.asarray(m["flagged"], dtype=np.int64)] = m["flaggedQuality"]
        part, parts = m.get("part", 0), m.get("parts", 1)
        self._apply("delta", m["seq"], m["tick"], m["simTime"], m["wallTime"], m["merged"], idx, m["values"], q[idx], vidx, m["vec3Values"], q[vidx],
                    part == 0, part >= parts - 1)

    def _apply_binary(self, f: _binary.BinaryFrame) -> None:
        self._apply(f.kind, f.seq, f.tick, f.sim_time, f.wall_time, f.merged, f.indices, f.values, f.quality, f.vec3_indices, f.vec3_values,
                    f.vec3_quality, f.first, f.last)
