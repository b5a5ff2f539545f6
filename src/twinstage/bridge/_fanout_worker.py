"""The worker side of ``serve --fanout-procs``: a :class:`~twinstage.bridge.Server` fed frames over a
pipe from the twin process, whose changes to the twin are calls back into that process."""

from __future__ import annotations

import itertools
import pickle
import signal
import socket
import threading
from pathlib import Path
from typing import Any


def _reuse_socket(host: str, port: int, listen: bool) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    if listen:
        s.listen(1024)
        s.setblocking(False)
    return s


def _error(kind: str, message: str) -> Exception:
    """The twin process's exception, as the same kind here (the bridge maps them to protocol errors)."""
    if kind in ("StateError",):
        from ..state import StateError

        return StateError(message)
    if kind in ("UnitError", "DimensionalityError", "UndefinedUnitError"):
        from ..units import UnitError

        return UnitError(message)
    if kind in ("TelemetryError", "MappingError"):
        from ..telemetry._source import TelemetryError

        return TelemetryError(message)
    return RuntimeError(f"{kind}: {message}")


class RemoteControl:
    """:class:`~twinstage.bridge._control.TwinControl` for a worker: metadata from the scene this
    process opened, tick/paused from the twin process's frames, changes as calls to that process."""

    def __init__(self, twin: Any, conn: Any, init: dict[str, Any], call_timeout: float = 30.0):
        self.twin = twin
        self.conn = conn
        self.send_lock = threading.Lock()
        self._tick = int(init["tick"])
        self._sim_time = float(init["sim_time"])
        self._paused = bool(init["paused"])
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self.call_timeout = call_timeout

    # -- reading (as TwinControl) -------------------------------------------------------------
    table = property(lambda self: self.twin.table)
    stage = property(lambda self: getattr(self.twin, "stage", None))
    assets = property(lambda self: getattr(self.twin, "assets", None) or {})
    scene_name = property(lambda self: Path(getattr(self.twin, "source", "") or "").name)
    tick = property(lambda self: self._tick)
    sim_time = property(lambda self: self._sim_time)
    rate = property(lambda self: float(self.twin.clock.rate))
    paused = property(lambda self: self._paused)

    @property
    def tick_seconds(self) -> float:
        clock = self.twin.clock
        return float(clock.dt) / float(getattr(clock, "speed", 1.0) or 1.0)

    def errors(self) -> list[Any]:
        return []  # the twin's errors stay in the twin process (its log)

    def validate(self, prim: str, attribute: str, value: Any) -> Any:
        return self.twin.table.validate(prim, attribute, value)

    def on_tick(self) -> bool:
        return False  # the twin process decides which tick is the last (it sends the flag with the frame)

    # -- changing: calls into the twin process ------------------------------------------------------
    def set(self, prim: str, attribute: str, value: Any) -> None:
        self.call("set", prim, attribute, value)

    def resume(self) -> None:
        self.call("resume")

    def step(self, n: int) -> int:
        return int(self.call("step", n))

    def request_pause(self) -> None:
        self.call("request_pause")

    def pause_now(self) -> bool:
        return bool(self.call("pause_now"))

    def call(self, method: str, *args: Any) -> Any:
        cid = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._waiting[cid] = slot
        try:
            with self.send_lock:
                self.conn.send_bytes(pickle.dumps(("call", cid, method, args), protocol=5))
            if not slot[0].wait(self.call_timeout):
                raise TimeoutError(f"the twin process did not answer {method} within {self.call_timeout:g} s")
        finally:
            with self._lock:
                self._waiting.pop(cid, None)
        _, _, ok, result, message, status = slot[1]
        self._tick, self._paused = max(self._tick, int(status["tick"])), bool(status["paused"])
        if not ok:
            raise _error(result, message)
        return result

    def resolve(self, msg: tuple) -> None:
        with self._lock:
            slot = self._waiting.get(msg[1])
        if slot is not None:
            slot[1] = msg
            slot[0].set()


class RemoteIngest:
    """The twin process's BridgeIngestSource as a worker sees it: its keys, and ``push`` as a call."""

    def __init__(self, control: RemoteControl, keys: list[str]):
        self.control = control
        self.keys = list(keys)

    def push(self, keys: Any, values: Any, times: Any = None, quality: Any = None) -> int:
        return int(self.control.call("ingest", list(keys), list(values), None if times is None else list(times),
                                     None if quality is None else list(quality)))

    def describe(self) -> str:
        return f"bridge ingest (in the twin process, {len(self.keys)} keys)"


def _worker_main(index: int, conn: Any, spec: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the twin process, which stops the workers
    try:
        import twinstage

        from ..state import Change, Frame
        from ._server import Server

        twin = twinstage.open(spec["scene"], **spec["open_kwargs"])
        _, init = pickle.loads(conn.recv_bytes())
        table = twin.table
        for n, v in init["values"].items():
            table[n][...] = v
            table.quality(n)[...] = init["quality"][n]
        ctl = RemoteControl(twin, conn, init)
        server = Server(spec["host"], spec["port"], **spec["server_kwargs"])
        server.listen_socket = _reuse_socket(spec["host"], spec["port"], listen=True)
        server.session = init["session"]
        server.worker = index
        if init["ingest_keys"] is not None:
            server.ingest = RemoteIngest(ctl, init["ingest_keys"])
        server.start_control(twin, ctl)
        with ctl.send_lock:
            conn.send_bytes(pickle.dumps(("ready", index)))
    except Exception as exc:  # reported to the twin process, which refuses to start
        try:
            conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
        finally:
            return
    try:
        while True:
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "frame":
                _, seq, (tick, sim_time, wall_time, changes), last, paused, encoded = msg
                frame = Frame.make(tick, sim_time, wall_time, {n: Change.make(*c) for n, c in changes.items()})
                ctl._tick, ctl._sim_time, ctl._paused = max(ctl._tick, int(tick)), float(sim_time), bool(paused)
                server.feed(frame, last, seq, encoded)
            elif kind == "reply":
                ctl.resolve(msg)
            elif kind == "stop":
                break
    finally:
        try:
            with ctl.send_lock:
                conn.send_bytes(pickle.dumps(("stats", dict(server.stats()))))
        except (OSError, ValueError):
            pass
        server.close()
