"""The bridge server: a Twin sink that fans Frames out to websocket clients and turns
authorised client requests into ``twin.set`` / pause / resume / step.

Threads: the Twin ticks in its own thread (or the caller's); the server runs an
asyncio loop in a background thread. :meth:`Server.consume` (tick thread) only
appends the Frame to a queue and wakes the loop (``call_soon_threadsafe``); it
never blocks the tick. Client commands that touch the twin run in one command
thread, each with a timeout, so a twin that does not answer yields a ``timeout``
error instead of a hung connection.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import math
import mimetypes
import socket
import struct
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

import numpy as np
from pydantic import ValidationError
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from .. import __version__
from ._auth import RANK, Auth, Token, TokenBucket, load_tokens, origin_allowed, redacting_logger
from ._messages import CLIENT_TYPES, FOXGLOVE_SUBPROTOCOL, PROTOCOL, SUBPROTOCOL, VERSION
from ._scene import SceneInfo, plain_prims
from ._session import Closed, Session, now
from ._state import Mirror, Ring, Selection, dumps, encode_state, gather, merged_rows

log = logging.getLogger("twinstage.bridge")
_OOR, _BAD = 2, 16
#: a scenario: (seconds after start, prim, attribute, value)
ScenarioStep = tuple[float, str, str, Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text} is out of range (not finite)")
    return v


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity literals, no numbers that overflow to inf."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _error(code: str, message: str, id: str = "", of: str = "") -> str:
    return dumps({"type": "error", "id": id, "of": of, "code": code, "message": message})


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if not isinstance(x, int) or True)
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


class Server:
    """Websocket bridge; add it to a twin as a sink: ``twin.add_sink(Server(port=8765))``.

    ``tokens``: :class:`Token` objects or ``"NAME:ROLE:SECRET"`` strings (roles
    viewer, operator, admin). ``anonymous``: role of a connection without a token
    (default: viewer when no tokens are given, else refused). ``origins``: browser
    Origins allowed besides the server's own (``"*"`` for any). ``http_dir``:
    also serve the static files of that folder (the browser client) over HTTP.
    ``scenarios``: ``{name: [(seconds, prim, attribute, value), ...]}`` that the
    ``scenario`` command runs, timed from the sim time it starts.

    Backpressure: ``send_deadline`` (s) bounds every send — a client that does not
    read is aborted; ``max_behind`` frames pending for one client turn into a
    snapshot; ``send_buffer`` (bytes) caps the kernel send buffer per client so that
    a slow reader gets merged, fresh deltas instead of megabytes of stale ones.
    """

    writes_stage = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        tokens: Iterable[Token | str] = (),
        tokens_file: str | None = None,
        anonymous: str | None = "default",
        origins: Sequence[str] = (),
        max_message_bytes: int = 64 * 1024,
        commands_per_second: float = 20.0,
        command_burst: int = 40,
        command_timeout: float = 5.0,
        send_deadline: float = 2.0,
        auth_timeout: float = 5.0,
        ring_frames: int = 600,
        max_behind: int = 120,
        max_control_queue: int = 2000,
        scenarios: dict[str, list[ScenarioStep]] | None = None,
        http_dir: str | Path | None = None,
        foxglove_rate: float = 10.0,
        ping_interval: float | None = 20.0,
        write_limit: int = 64 * 1024,
        send_buffer: int | None = None,
    ):
        toks = list(tokens)
        if tokens_file:
            toks += load_tokens(tokens_file)
        self.auth = Auth(toks, anonymous)
        self.host = host
        self._port = port
        self.origins = list(origins)
        self.max_message_bytes = int(max_message_bytes)
        self.commands_per_second = float(commands_per_second)
        self.command_burst = int(command_burst)
        self.command_timeout = float(command_timeout)
        self.send_deadline = float(send_deadline)
        self.auth_timeout = float(auth_timeout)
        self.max_behind = int(max_behind)
        self.max_control_queue = int(max_control_queue)
        self.ring = Ring(ring_frames)
        self.scenarios = dict(scenarios or {})
        self.http_dir = Path(http_dir).resolve() if http_dir else None
        self.foxglove_rate = float(foxglove_rate)
        self.ping_interval = ping_interval
        self.write_limit = int(write_limit)
        self.send_buffer = send_buffer
        self.session = ""
        self.twin: Any = None
        self.mirror: Mirror | None = None
        self.sessions: set[Session] = set()
        self.seq = 0
        self._stats = collections.Counter()
        self._client_ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ws_server: Any = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._inbox: collections.deque = collections.deque()
        self._inbox_scheduled = False
        self._inbox_lock = threading.Lock()
        self._closed = False
        self._selections: dict[Any, Selection] = {}
        self._merged_cache: dict[Any, str | bytes] = {}
        self._tick_waiters: list[tuple[int, asyncio.Future]] = []
        self._running_scenarios: list[dict[str, Any]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._notice = None
        self._known_prims: set[str] = set()
        self._runtime_prims: set[str] = set()  # prims added while running (their moves are re-sent)
        self._added: dict[str, dict] = {}
        self._removed: list[str] = []
        self._hello_static = ""
        self._last_error: Any = None
        self.wslog = redacting_logger("twinstage.bridge.ws")

    # -- Sink protocol -------------------------------------------------------------------------
    def start(self, twin: Any) -> None:
        """Bind the socket and start the loop thread (called by ``twin.add_sink``).

        Add the server before the twin runs, or from its tick thread: the server's copy
        of the state starts from the table as it is now.
        """
        if self.twin is not None:
            raise RuntimeError("a bridge Server serves one twin")
        for name, steps in self.scenarios.items():
            for t, prim, attr, value in steps:
                twin.table.validate(prim, attr, value)  # a bad scenario fails here, naming the step
        self.twin = twin
        self.session = uuid.uuid4().hex
        self.mirror = Mirror(twin.table)
        self.mirror.tick, self.mirror.sim_time = twin.clock.tick, twin.clock.sim_time
        stage = getattr(twin, "stage", None)
        self._prims = SceneInfo(stage).twin_prims(twin) if stage is not None else plain_prims(twin)
        self._attributes = self.mirror.attribute_table()
        self._up_axis, self._mpu = "Z", 1.0
        if stage is not None:
            from pxr import Tf, Usd, UsdGeom

            self._up_axis = str(UsdGeom.GetStageUpAxis(stage))
            self._mpu = float(UsdGeom.GetStageMetersPerUnit(stage))
            self._known_prims = {str(p.GetPath()) for p in stage.Traverse()}
            self._notice = Tf.Notice.Register(Usd.Notice.ObjectsChanged, self._on_stage_changed, stage)
        self._last_error = twin.errors[-1] if getattr(twin, "errors", None) else None
        self._build_hello_static()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twinstage-bridge-cmd")
        self._thread = threading.Thread(target=self._run_loop, name="twinstage-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._start_error is not None:
            self._thread.join(5)
            self.close()
            err = self._start_error or TimeoutError("no answer within 30 s")
            raise OSError(f"bridge server cannot listen on {self.host}:{self._port}: {err}") from err
        log.info("bridge serving %s (session %s)", self.url, self.session)

    def consume(self, frame: Any) -> None:
        """Hand the Frame to the loop thread; never blocks the tick."""
        if self._closed or self._loop is None:
            return
        with self._inbox_lock:
            self._inbox.append(frame)
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:  # loop closed meanwhile
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._notice is not None:
            self._notice.Revoke()
            self._notice = None
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(10)
            except Exception as exc:  # pragma: no cover - best effort
                log.warning("bridge shutdown: %r", exc)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- properties ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._port}/"

    def stats(self) -> dict[str, Any]:
        return {"session": self.session, "seq": self.seq, "clients": len(self.sessions), **self._stats}

    def _next_client_id(self) -> int:
        self._client_ids += 1
        return self._client_ids

    # -- loop thread -------------------------------------------------------------------------------
    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            self._loop = None
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=2))
            finally:
                loop.close()

    async def _startup(self) -> None:
        self._ws_server = await ws_serve(
            self._handler,
            self.host,
            self._port,
            compression=None,
            max_size=self.max_message_bytes,
            max_queue=16,
            write_limit=self.write_limit,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            close_timeout=self.send_deadline,
            open_timeout=10,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            logger=self.wslog,
            server_header=f"twinstage/{__version__}",
        )
        sock = next(iter(self._ws_server.sockets))
        self._port = sock.getsockname()[1]
        self._watchdog_task = asyncio.get_running_loop().create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """Abort connections whose current send has taken longer than ``send_deadline``."""
        period = max(0.02, min(0.25, self.send_deadline / 4))
        while True:
            await asyncio.sleep(period)
            t = now()
            for s in list(self.sessions):
                s.check_deadline(t)

    async def _shutdown(self) -> None:
        for s in list(self.sessions):
            s.abort()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
            try:
                await asyncio.wait_for(self._ws_server.wait_closed(), 3)
            except Exception:
                pass
        for _, fut in self._tick_waiters:
            if not fut.done():
                fut.cancel()

    # -- handshake -------------------------------------------------------------------------------
    def _select_subprotocol(self, connection: Any, offered: Sequence[str]) -> str | None:
        if FOXGLOVE_SUBPROTOCOL in offered:
            return FOXGLOVE_SUBPROTOCOL
        if SUBPROTOCOL in offered:
            return SUBPROTOCOL
        return None

    def _process_request(self, connection: Any, request: Any) -> Response | None:
        headers = request.headers
        if "websocket" not in headers.get("Upgrade", "").lower():
            if self.http_dir is not None:
                return self._static(request.path)
            return None
        origin = headers.get("Origin")
        if not origin_allowed(origin, self.origins, headers.get("Host")):
            self._stats["rejected_origin"] += 1
            return connection.respond(403, "Forbidden: Origin not allowed\n")
        secret = Auth.from_request(request.path, headers)
        if secret is not None:
            tok = self.auth.check(secret)
            if tok is None:
                self._stats["rejected_token"] += 1
                return connection.respond(401, "Unauthorized\n")
            connection.twinstage_auth = (tok.role, tok.name)
        elif self.auth.anonymous is not None:
            connection.twinstage_auth = (self.auth.anonymous, "")
        elif origin is not None:
            connection.twinstage_auth = None  # a browser: it authenticates with its first message
        else:
            self._stats["rejected_token"] += 1
            return connection.respond(401, "Unauthorized\n")
        return None

    _TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png"}

    def _static(self, path: str) -> Response:
        rel = urlsplit(path).path.lstrip("/") or "index.html"
        base = self.http_dir
        assert base is not None
        target = (base / rel).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain"), ("Content-Length", "10")]), b"not found\n")
        body = target.read_bytes()
        ctype = self._TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return Response(200, "OK", Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
                                            ("X-Content-Type-Options", "nosniff")]), body)

    async def _handler(self, ws: Any) -> None:
        if self.send_buffer:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(self.send_buffer))
        auth = getattr(ws, "twinstage_auth", None)
        role, user = auth if auth else (None, "")
        if ws.subprotocol == FOXGLOVE_SUBPROTOCOL:
            from ._foxglove import FoxgloveSession

            session: Session = FoxgloveSession(self, ws, role, user)
        else:
            session = TwinSession(self, ws, role, user)
        self.sessions.add(session)
        self._stats["connections"] += 1
        try:
            await session.run()
        except (ConnectionClosed, Closed):
            pass
        except Exception:
            log.exception("bridge client %d: handler failed", session.id)
        finally:
            self.sessions.discard(session)
            await session.finish()

    # -- frames ------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            frames = list(self._inbox)
            self._inbox.clear()
            self._inbox_scheduled = False
        for frame in frames:
            try:
                self._on_frame(frame)
            except Exception:
                log.exception("bridge: handling frame %s failed", getattr(frame, "tick", "?"))

    def _on_frame(self, frame: Any) -> None:
        mirror = self.mirror
        assert mirror is not None
        self.seq += 1
        seq = self.seq
        self._merged_cache.clear()
        alarms = self._alarms(seq, frame)
        mirror.apply(seq, frame)
        entry = self.ring.append(seq, frame)
        for s in list(self.sessions):
            s.on_frame(entry)
        for name, row, text in alarms:
            for s in list(self.sessions):
                s.on_alarm(name, row, text)
        if self._tick_waiters:
            keep = []
            for target, fut in self._tick_waiters:
                if fut.done():
                    continue
                if frame.tick >= target:
                    fut.set_result(frame.tick)
                else:
                    keep.append((target, fut))
            self._tick_waiters = keep
        if self._running_scenarios:
            self._advance_scenarios(frame)
        self._twin_errors(frame)

    def _alarms(self, seq: int, frame: Any) -> list[tuple[str, int, str]]:
        """Alarm messages for OUT_OF_RANGE / BAD transitions (at most 50 per frame, then one event)."""
        mirror = self.mirror
        assert mirror is not None
        out: list[tuple[str, int, str]] = []
        extra = 0
        for name, change in frame.changes.items():
            prev = mirror.quality[name][change.rows]
            new = change.quality
            flip = (prev ^ new) & (_OOR | _BAD)
            if not flip.any():
                continue
            ch = mirror.channels[name]
            for k in np.flatnonzero(flip).tolist():
                for bit, severity in ((_BAD, "critical"), (_OOR, "warning")):
                    if not flip[k] & bit:
                        continue
                    if len(out) >= 50:
                        extra += 1
                        continue
                    row = int(change.rows[k])
                    active = bool(new[k] & bit)
                    v = change.values[k]
                    value = float(v[0]) if np.ndim(v) else float(v)
                    prim = mirror.table.prims[int(ch.prim_index[row])]
                    if bit == _OOR:
                        text = (f"{prim}.{name} = {value:g} {ch.unit} is outside [{ch.lo[row]:g}, {ch.hi[row]:g}]" if active
                                else f"{prim}.{name} is back within its limits")
                    else:
                        text = f"{prim}.{name}: a non-finite value was rejected" if active else f"{prim}.{name}: good again"
                    out.append((name, row, dumps({"type": "alarm", "seq": seq, "tick": frame.tick, "simTime": frame.sim_time, "index": ch.offset + row,
                                                   "prim": prim, "attribute": name, "severity": severity, "active": active,
                                                   "value": value if math.isfinite(value) else 0.0, "message": text})))
        if extra:
            self.broadcast_event("alarms", f"{extra} more alarm transitions in tick {frame.tick} not sent individually", tick=frame.tick)
        return out

    def _twin_errors(self, frame: Any) -> None:
        errors = getattr(self.twin, "errors", None)
        if not errors or errors[-1] is self._last_error:
            return
        new = []
        for e in reversed(errors):
            if e is self._last_error:
                break
            new.append(e)
        self._last_error = errors[-1]
        for e in reversed(new[-20:]):
            self.broadcast_event("error", str(e), tick=frame.tick)

    def broadcast_event(self, kind: str, message: str, *, user: str = "", tick: int | None = None) -> None:
        mirror = self.mirror
        assert mirror is not None
        text = dumps({"type": "event", "tick": mirror.tick if tick is None else tick, "simTime": mirror.sim_time, "kind": kind, "message": message,
                      "user": user})
        for s in list(self.sessions):
            s.on_event(text)

    def selection(self, prefixes: Sequence[str], attributes: Sequence[str]) -> Selection:
        key = (tuple(sorted(set(prefixes))), tuple(sorted(set(attributes))))
        sel = self._selections.get(key)
        if sel is None:
            assert self.mirror is not None
            if len(self._selections) > 256:
                self._selections.clear()
            sel = self._selections[key] = Selection(self.mirror, prefixes, attributes)
        return sel

    # -- hello -------------------------------------------------------------------------------
    def _build_hello_static(self) -> None:
        src = getattr(self.twin, "source", "") or ""
        static = {
            "protocol": PROTOCOL, "version": VERSION, "session": self.session, "server": f"twinstage {__version__}", "scene": Path(src).name,
            "tickRate": float(self.twin.clock.rate), "upAxis": self._up_axis, "metersPerUnit": self._mpu, "encodings": ["json", "binary"],
            "limits": {"maxMessageBytes": self.max_message_bytes, "commandsPerSecond": self.commands_per_second, "commandBurst": self.command_burst,
                       "commandTimeout": self.command_timeout, "sendDeadline": self.send_deadline, "maxRate": float(self.twin.clock.rate),
                       "ringFrames": self.ring.max_frames},
            "attributes": self._attributes, "prims": self._prims,
        }
        self._hello_static = dumps(static)[1:-1]

    def hello(self, role: str, user: str) -> str:
        mirror = self.mirror
        assert mirror is not None
        dyn = {"type": "hello", "role": role, "user": user, "tick": mirror.tick, "simTime": mirror.sim_time, "seq": mirror.seq,
               "paused": bool(self.twin.clock.paused), "added": list(self._added.values()), "removed": list(self._removed)}
        return "{" + dumps(dyn)[1:-1] + "," + self._hello_static + "}"

    # -- structure ----------------------------------------------------------------------------
    def _on_stage_changed(self, notice: Any, stage: Any) -> None:
        """USD change notice (in the editing thread): prims added/removed → structure messages.

        A prim added while running is re-sent (same path, new record) when its transform
        or size changes, so clients see it where it ends up.
        """
        if self._closed or self._loop is None:
            return
        try:
            from pxr import Sdf, Usd

            resynced = list(notice.GetResyncedPaths())
            paths = [p for p in resynced if p.IsPrimPath() and p != Sdf.Path.absoluteRootPath]
            touched = {str(p.GetPrimPath()) for p in resynced + list(notice.GetChangedInfoOnlyPaths())
                       if p.IsPropertyPath() and (p.name.startswith("xformOp") or p.name in ("extent", "size", "radius", "height"))}
            touched &= self._runtime_prims
            if not paths and not touched:
                return
            info = SceneInfo(stage)
            added: dict[str, dict] = {}
            removed = []
            for p in paths:
                sp = str(p)
                prim = stage.GetPrimAtPath(p)
                alive = bool(prim) and prim.IsActive() and prim.IsDefined()
                if alive and sp not in self._known_prims:
                    if not any(sp.startswith(a + "/") for a in added):
                        added[sp] = info.prim(sp)
                        self._runtime_prims.add(sp)
                    for q in Usd.PrimRange(prim):
                        self._known_prims.add(str(q.GetPath()))
                elif not alive and sp in self._known_prims:
                    removed.append(sp)
                    pre = sp + "/"
                    self._known_prims = {k for k in self._known_prims if k != sp and not k.startswith(pre)}
                    self._runtime_prims = {k for k in self._runtime_prims if k != sp and not k.startswith(pre)}
            for sp in touched:
                if sp not in added and stage.GetPrimAtPath(sp):
                    added[sp] = info.prim(sp)
            if added or removed:
                self._loop.call_soon_threadsafe(self._on_structure, list(added.values()), removed)
        except Exception:
            log.exception("bridge: reading a stage change failed")

    def _on_structure(self, added: list[dict], removed: list[str]) -> None:
        for r in removed:
            if r in self._added or any(r.startswith(a + "/") for a in self._added):
                self._added = {k: v for k, v in self._added.items() if k != r and not k.startswith(r + "/")}
            else:
                self._removed.append(r)
        for a in added:
            self._added[a["path"]] = a
            if a["path"] in self._removed:
                self._removed.remove(a["path"])
        mirror = self.mirror
        assert mirror is not None
        text = dumps({"type": "structure", "seq": mirror.seq, "tick": mirror.tick, "added": added, "removed": removed})
        for s in list(self.sessions):
            s.on_structure(text, added, removed)

    # -- commands (loop thread; twin calls go to the command thread) ----------------------------
    async def call_twin(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        fut = loop.run_in_executor(self._executor, fn, *args)
        return await asyncio.wait_for(fut, self.command_timeout)

    async def wait_tick(self, target: int) -> int:
        mirror = self.mirror
        assert mirror is not None
        if mirror.tick >= target:
            return mirror.tick
        fut = asyncio.get_running_loop().create_future()
        self._tick_waiters.append((target, fut))
        return await asyncio.wait_for(fut, self.command_timeout)

    def start_scenario(self, name: str, user: str) -> int:
        steps = sorted(self.scenarios[name], key=lambda s: s[0])
        mirror = self.mirror
        assert mirror is not None
        self._running_scenarios.append({"name": name, "t0": mirror.sim_time, "steps": list(steps), "user": user})
        self.broadcast_event("scenario", f"scenario {name!r} started ({len(steps)} steps)", user=user)
        return len(steps)

    def _advance_scenarios(self, frame: Any) -> None:
        for sc in list(self._running_scenarios):
            while sc["steps"] and sc["t0"] + sc["steps"][0][0] <= frame.sim_time + 1e-9:
                _, prim, attr, value = sc["steps"].pop(0)
                try:
                    self.twin.set(prim, **{attr: value})
                except Exception as exc:
                    self.broadcast_event("error", f"scenario {sc['name']!r}: {exc}")
            if not sc["steps"]:
                self._running_scenarios.remove(sc)
                self.broadcast_event("scenario", f"scenario {sc['name']!r} finished", user=sc["user"], tick=frame.tick)


class TwinSession(Session):
    """A client speaking the twinstage protocol."""

    dialect = "twinstage"

    def __init__(self, server: Server, ws: Any, role: str | None, user: str):
        super().__init__(server, ws, role, user)
        self.selection: Selection | None = None
        self.pending: list[int] = []
        self.need_snapshot: str | None = None
        self.resume_pending = False
        self.min_interval = 0.0
        self.next_allowed = 0.0
        self.bucket = TokenBucket(server.commands_per_second, server.command_burst)
        self.violations = 0
        self.inflight: set[asyncio.Task] = set()
        self.hello_sent = False

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> None:
        server = self.server
        self.start_sender()
        if self.role is None:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), server.auth_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                self.close(4401, "unauthorized: no token")
                return
            if not self._authenticate(raw):
                return
        else:
            self.queue(server.hello(self.role, self.user))
            self.hello_sent = True
        async for raw in self.ws:
            if self.closed:
                break
            try:
                self._handle(raw)
            except Closed:
                break
            except Exception:
                log.exception("bridge client %d: handling a message failed", self.id)
                self.queue(_error("internal", "the server failed to handle this message; it has been logged"))

    def _authenticate(self, raw: Any) -> bool:
        """First-message (or later re-) authentication; a wrong token closes with 4401."""
        tok = None
        if isinstance(raw, str):
            try:
                obj = parse_json(raw)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("type") == "auth" and isinstance(obj.get("token"), str):
                tok = self.server.auth.check(obj["token"])
        if tok is None:
            self.server._stats["rejected_token"] += 1
            self.queue(_error("unauthorized", "missing or wrong token", of="auth"))
            self.close(4401, "unauthorized")
            return False
        self.role, self.user = tok.role, tok.name
        self.queue(self.server.hello(self.role, self.user))
        self.hello_sent = True
        return True

    # -- incoming ----------------------------------------------------------------------------
    def _handle(self, raw: Any) -> None:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            self.queue(_error("binary_not_accepted", "send JSON text messages; binary frames are server → client only"))
            return
        try:
            obj = parse_json(raw)
        except ValueError as exc:
            self.queue(_error("bad_json", f"not valid JSON: {exc}"))
            return
        if not isinstance(obj, dict):
            self.queue(_error("bad_message", f"a message is a JSON object with a 'type', got {type(obj).__name__}"))
            return
        mid = obj.get("id") if isinstance(obj.get("id"), str) else ""
        mtype = obj.get("type")
        model = CLIENT_TYPES.get(mtype) if isinstance(mtype, str) else None
        if model is None:
            self.queue(_error("unknown_type", f"unknown message type {mtype!r} (client messages: {', '.join(CLIENT_TYPES)})", mid, str(mtype)))
            return
        if mtype == "auth":
            self._authenticate(raw)
            return
        if not self.bucket.take():
            self.violations += 1
            self.server._stats["rate_limited"] += 1
            if self.violations > 10 * self.server.command_burst:
                self.close(1008, "rate limit exceeded")
                raise Closed()
            self.queue(_error("rate_limited", f"more than {self.server.commands_per_second:g} requests/s (burst {self.server.command_burst}); slow down",
                              mid, mtype))
            return
        try:
            msg = model.model_validate(obj)
        except ValidationError as exc:
            self.queue(_error("bad_message", f"{mtype}: {_validation_message(exc)}", mid, mtype))
            return
        if mtype == "subscribe":
            self._subscribe(msg)
        elif mtype == "resume":
            self._resume(msg)
        else:
            if len(self.inflight) >= 64:
                self.queue(_error("rate_limited", "more than 64 requests awaiting an answer", mid, mtype))
                return
            task = asyncio.get_running_loop().create_task(self._request(msg))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    def _set_selection(self, msg: Any) -> Selection | None:
        server = self.server
        sel = server.selection(msg.prefixes, msg.attributes)
        if sel.unknown_attributes:
            self.queue(_error("not_found", f"unknown attribute(s) {', '.join(sel.unknown_attributes)}", msg.id, msg.type))
            return None
        self.selection = sel
        self.encoding = msg.encoding
        rate = float(msg.max_rate)
        self.min_interval = 1.0 / rate if rate > 0 and rate < server.twin.clock.rate else 0.0
        self.next_allowed = 0.0
        self.pending.clear()
        return sel

    def _subscribe(self, msg: Any) -> None:
        sel = self._set_selection(msg)
        if sel is None:
            return
        self.need_snapshot = "subscribe"
        self.resume_pending = False
        m = self.server.mirror
        assert m is not None
        detail = "" if sel.count else "nothing matches these prefixes/attributes"
        self.queue(dumps({"type": "ack", "id": msg.id, "of": "subscribe", "tick": m.tick, "seq": m.seq, "count": sel.count, "paused": False,
                          "detail": detail, "clients": []}))
        self.wake.set()

    def _resume(self, msg: Any) -> None:
        sel = self._set_selection(msg)
        if sel is None:
            return
        server = self.server
        m = server.mirror
        assert m is not None
        entries = None
        if msg.session == server.session and 0 < msg.last_seq <= m.seq:
            entries = server.ring.since(msg.last_seq)
        if entries is None:
            self.need_snapshot = "resume"
            detail = "snapshot"
        else:
            self.need_snapshot = None
            self.pending = [e.seq for e in entries if self._touches(e)]
            self.resume_pending = True
            detail = "delta"
        self.queue(dumps({"type": "ack", "id": msg.id, "of": "resume", "tick": m.tick, "seq": m.seq, "count": sel.count, "paused": False,
                          "detail": detail, "clients": []}))
        self.wake.set()

    async def _request(self, msg: Any) -> None:
        """Run one set/command; reply exactly once (ack or error) with its id."""
        server = self.server
        of = msg.command if msg.type == "command" else msg.type
        try:
            reply = await self._execute(msg)
        except (asyncio.TimeoutError, TimeoutError):
            reply = _error("timeout", f"the twin did not answer within {server.command_timeout:g} s (is it running?); the request may still take effect",
                           msg.id, of)
        except asyncio.CancelledError:
            reply = _error("internal", "the server is shutting down", msg.id, of)
        except Exception as exc:
            log.exception("bridge client %d: %s failed", self.id, of)
            reply = _error("internal", f"{of} failed: {type(exc).__name__}", msg.id, of)
        self.queue(reply)

    def _ack(self, msg: Any, of: str, **extra: Any) -> str:
        m = self.server.mirror
        assert m is not None
        out = {"type": "ack", "id": msg.id, "of": of, "tick": m.tick, "seq": m.seq, "count": 0, "paused": bool(self.server.twin.clock.paused),
               "detail": "", "clients": []}
        out.update(extra)
        return dumps(out)

    async def _execute(self, msg: Any) -> str:
        from ..state import StateError
        from ..units import UnitError

        server = self.server
        twin = server.twin
        role = self.role or "viewer"
        if msg.type == "set":
            if RANK[role] < RANK["operator"]:
                return _error("forbidden", f"role {role!r} may not set values (operator or admin needed)", msg.id, "set")
            table = twin.table
            if msg.prim not in table.prim_index:
                return _error("not_found", f"{msg.prim}: not a twin prim of this twin", msg.id, "set")
            if msg.attribute not in table.channels or msg.attribute not in table.attributes(msg.prim):
                return _error("not_found", f"{msg.prim}: has no twin attribute {msg.attribute!r}", msg.id, "set")
            row = table.row(msg.prim, msg.attribute)
            attr_role = str(table.channels[msg.attribute].role[row])
            if attr_role not in ("input", "parameter") and RANK[role] < RANK["admin"]:
                return _error("forbidden", f"{msg.prim}.{msg.attribute} is a {attr_role!r} attribute: only admin may set it", msg.id, "set")
            value = tuple(msg.value) if isinstance(msg.value, list) else msg.value
            if msg.unit:
                value = (value, msg.unit)
            try:
                await server.call_twin(lambda: twin.set(msg.prim, **{msg.attribute: value}))
            except (StateError, UnitError) as exc:
                return _error("invalid_value", str(exc), msg.id, "set")
            return self._ack(msg, "set", detail="queued; it enters the next tick")
        name = msg.command
        if name not in ("ping", "pause", "resume", "step", "scenario", "clients"):
            return _error("unknown_type", f"unknown command {name!r} (ping, pause, resume, step, scenario, clients)", msg.id, name)
        need = {"ping": "viewer", "clients": "admin"}.get(name, "operator")
        if RANK[role] < RANK[need]:
            return _error("forbidden", f"role {role!r} may not {name} ({need} needed)", msg.id, name)
        if name == "ping":
            return self._ack(msg, "ping")
        if name == "clients":
            return self._ack(msg, "clients", count=len(server.sessions), clients=[s.info() for s in server.sessions])
        if name == "pause":
            await server.call_twin(twin.pause)
            server.broadcast_event("paused", f"paused by {self.user or 'anonymous'}", user=self.user)
            return self._ack(msg, "pause", paused=True)
        if name == "resume":
            await server.call_twin(twin.resume)
            server.broadcast_event("resumed", f"resumed by {self.user or 'anonymous'}", user=self.user)
            return self._ack(msg, "resume", paused=False)
        if name == "step":
            n = msg.steps or 1
            if not 1 <= n <= 100_000:
                return _error("invalid_value", f"steps must be 1..100000, got {n}", msg.id, name)

            def _step() -> int:
                start = twin.clock.tick
                if twin.clock.paused:  # a running twin just runs n more ticks; no step allowance left behind
                    twin.clock.step(n)
                return start

            start = await server.call_twin(_step)
            tick = await server.wait_tick(start + n)
            server.broadcast_event("stepped", f"stepped {n} tick(s) by {self.user or 'anonymous'}", user=self.user, tick=tick)
            return self._ack(msg, "step", count=n, tick=tick)
        # scenario
        if msg.scenario not in server.scenarios:
            known = ", ".join(sorted(server.scenarios)) or "none registered"
            return _error("not_found", f"no scenario named {msg.scenario!r} ({known})", msg.id, name)
        n = server.start_scenario(msg.scenario, self.user)
        return self._ack(msg, "scenario", count=n, detail=f"scenario {msg.scenario!r} started")

    # -- state mailbox -------------------------------------------------------------------------
    def _touches(self, entry: Any) -> bool:
        sel = self.selection
        if sel is None:
            return False
        hit = entry.touched.get(sel.key)
        if hit is None:
            hit = False
            for name, change in entry.frame.changes.items():
                if name in sel.masks:
                    mask = sel.masks[name]
                    if mask is None or mask[change.rows].any():
                        hit = True
                        break
            entry.touched[sel.key] = hit
        return hit

    def on_frame(self, entry: Any) -> None:
        if self.selection is None or self.closed or self.need_snapshot:
            return
        if self._touches(entry):
            self.pending.append(entry.seq)
            if len(self.pending) > self.server.max_behind:
                self.pending.clear()
                self.need_snapshot = "behind"
            self.wake.set()

    def on_event(self, text: str) -> None:
        if self.hello_sent:
            self.queue(text)

    def on_alarm(self, name: str, row: int, text: str) -> None:
        if self.selection is not None and self.selection.contains(name, row):
            self.queue(text)

    def on_structure(self, text: str, added: list[dict], removed: list[str]) -> None:
        if self.hello_sent:
            self.queue(text)

    def state_delay(self) -> float | None:
        if not (self.need_snapshot or self.pending or self.resume_pending):
            return None
        if self.min_interval:
            t = now()
            if t < self.next_allowed:
                return self.next_allowed - t
        return 0

    def next_state(self) -> str | bytes | None:
        server = self.server
        m = server.mirror
        sel = self.selection
        assert m is not None and sel is not None
        if self.min_interval:
            self.next_allowed = now() + self.min_interval
        enc = self.encoding
        if not self.need_snapshot:
            entries = [server.ring.get(s) for s in self.pending]
            if any(e is None for e in entries):
                self.need_snapshot = "behind"
        if self.need_snapshot:
            reason, self.need_snapshot = self.need_snapshot, None
            self.pending.clear()
            self.resume_pending = False
            self.snapshots += 1
            parts = gather(m, [(name, rows, None, None) for name, rows in sel.rows.items()])
            return encode_state("snapshot", enc, parts, m.seq, m.tick, m.sim_time, m.wall_time, reason=reason)
        pending, self.pending = self.pending, []
        resume, self.resume_pending = self.resume_pending, False
        if pending and (len(pending) == 1 or self._covers(entries[-1], entries[:-1])):
            # the newest frame touches every row the others did: its shared payload is the merge
            payload = self._shared_payload(entries[-1], sel, enc)
            if len(pending) > 1:
                self.merged += len(pending) - 1
                payload = _with_merged(payload, len(pending))
            return payload
        # a real merge (rows from several frames, values from the mirror), shared by clients in the same place
        key = (sel.key, enc, pending[0] if pending else 0, pending[-1] if pending else 0, m.seq)
        payload = server._merged_cache.get(key)
        if payload is None:
            parts = gather(m, merged_rows(sel, [e for e in entries if e is not None]))
            payload = encode_state("delta", enc, parts, m.seq, m.tick, m.sim_time, m.wall_time, merged=len(pending))
            server._merged_cache[key] = payload
        self.merged += max(0, len(pending) - 1)
        return payload

    def _shared_payload(self, e: Any, sel: Selection, enc: str) -> str | bytes:
        key = (sel.key, enc)
        payload = e.encoded.get(key)
        if payload is None:
            f = e.frame
            payload = encode_state("delta", enc, gather(self.server.mirror, sel.filter(f)), e.seq, f.tick, f.sim_time, f.wall_time, merged=1)
            e.encoded[key] = payload
        return payload

    def _covers(self, last: Any, earlier: list[Any]) -> bool:
        sel = self.selection
        assert sel is not None
        top = dict(sel.touched_rows(last.frame))
        for e in earlier:
            for name, rows in sel.touched_rows(e.frame):
                lr = top.get(name)
                if lr is None:
                    return False
                if len(lr) == len(sel.rows[name]):
                    continue  # the newest frame changed every subscribed row of this channel
                if not np.isin(rows, lr, assume_unique=True).all():
                    return False
        return True


def _with_merged(payload: str | bytes, merged: int) -> str | bytes:
    """A shared delta relabelled with how many frames it stands for."""
    if isinstance(payload, bytes):
        out = bytearray(payload)
        struct.pack_into("<H", out, 6, min(merged, 65535))
        return bytes(out)
    return payload.replace('"merged":1,', f'"merged":{merged},', 1)

def serve(twin: Any, host: str = "127.0.0.1", port: int = 8765, **kwargs: Any) -> Server:
    """Start a bridge for ``twin`` (``twin.add_sink(Server(...))``) and return it."""
    server = Server(host, port, **kwargs)
    twin.add_sink(server)
    return server
