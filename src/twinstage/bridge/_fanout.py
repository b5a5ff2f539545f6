"""Fan-out worker processes (``twinstage serve --fanout-procs N``): the twin ticks in one process,
the websocket sessions run in N others, so the tick and the fan-out never share an interpreter.

- :class:`FanoutHub` is the twin's sink in the twin process. Each tick it encodes the binary delta
  for clients subscribed to everything (:func:`encode_all`; workers' sessions send those bytes
  as they are) and serialises Frame + payload once (one pickle, protocol 5), handing the same
  bytes to every worker's feed; a worker that
  falls more than :data:`MERGE_AFTER` frames behind gets the pending frames merged into one
  (latest value wins per entry, seq jumps — the same rule as a slow client's mailbox).
- Each worker opens the scene itself (metadata, stage, hello), starts from the twin's state as
  the hub sends it, and runs an ordinary :class:`~twinstage.bridge.Server` whose control is a
  :class:`RemoteControl`: reads come from the frames, changes (set, pause, resume, step, ingest)
  are calls into the twin process, answered there; acks keep the rules of a single server (a
  ``step n`` ack after the n-th tick's delta, a ``pause`` ack with the last tick sent).
- All workers listen on the one port with ``SO_REUSEPORT``; the kernel spreads connections.
  A worker that dies takes its own clients with it; the others go on.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import threading
import uuid
from typing import Any

import numpy as np

from ._fanout_worker import _reuse_socket, _worker_main  # the worker side (imports the Server lazily)

log = logging.getLogger("twinstage.bridge")
MERGE_AFTER = 2  #: pending frames per worker before they are merged into one


def _frame_parts(frame: Any) -> tuple:
    return (frame.tick, frame.sim_time, frame.wall_time, {n: (c.rows, c.values, c.quality) for n, c in frame.changes.items()})


#: the selection key of a subscription to everything (``Selection.key`` with no prefixes, no attributes)
ALL = ((), ())


def encode_all(channels: Any, seq: int, frame: Any) -> dict:
    """The binary delta of ``frame`` for a client subscribed to everything, encoded once here in the
    twin process; byte for byte what a worker's session would encode (``_mailbox._shared_payload``)."""
    from types import SimpleNamespace

    from ._state import encode_state, gather

    parts = gather(SimpleNamespace(channels=channels), [(n, c.rows, c.values, c.quality) for n, c in frame.changes.items() if n in channels])
    return {(ALL, "binary"): encode_state("delta", "binary", parts, seq, frame.tick, frame.sim_time, frame.wall_time, merged=1)}


def merge_frames(frames: list[Any]) -> Any:
    """Frames in order → one Frame of the last tick: per channel the union of rows, each with its last value."""
    from ..state import Change, Frame

    acc: dict[str, list[Any]] = {}
    for f in frames:
        for n, c in f.changes.items():
            acc.setdefault(n, []).append(c)
    changes = {}
    for n, cs in acc.items():
        rows = np.concatenate([c.rows for c in cs])[::-1]
        vals = np.concatenate([c.values for c in cs])[::-1]
        q = np.concatenate([c.quality for c in cs])[::-1]
        u, first = np.unique(rows, return_index=True)  # first in reversed order = last written
        changes[n] = Change.make(u, vals[first], q[first])
    last = frames[-1]
    return Frame.make(last.tick, last.sim_time, last.wall_time, changes)


class _Worker:
    """The hub's end of one worker: its process, its pipe, its feed (latest-wins) and its RPC reader."""

    def __init__(self, hub: "FanoutHub", index: int, proc: Any, conn: Any):
        self.hub, self.index, self.proc, self.conn = hub, index, proc, conn
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.pending: collections.deque = collections.deque()
        self.alive = True
        self.merged = 0
        self.stats: dict[str, Any] = {}

    def send(self, obj: Any = None, blob: bytes | None = None) -> None:
        with self.send_lock:
            self.conn.send_bytes(blob if blob is not None else pickle.dumps(obj, protocol=5))

    def put(self, item: tuple) -> None:
        with self.cond:
            self.pending.append(item)
            self.cond.notify()

    def writer(self) -> None:
        while self.alive:
            with self.cond:
                while not self.pending and self.alive:
                    self.cond.wait(0.5)
                items = list(self.pending)
                self.pending.clear()
            if not items:
                continue
            if len(items) > MERGE_AFTER:  # this worker is behind: one merged frame, the newest values
                self.merged += len(items) - 1
                seq, _, last, paused, _ = items[-1]
                frame = merge_frames([it[1] for it in items])
                items = [(seq, frame, any(it[2] for it in items), paused, None)]
            try:
                for seq, frame, last, paused, blob in items:
                    self.send(blob=blob or pickle.dumps(("frame", seq, _frame_parts(frame), last, paused, None), protocol=5))
            except (OSError, ValueError):
                self.dead("its feed broke")

    def reader(self) -> None:
        while self.alive:
            try:
                msg = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                self.dead("it closed its pipe")
                return
            if msg[0] == "call":
                self.hub.calls.submit(self.hub.answer, self, *msg[1:])
            elif msg[0] == "stats":
                self.stats = msg[1]

    def dead(self, why: str) -> None:
        if self.alive and not self.hub.closed:
            log.warning("bridge fan-out worker %d is gone (%s); its clients were disconnected", self.index, why)
        self.alive = False
        with self.cond:
            self.cond.notify_all()


