"""Freshness over the bridge: every ``interval`` s (wall) the age of the last good sample of each
fed entry and the reasons of the flagged ones, to every twinstage-dialect client that subscribed
to some of them (message ``freshness``, :mod:`._freshness_message`).

The ages and reasons are read on the tick thread, in the server's ``consume`` (the engine's
``freshness()`` and ``quality_reason()`` are tick-thread state); the per-client messages are
built on the server's loop thread. With fan-out (``serve --fanout-procs``) the hub reads them in the
twin process (:meth:`FreshnessPublisher.read`) and ships them with the frame; each worker's server
builds its clients' messages from them (:meth:`FreshnessPublisher.publish`).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import numpy as np

from ._freshness_message import Freshness, ReasonInfo
from ._jsonio import dumps


class _Sent:
    """What one client was last sent: its selection, entry order and reasons."""

    __slots__ = ("selection", "indices", "reasons")

    def __init__(self, selection: Any):
        self.selection = selection
        self.indices: np.ndarray | None = None
        self.reasons: dict[int, str] = {}


class FreshnessPublisher:
    """Reads freshness on the tick thread at most every ``interval`` s and hands it to the server loop."""

    def __init__(self, server: Any, ctx: Any, interval: float = 1.0):
        self.server = server
        self.ctx = ctx
        self.interval = float(interval)
        self._next = 0.0
        self._sent: "weakref.WeakKeyDictionary[Any, _Sent]" = weakref.WeakKeyDictionary()

    @classmethod
    def attach(cls, server: Any, ctx: Any) -> "FreshnessPublisher | None":
        interval = float(getattr(server, "freshness_interval", 1.0) or 0.0)
        if interval <= 0 or not callable(getattr(ctx, "freshness", None)) or not callable(getattr(ctx, "quality_reason", None)):
            return None
        return cls(server, ctx, interval)

    # -- tick thread ---------------------------------------------------------------------------
    def tick(self) -> None:
        if self.server.loop is None or not self.server.sessions:
            return
        payload = self.read()
        if payload is not None:
            self.server.post(self.publish, payload)  # after the frame of this tick

    def read(self) -> tuple | None:
        """Tick thread: the ages and reasons of the fed entries, at most every ``interval`` s (else None)."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval
        ctx = self.ctx
        table = ctx.table
        groups = []  # (channel, rows, flat indices, ages)
        reasons: dict[int, str] = {}
        for ch, ages in ctx.freshness().items():
            fed = np.flatnonzero(~np.isnan(ages))
            if not len(fed):
                continue
            chan = table.channels[ch]
            a = ages[fed]
            groups.append((ch, fed, fed + int(chan.offset), np.where(np.isfinite(a), np.round(a, 3), -1.0)))
            q = np.asarray(table.quality(ch))[fed]
            for r in fed[q != 0].tolist():
                reasons[int(chan.offset) + r] = ctx.quality_reason(table.prims[int(chan.prim_index[r])], ch)
        if not groups:
            return None
        return (int(ctx.tick_count), float(ctx.sim_time), groups, reasons)

    # -- loop thread ---------------------------------------------------------------------------
    def publish(self, payload: tuple) -> None:
        tick, sim_time, groups, reasons = payload
        for s in list(self.server.sessions):
            sel = getattr(s, "selection", None)
            if getattr(s, "dialect", "") != "twinstage" or sel is None or not getattr(s, "hello_sent", False) or s.closed:
                continue
            text = self.message_for(s, sel, tick, sim_time, groups, reasons)
            if text is not None:
                s.queue(text)

    def message_for(self, s: Any, sel: Any, tick: int, sim_time: float, groups: list, reasons: dict[int, str]) -> str | None:
        idx_parts, age_parts = [], []
        for ch, rows, flat, ages in groups:
            if ch not in sel.masks:
                continue
            mask = sel.masks[ch]
            keep = slice(None) if mask is None else mask[rows]
            idx_parts.append(flat[keep])
            age_parts.append(ages[keep])
        idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64)
        ages = np.concatenate(age_parts) if age_parts else np.zeros(0)
        sent = self._sent.get(s)
        if sent is None or sent.selection is not sel:
            sent = self._sent[s] = _Sent(sel)
        if not len(idx) and sent.indices is None:
            return None  # this client never subscribed to a fed entry
        same = sent.indices is not None and len(idx) > 0 and np.array_equal(idx, sent.indices)
        sent.indices = idx
        mine = set(idx.tolist())
        cur = {i: t for i, t in reasons.items() if i in mine}
        changed = [ReasonInfo(index=i, text=t) for i, t in sorted(cur.items()) if sent.reasons.get(i) != t]
        changed += [ReasonInfo(index=i, text="") for i in sorted(set(sent.reasons) - set(cur))]
        sent.reasons = cur
        msg = Freshness(tick=tick, sim_time=sim_time, indices=[] if same else idx.tolist(), ages=ages.tolist(), reasons=changed)
        return dumps(msg.model_dump(by_alias=True, mode="json"))
