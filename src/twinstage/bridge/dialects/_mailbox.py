"""The twinstage dialect's latest-wins state mailbox: which frames a client still has to get,
and the one snapshot or (merged) delta that stands for them.

Frames a subscription touches are noted by seq (``on_frame``); when the sender may send,
``next_state`` turns everything pending into one message — the newest frame's shared
payload when it covers the others, else a merge of the rows from the mirror (latest value
wins), cached for clients in the same place. Too far behind, or frames gone from the ring:
a snapshot. A message larger than ``server.max_state_bytes`` is built in parts (:mod:`.._split`):
``next_state`` then returns the list, and the sender sends the parts one after another.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .._split import Payload, state_payload, too_big, values_payload
from .._state import Selection, gather, merged_rows
from ..infra.session import Session, now


def with_merged(payload: Payload, merged: int) -> Payload:
    """A shared delta (or each of its parts) relabelled with how many frames it stands for."""
    if isinstance(payload, list):
        return [with_merged(p, merged) for p in payload]
    if isinstance(payload, bytes):
        out = bytearray(payload)
        struct.pack_into("<H", out, 6, min(merged, 65535))
        return bytes(out)
    return payload.replace('"merged":1,', f'"merged":{merged},', 1)


class MailboxSession(Session):
    def __init__(self, server: Any, ws: Any, role: str | None, user: str):
        super().__init__(server, ws, role, user)
        self.selection: Selection | None = None
        self.pending: list[int] = []
        self.need_snapshot: str | None = None
        self.resume_pending = False
        self.min_interval = 0.0
        self.next_allowed = 0.0

    def touches(self, entry: Any) -> bool:
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
        if self.touches(entry):
            self.pending.append(entry.seq)
            if len(self.pending) > self.server.max_behind:
                self.pending.clear()
                self.need_snapshot = "behind"
            self.wake.set()

    def state_delay(self) -> float | None:
        if not (self.need_snapshot or self.pending or self.resume_pending):
            return None
        if self.min_interval:
            t = now()
            if t < self.next_allowed:
                return self.next_allowed - t
        return 0

    def next_state(self) -> Payload | None:
        server = self.server
        limit = server.max_state_bytes
        m = server.mirror
        sel = self.selection
        assert m is not None and sel is not None
        if self.min_interval:
            self.next_allowed = now() + self.min_interval
        enc = self.encoding
        entries: list[Any] = []
        if not self.need_snapshot:
            entries = [server.ring.get(s) for s in self.pending]
            if any(e is None for e in entries):
                self.need_snapshot = "behind"
        if self.need_snapshot:
            reason, self.need_snapshot = self.need_snapshot, None
            self.pending.clear()
            self.resume_pending = False
            self.snapshots += 1
            key = ("snapshot", sel.key, enc, reason, m.seq)  # a connect storm: one encode per tick, not per client (JSON 56k: ~9 ms)
            payload = server.merged_cache.get(key)
            if payload is None:
                parts = gather(m, [(name, rows, None, None) for name, rows in sel.rows.items()])
                payload = server.merged_cache[key] = state_payload("snapshot", enc, parts, m.seq, m.tick, m.sim_time, m.wall_time, reason=reason,
                                                                   limit=limit)
            return payload
        pending, self.pending = self.pending, []
        self.resume_pending = False
        if enc == "compact":  # shared by the clients with this selection and the same pending frames
            key = (sel.key, enc, pending[0] if pending else 0, m.seq)
            payload = server.merged_cache.get(key)
            if payload is None:
                rows = merged_rows(sel, [e for e in entries if e is not None])
                full = sum(len(r) for _, r, _, _ in rows) * 2 >= sel.count
                if full:
                    rows = [(name, r, None, None) for name, r in sel.rows.items()]
                payload = server.merged_cache[key] = values_payload(gather(m, rows), m.seq, m.tick, m.sim_time, m.wall_time, max(1, len(pending)),
                                                                    full=full, limit=limit)
            self.merged += max(0, len(pending) - 1)
            return payload
        if pending and (len(pending) == 1 or self._covers(entries[-1], entries[:-1])):
            # the newest frame touches every row the others did: its shared payload is the merge
            payload = self._shared_payload(entries[-1], sel, enc)
            if len(pending) > 1:
                self.merged += len(pending) - 1
                payload = with_merged(payload, len(pending))
            return payload
        # a real merge (rows from several frames, values from the mirror), shared by clients in the same place
        key = (sel.key, enc, pending[0] if pending else 0, pending[-1] if pending else 0, m.seq)
        payload = server.merged_cache.get(key)
        if payload is None:
            parts = gather(m, merged_rows(sel, [e for e in entries if e is not None]))
            payload = state_payload("delta", enc, parts, m.seq, m.tick, m.sim_time, m.wall_time, merged=len(pending), limit=limit)
            server.merged_cache[key] = payload
        self.merged += max(0, len(pending) - 1)
        return payload

    def _shared_payload(self, e: Any, sel: Selection, enc: str) -> Payload:
        key = (sel.key, enc)
        payload = e.encoded.get(key)
        limit = self.server.max_state_bytes
        if payload is None or too_big(payload, limit):  # (a fan-out hub's payload is encoded before the bound applies)
            f = e.frame
            payload = state_payload("delta", enc, gather(self.server.mirror, sel.filter(f)), e.seq, f.tick, f.sim_time, f.wall_time, merged=1,
                                    limit=limit)
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
