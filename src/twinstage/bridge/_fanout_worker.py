"""The worker side of ``serve --fanout-procs``: a :class:`~twinstage.bridge.Server` fed over a pipe from
the twin process — frames with their alarms, errors and freshness, structure changes, other workers'
events — whose changes to the twin are calls back into that process (:mod:`._fanout_remote`)."""

from __future__ import annotations

import concurrent.futures
import pickle
import signal
import socket
import time
from typing import Any

from ._fanout_remote import RemoteControl, RemoteIngest


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


def _on_loop(server: Any, fn: Any, timeout: float = 5.0) -> Any:
    """``fn()`` run on the server's loop thread; its result here."""
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def go() -> None:
        try:
            fut.set_result(fn())
        except Exception as exc:  # handed to the caller
            fut.set_exception(exc)

    server.loop.call_soon_threadsafe(go)
    return fut.result(timeout)


STATS_INTERVAL = 1.0  #: seconds between a worker's counters sent to the twin process (``FanoutHub.stats``, metrics)


def _stats(server: Any) -> dict[str, Any]:
    """Loop thread: the server's counters, with the frames merged for its slow clients."""
    return {**server.stats(), "merged": sum(s.merged for s in server.sessions)}


def _send_stats(server: Any, ctl: RemoteControl) -> None:
    try:
        ctl.send(("stats", _stats(server)))
    except (OSError, ValueError):  # the twin process is gone; the worker ends with it
        pass


def _event(server: Any, kind: str, message: str, user: str, tick: int, sim_time: float) -> None:
    server.broadcast_event(kind, message, user=user, tick=tick, sim_time=sim_time, relay=False)


def _start(index: int, conn: Any, spec: dict[str, Any]) -> tuple[Any, RemoteControl]:
    import twinstage

    from ._freshness import FreshnessPublisher
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
    server.id_base, server.id_stride = index, int(init["procs"])  # client ids unique over all workers
    server.relay = lambda kind, message, user, tick, sim_time: ctl.send(("event", kind, message, user, tick, sim_time))
    server.freshness = FreshnessPublisher(server, None)  # publishes what the twin process read
    if init["ingest_keys"] is not None:
        server.ingest = RemoteIngest(ctl, init["ingest_keys"])
    server.start_control(twin, ctl)
    ctl.send(("ready", index))
    return server, ctl


def _worker_main(index: int, conn: Any, spec: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the twin process, which stops the workers
    if spec.get("log"):  # the serve process's format and level (a worker's warnings name their level and logger)
        from ..observability._logs import configure_logging

        configure_logging(spec["log"][0], level=spec["log"][1])
    try:
        from ..state import Change, Frame

        server, ctl = _start(index, conn, spec)
    except Exception as exc:  # reported to the twin process, which refuses to start
        try:
            conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
        finally:
            return
    next_stats = 0.0
    try:
        while True:
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_INTERVAL
                server.post(_send_stats, server, ctl)
            try:
                if not conn.poll(STATS_INTERVAL):
                    continue
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "frame":
                _, seq, (tick, sim_time, wall_time, changes), last, paused, encoded, alarms, events, fresh = msg
                frame = Frame.make(tick, sim_time, wall_time, {n: Change.make(*c) for n, c in changes.items()})
                ctl.status(tick, paused, sim_time)
                server.feed(frame, last, seq, encoded, alarms)
                for ev in events:
                    server.post(_event, server, *ev)
                if fresh is not None:
                    server.post(server.freshness.publish, fresh)
            elif kind == "reply":
                ctl.resolve(msg)
            elif kind == "event":  # another worker's clients' command
                server.post(_event, server, *msg[1:])
            elif kind == "structure":
                if server.structure is not None:
                    server.post(server.structure._on_structure, msg[1], msg[2])
            elif kind == "status":
                ctl.status(msg[1], msg[2])
            elif kind == "clients?":
                try:
                    infos = _on_loop(server, server.local_clients)
                except Exception:
                    infos = []
                ctl.send(("clients!", msg[1], infos))
            elif kind == "stop":
                break
    finally:
        try:
            ctl.send(("stats", _stats(server)))
        except (OSError, ValueError, RuntimeError):
            pass
        server.close()