class FanoutHub:
    """A twin sink that feeds ``procs`` worker processes, each serving websocket clients on the shared port.

    ``scene``/``open_kwargs``: how a worker opens the same scene (``twinstage.open``) for its
    metadata. ``server_kwargs``: what each worker's :class:`~twinstage.bridge.Server` gets.
    ``ingest``: the twin's :class:`~twinstage.telemetry.BridgeIngestSource` (workers forward to it).
    """

    writes_stage = False

    def __init__(self, scene: str, procs: int, host: str = "127.0.0.1", port: int = 8765, *, open_kwargs: dict | None = None,
                 server_kwargs: dict | None = None, ingest: Any = None, start_timeout: float = 180.0):
        if procs < 1:
            raise ValueError("fan-out needs at least 1 worker process")
        from .infra.auth import Auth

        self.scene, self.procs, self.host, self.requested_port = str(scene), int(procs), host, int(port)
        self.open_kwargs = dict(open_kwargs or {})
        self.server_kwargs = dict(server_kwargs or {})
        kw = self.server_kwargs
        self.auth = Auth(list(kw.get("tokens", ())), kw.get("anonymous", "default"))  # for describe(); workers check tokens themselves
        self.http_dir = None
        self.ingest = ingest
        self.start_timeout = start_timeout
        self.session = uuid.uuid4().hex
        self.workers: list[_Worker] = []
        self.seq = 0
        self.closed = False
        self.control: Any = None
        self.port = 0
        self._reserve: Any = None  # a socket holding the port
        self.calls: Any = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        out: collections.Counter = collections.Counter()
        for w in self.workers:
            out.update({k: v for k, v in w.stats.items() if isinstance(v, (int, float))})
        return {"session": self.session, "seq": self.seq, "workers": sum(w.alive for w in self.workers), **out}

    # -- sink protocol ----------------------------------------------------------------------------
    def start(self, twin: Any) -> None:
        import concurrent.futures

        from ._control import TwinControl

        self.control = ctl = TwinControl(twin)
        self.calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twinstage-fanout-cmd")
        self._reserve = _reuse_socket(self.host, self.requested_port, listen=False)  # holds the port; workers listen on it
        self.port = self._reserve.getsockname()[1]
        table = ctl.table
        init = {"values": {n: np.array(table[n]) for n in table.channels}, "quality": {n: np.array(table.quality(n)) for n in table.channels},
                "tick": ctl.tick, "sim_time": ctl.sim_time, "paused": ctl.paused, "session": self.session,
                "ingest_keys": list(self.ingest.keys) if self.ingest is not None else None}
        mp = multiprocessing.get_context("spawn")
        spec = {"scene": self.scene, "open_kwargs": self.open_kwargs, "server_kwargs": self.server_kwargs, "host": self.host, "port": self.port}
        for i in range(self.procs):
            mine, theirs = mp.Pipe(duplex=True)
            proc = mp.Process(target=_worker_main, args=(i, theirs, spec), name=f"twinstage-fanout-{i}", daemon=True)
            proc.start()
            theirs.close()
            w = _Worker(self, i, proc, mine)
            w.send(("init", init))
            self.workers.append(w)
        for w in self.workers:
            if not w.conn.poll(self.start_timeout):
                self.close()
                raise OSError(f"bridge fan-out worker {w.index} did not start within {self.start_timeout:g} s")
            msg = pickle.loads(w.conn.recv_bytes())
            if msg[0] != "ready":
                self.close()
                raise OSError(f"bridge fan-out worker {w.index} failed: {msg[1]}")
            threading.Thread(target=w.writer, name=f"twinstage-fanout-feed-{w.index}", daemon=True).start()
            threading.Thread(target=w.reader, name=f"twinstage-fanout-rpc-{w.index}", daemon=True).start()
        log.info("bridge serving %s from %d worker processes (session %s)", self.url, self.procs, self.session)

    def consume(self, frame: Any) -> None:
        """Tick thread: apply a requested pause, serialise the Frame once, queue it for every live worker."""
        if self.closed:
            return
        last = self.control.on_tick()
        self.seq += 1
        paused = self.control.paused
        encoded = encode_all(self.control.table.channels, self.seq, frame)  # once, for every worker
        blob = pickle.dumps(("frame", self.seq, _frame_parts(frame), last, paused, encoded), protocol=5)
        for w in self.workers:
            if w.alive:
                w.put((self.seq, frame, last, paused, blob))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.workers:
            if w.alive and w.proc.is_alive():
                try:
                    w.send(("stop",))
                except (OSError, ValueError):
                    pass
        for w in self.workers:
            w.proc.join(20)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(5)
            w.alive = False
            with w.cond:
                w.cond.notify_all()
        if self.calls is not None:
            self.calls.shutdown(wait=False, cancel_futures=True)
        if self._reserve is not None:
            self._reserve.close()

    # -- calls from workers (hub's command thread) ---------------------------------------------------
    def answer(self, w: _Worker, call_id: int, method: str, args: tuple) -> None:
        ctl = self.control
        try:
            if method == "ingest":
                if self.ingest is None:
                    raise LookupError("this server takes no ingest")
                result = self.ingest.push(*args)
            elif method in ("set", "resume", "step", "request_pause", "pause_now"):
                result = getattr(ctl, method)(*args)
            else:
                raise LookupError(f"unknown call {method!r}")
            reply = ("reply", call_id, True, result, None)
        except Exception as exc:  # re-raised in the worker as the same kind of error
            reply = ("reply", call_id, False, type(exc).__name__, str(exc))
        try:
            w.send(reply + ({"tick": ctl.tick, "paused": ctl.paused},))
        except (OSError, ValueError):
            w.dead("its pipe broke")


__all__ = ["FanoutHub", "MERGE_AFTER", "merge_frames"]
