"""The bridge server: a Twin sink that fans Frames out to websocket clients and turns
authorised client requests into twin changes (through :class:`TwinControl`).

Threads: the Twin ticks in its own thread (or the caller's); the server runs an asyncio
loop in a background thread. :meth:`Server.consume` (tick thread) only appends the
Frame to a queue and wakes the loop (``call_soon_threadsafe``); it never blocks the
tick. Client requests that touch the twin run in one command thread, each with a
timeout. The transport lives in ``infra/`` (listener, session, sender, auth), the
dialects in ``dialects/``, the wire format in ``_messages.py``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ._alarms import alarm_flags, derive_alarms
from ._control import TwinControl
from ._hello import HelloBuilder
from ._scene_glb import GLB_MAX_PRIMS
from ._jsonio import parse_json, wire  # noqa: F401  (parse_json: re-exported for older imports)
from ._messages import Event
from ._twin_errors import ErrorWatch
from ._scenario import ScenarioRunner, ScenarioStep  # noqa: F401
from ._server_calls import TwinCalls
from ._split import DEFAULT_MAX_STATE_BYTES, MIN_MAX_STATE_BYTES
from ._state import Mirror, Ring, Selection
from .infra.auth import Auth, Token, load_tokens, redacting_logger
from .infra.listener import Listener

log = logging.getLogger("twinstage.bridge")


class Server(TwinCalls):
    """Websocket bridge; add it to a twin as a sink: ``twin.add_sink(Server(port=8765))``.

    ``tokens``: :class:`Token` objects or ``"NAME:ROLE:SECRET"`` strings (roles viewer,
    operator, admin, ingest). ``anonymous``: role of a connection without a token (default:
    viewer when no tokens are given, else refused). ``origins``: browser Origins allowed
    besides the server's own (``"*"`` for any). ``http_dir``: also serve the static files
    of that folder over HTTP. ``scenarios``: ``{name: [(seconds, prim, attribute, value)]}``.
    ``ingest``: a :class:`~twinstage.telemetry.BridgeIngestSource` added to the twin
    (``twin.add_source``) that ``ingest`` messages feed (roles ingest and admin).

    Backpressure: ``send_deadline`` (s) bounds every send — a client that does not read is
    aborted; ``max_behind`` frames pending for one client turn into a snapshot;
    ``drain_bytes``: the next state message is built only once the kernel holds at most
    this many unsent/unacknowledged bytes for the client (the mailbox, not the kernel,
    absorbs a slow reader's backlog, merged) and at most ``max_unconfirmed`` state messages
    are unread by the client once the oldest of them is ``hold_after_ticks`` old (a ping after
    each state message; its pong says the client read past it; 0 turns this off) — a client that reads nothing for ``read_timeout`` s while state
    waits is dropped; ``send_buffer`` (bytes) caps the kernel
    send buffer per client (``SO_SNDBUF``; None = the system's autotuning). ``max_state_bytes``: a
    snapshot, delta or ``values`` message larger than this goes in parts (:mod:`._split`; 0: never).
    ``glb_max_prims``: no scene GLB for a scene of more twin prims (None: no cap; see :mod:`._scene_glb`).
    """

    writes_stage = False
    #: seconds between ``freshness`` messages (0: none); set before the server starts (see :mod:`._freshness`)
    freshness_interval = 1.0
    freshness: Any = None

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
        send_buffer: int | None = 256 * 1024,
        drain_bytes: int = 64 * 1024,
        max_unconfirmed: int = 1,
        hold_after_ticks: float = 2.0,
        read_timeout: float = 10.0,
        ingest: Any = None,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        glb_max_prims: int | None = GLB_MAX_PRIMS,
    ):
        toks = list(tokens)
        if tokens_file:
            toks += load_tokens(tokens_file)
        self.auth = Auth(toks, anonymous)
        self.host = host
        self.requested_port = port
        self.origins = list(origins)
        self.max_message_bytes = int(max_message_bytes)
        self.max_state_bytes = int(max_state_bytes)
        if glb_max_prims is not None and int(glb_max_prims) < 0:
            raise ValueError(f"glb_max_prims must be None (no cap) or at least 0, got {glb_max_prims}")
        self.glb_max_prims = None if glb_max_prims is None else int(glb_max_prims)
        if self.max_state_bytes and not MIN_MAX_STATE_BYTES <= self.max_state_bytes:
            raise ValueError(f"max_state_bytes must be 0 (no limit) or at least {MIN_MAX_STATE_BYTES}, got {max_state_bytes}")
        self.commands_per_second = float(commands_per_second)
        self.command_burst = int(command_burst)
        self.command_timeout = float(command_timeout)
        self.send_deadline = float(send_deadline)
        self.auth_timeout = float(auth_timeout)
        self.max_behind = int(max_behind)
        self.max_control_queue = int(max_control_queue)
        self.ring = Ring(ring_frames)
        self.scenarios = ScenarioRunner(scenarios, self._scenario_event)
        self.http_dir = Path(http_dir).resolve() if http_dir else None
        self.foxglove_rate = float(foxglove_rate)
        self.ping_interval = ping_interval
        self.write_limit = int(write_limit)
        self.send_buffer = send_buffer
        self.drain_bytes = int(drain_bytes)
        self.max_unconfirmed = int(max_unconfirmed)
        self.hold_after_ticks = float(hold_after_ticks)
        self.hold_after = 0.0  # seconds; set from the twin's tick period at start
        self.read_timeout = float(read_timeout)
        self.ingest = ingest
        self.session = ""
        self.twin: Any = None
        self.control: TwinControl | None = None
        self.mirror: Mirror | None = None
        self.sessions: set[Any] = set()
        self.seq = 0
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wslog = redacting_logger("twinstage.bridge.ws")
        self._stats: collections.Counter = collections.Counter()
        self._client_ids = 0
        self._thread: threading.Thread | None = None
        self._listener = Listener(self)
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._inbox: collections.deque = collections.deque()
        self._inbox_scheduled = False
        self._inbox_lock = threading.Lock()
        self._selections: dict[Any, Selection] = {}
        self.merged_cache: dict[Any, str | bytes] = {}
        self._tick_waiters: list[tuple[int, asyncio.Future]] = []
        self._pause_waiters: list[asyncio.Future] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.structure: Any = None
        self.hello_builder: HelloBuilder | None = None
        self._errors: ErrorWatch | None = None
        #: a fan-out worker: events of its clients' commands go to the other workers' clients too
        self.relay: Callable[[str, str, str, int, float], None] | None = None
        self.id_base, self.id_stride = 0, 1  # a fan-out worker numbers its clients base+1, base+1+stride, …

    # -- Sink protocol -------------------------------------------------------------------------
    def start(self, twin: Any) -> None:
        """Bind the socket and start the loop thread (called by ``twin.add_sink``).

        Add the server before the twin runs, or from its tick thread: the server's copy
        of the state starts from the table as it is now.
        """
        self.start_control(twin, TwinControl(twin))
        from ._freshness import FreshnessPublisher

        self.freshness = FreshnessPublisher.attach(self, twin)

    def start_control(self, twin: Any, control: Any) -> None:
        """:meth:`start` with a given control (a fan-out worker's :class:`~twinstage.bridge._fanout.RemoteControl`)."""
        if self.twin is not None:
            raise RuntimeError("a bridge Server serves one twin")
        self.scenarios.bind(control)
        self.twin, self.control = twin, control
        self.session = self.session or uuid.uuid4().hex
        self.mirror = Mirror(control.table)
        # a fan-out worker gets its alarms with the frames (derived once, in the twin process)
        self.mirror.alarm_flags = {} if getattr(control, "remote", False) else alarm_flags(control.table, control.stage)
        self.mirror.tick, self.mirror.sim_time = control.tick, control.sim_time
        if control.stage is not None:
            from ._structure import StructureTracker

            self.structure = StructureTracker(self, control.stage)
        self._errors = ErrorWatch(control.errors())
        self.hello_builder = HelloBuilder(self)
        self.hold_after = self.hold_after_ticks * control.tick_seconds
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twinstage-bridge-cmd")
        self._thread = threading.Thread(target=self._run_loop, name="twinstage-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._start_error is not None:
            self._thread.join(5)
            self.close()
            err = self._start_error or TimeoutError("no answer within 30 s")
            raise OSError(f"bridge server cannot listen on {self.host}:{self.requested_port}: {err}") from err
        log.info("bridge serving %s (session %s)", self.url, self.session)

    def consume(self, frame: Any) -> None:
        """Hand the Frame to the loop thread; never blocks the tick (applies a requested pause)."""
        if self.closed or self.loop is None:
            return
        self.post(self._on_frame, frame, self.control.on_tick() if self.control is not None else False)
        if self._errors is not None and self.control is not None:  # read here: each error goes with the frame of its tick
            errors = self._errors.new(self.control.errors())
            if errors:
                self.post(self._twin_errors, errors, frame.tick, frame.sim_time)
        if self.freshness is not None:
            self.freshness.tick()
        if self.scenarios.running:  # on the tick thread: what is due enters the next tick
            self.scenarios.advance(frame)

    def feed(self, frame: Any, last: bool, seq: int, encoded: dict | None = None, alarms: tuple | None = None) -> None:
        """A fan-out worker's frame: numbered (``seq``) and flagged ``last`` by the twin process, with the
        payloads it already encoded (``{(selection key, encoding): bytes}``; sessions reuse them) and its
        alarms (``([(channel, row, text)], how many more)``, derived there)."""
        self.post(self._on_frame, frame, last, seq, encoded, alarms)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, in order with the frames (any thread; never blocks)."""
        if self.closed or self.loop is None:
            return
        with self._inbox_lock:
            self._inbox.append((fn, args))
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:  # loop closed meanwhile
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.structure is not None:
            self.structure.revoke()
        loop = self.loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(15)
            except Exception as exc:  # pragma: no cover - best effort
                log.warning("bridge shutdown: %r", exc)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- properties ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._listener.port or self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        return {"session": self.session, "seq": self.seq, "clients": len(self.sessions), **self._stats}

    def count(self, what: str, n: int = 1) -> None:
        self._stats[what] += n

    def next_client_id(self) -> int:
        self._client_ids += 1
        return self.id_base + (self._client_ids - 1) * self.id_stride + 1

    def hello(self, role: str, user: str, layout: str = "auto") -> str:
        assert self.hello_builder is not None
        return self.hello_builder.hello(role, user, layout)

    # -- loop thread -------------------------------------------------------------------------------
    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listener.start())
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            self.loop = None
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

    async def _shutdown(self) -> None:
        await self._listener.shutdown()
        for fut in [f for _, f in self._tick_waiters] + self._pause_waiters:
            if not fut.done():
                fut.cancel()

    # -- frames ------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            items = list(self._inbox)
            self._inbox.clear()
            self._inbox_scheduled = False
        for fn, args in items:
            try:
                fn(*args)
            except Exception:
                log.exception("bridge: %s failed", getattr(fn, "__name__", fn))

    def _on_frame(self, frame: Any, last: bool = False, seq: int | None = None, encoded: dict | None = None,
                  alarms: tuple | None = None) -> None:
        mirror = self.mirror
        assert mirror is not None
        self.seq = self.seq + 1 if seq is None else int(seq)
        seq = self.seq
        self.merged_cache.clear()
        alarms, extra = derive_alarms(mirror, seq, frame) if alarms is None else alarms
        mirror.apply(frame, seq)
        entry = self.ring.append(seq, frame)
        if encoded:
            entry.encoded.update(encoded)
        for s in list(self.sessions):
            s.on_frame(entry)
        for name, row, text in alarms:
            for s in list(self.sessions):
                s.on_alarm(name, row, text)
        if extra:
            self.broadcast_event("alarms", f"{extra} more alarm transitions in tick {frame.tick} not sent individually", tick=frame.tick,
                                 sim_time=frame.sim_time, relay=False)
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
        if last:
            for fut in self._pause_waiters:
                if not fut.done():
                    fut.set_result(frame.tick)
            self._pause_waiters = []

    def _scenario_event(self, kind: str, message: str, *, user: str = "", tick: int | None = None) -> None:
        """The scenario runner's events: from the loop thread (start) at once, from the tick thread (advance) after the frame."""
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            self.broadcast_event(kind, message, user=user, tick=tick)
        else:
            self.post(lambda: self.broadcast_event(kind, message, user=user, tick=tick))

    def _twin_errors(self, errors: list[str], tick: int, sim_time: float) -> None:
        for text in errors:
            self.broadcast_event("error", text, tick=tick, sim_time=sim_time, relay=False)

    def broadcast_event(self, kind: str, message: str, *, user: str = "", tick: int | None = None, sim_time: float | None = None,
                        relay: bool = True) -> None:
        """An ``event`` to every client (``tick``/``sim_time``: the mirror's unless given); a fan-out worker
        also relays it to the other workers' clients (``relay``)."""
        mirror = self.mirror
        assert mirror is not None
        tick = mirror.tick if tick is None else tick
        sim_time = mirror.sim_time if sim_time is None else sim_time
        text = wire(Event(tick=tick, sim_time=sim_time, kind=kind, message=message, user=user))
        for s in list(self.sessions):
            s.on_event(text)
        if relay and self.relay is not None:
            self.relay(kind, message, user, tick, sim_time)

    def selection(self, prefixes: Sequence[str], attributes: Sequence[str]) -> Selection:
        key = (tuple(sorted(set(prefixes))), tuple(sorted(set(attributes))))
        sel = self._selections.get(key)
        if sel is None:
            assert self.mirror is not None
            if len(self._selections) > 256:
                self._selections.clear()
            sel = self._selections[key] = Selection(self.mirror, prefixes, attributes)
        return sel


def serve(twin: Any, host: str = "127.0.0.1", port: int = 8765, **kwargs: Any) -> Server:
    """Start a bridge for ``twin`` (``twin.add_sink(Server(...))``) and return it."""
    server = Server(host, port, **kwargs)
    twin.add_sink(server)
    return server
