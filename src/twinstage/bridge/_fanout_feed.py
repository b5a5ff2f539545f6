"""The fan-out hub's end of one worker process: its pipe, its feed and the thread reading its calls.

The feed is a queue of items in the order the twin produced them: frames (``("frame", …)``, one per
tick, pickled once for every worker) and other messages (``("msg", obj)``: a relayed event, a structure
change, the twin's paused state). A writer thread sends them; when more than :data:`MERGE_AFTER` frames
are waiting (the worker is behind), they go as one merged frame — the newest value of each entry, the
seq jumps — with the alarms, errors and the freshness of all of them (the same rule as a slow client's
mailbox). Messages that came between those frames follow the merged frame, in their order.

Wire (tuples, pickled): hub → worker ``("init", state)``, ``("frame", seq, (tick, sim_time, wall_time,
changes), last, paused, encoded, alarms, events, freshness)``, ``("event", kind, message, user, tick, sim_time)``,
``("structure", added, removed)``, ``("status", tick, paused)``, ``("reply", id, ok, result, message,
status)``, ``("clients?", id)``, ``("stop",)``; worker → hub ``("ready", index)``, ``("failed", why)``,
``("call", id, method, args)``, ``("event", kind, message, user, tick, sim_time)``, ``("clients!", id, infos)``,
``("stats", counters)``.
"""

from __future__ import annotations

import collections
import logging
import pickle
import threading
from typing import Any

import numpy as np

log = logging.getLogger("twinstage.bridge")
MERGE_AFTER = 2  #: pending frames per worker before they are merged into one


def frame_parts(frame: Any) -> tuple:
    return (frame.tick, frame.sim_time, frame.wall_time, {n: (c.rows, c.values, c.quality) for n, c in frame.changes.items()})


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


def merge_items(items: list[tuple]) -> list[tuple]:
    """Feed items → the messages from before the first frame, one frame item for all the frames, then
    the other messages in their order (a reply or event goes after the state it followed, never before)."""
    frames = [it for it in items if it[0] == "frame"]
    if len(frames) <= MERGE_AFTER:
        return items
    alarms: list = []
    extra = 0
    events: list = []
    fresh = None
    for it in frames:
        a, n = it[6]
        alarms += a
        extra += n
        events += it[7]
        fresh = it[8] if it[8] is not None else fresh
    _, seq, _, _, paused, _, _, _, _ = frames[-1]
    frame = merge_frames([it[2] for it in frames])
    merged = ("frame", seq, frame, any(it[3] for it in frames), paused, None, (alarms, extra), events, fresh)
    first = next(i for i, it in enumerate(items) if it[0] == "frame")
    return items[:first] + [merged] + [it for it in items[first:] if it[0] != "frame"]


class WorkerLink:
    """The hub's end of one worker: its process, its pipe, its feed and the thread reading its calls."""

    def __init__(self, hub: Any, index: int, proc: Any, conn: Any):
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

    def start(self) -> None:
        threading.Thread(target=self._writer, name=f"twinstage-fanout-feed-{self.index}", daemon=True).start()
        threading.Thread(target=self._reader, name=f"twinstage-fanout-rpc-{self.index}", daemon=True).start()

    def _writer(self) -> None:
        while self.alive:
            with self.cond:
                while not self.pending and self.alive:
                    self.cond.wait(0.5)
                items = list(self.pending)
                self.pending.clear()
            if not items:
                continue
            out = merge_items(items)
            if len(out) < len(items):  # this worker is behind: one merged frame, the newest values
                self.merged += len(items) - len(out)
            try:
                for it in out:
                    if it[0] == "msg":
                        self.send(it[1])
                    else:
                        kind, seq, frame, last, paused, blob, alarms, events, fresh = it
                        self.send(blob=blob or pickle.dumps(("frame", seq, frame_parts(frame), last, paused, None, alarms, events, fresh),
                                                            protocol=5))
            except (OSError, ValueError):
                self.dead("its feed broke")

    def _reader(self) -> None:
        hub = self.hub
        while self.alive:
            try:
                msg = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                self.dead("it closed its pipe")
                return
            kind = msg[0]
            if kind == "call":
                hub.on_call(self, *msg[1:])
            elif kind == "event":  # an event of this worker's clients: to every other worker's clients too
                hub.broadcast(msg, but=self)
            elif kind == "clients!":
                hub.on_clients(self, msg[1], msg[2])
            elif kind == "stats":
                self.stats = msg[1]

    def dead(self, why: str) -> None:
        if self.alive and not self.hub.closed:
            log.warning("bridge fan-out worker %d is gone (%s); its clients were disconnected", self.index, why)
        self.alive = False
        with self.cond:
            self.cond.notify_all()
