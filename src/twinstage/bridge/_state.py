"""Server-side state: the mirror of the twin's values, subscriptions, the frame ring, payloads.

Everything here runs on the server's event-loop thread; the tick thread only
hands Frames over. The mirror is a copy of the StateTable kept in step with the
Frames (``apply``), so snapshots are consistent at a known ``seq`` without ever
reading the table while the twin writes it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from . import _binary
from ._jsonio import dumps
from ._messages import UNBOUNDED
from ..state._replica import Replica

def _limit(v: float) -> float:
    return float(np.clip(v, -UNBOUNDED, UNBOUNDED))


class Mirror(Replica):
    """The server's :class:`~twinstage.state.Replica` of the twin, plus the attribute table and the table it copies."""

    def __init__(self, table: Any):
        lay = Replica.from_table(table)
        super().__init__(lay.layout, known=True)
        self.values, self.quality = lay.values, lay.quality
        self.table = table
        self.channels = dict(table.channels)

    def attribute_table(self) -> list[dict[str, Any]]:
        out = []
        prims = self.table.prims
        for ch in self.channels.values():
            for r, pi in enumerate(ch.prim_index.tolist()):
                out.append({"index": ch.offset + r, "prim": prims[pi], "attribute": ch.name, "type": ch.type, "unit": ch.unit,
                            "min": _limit(ch.lo[r]), "max": _limit(ch.hi[r]), "role": str(ch.role[r]), "drives": ch.drives[r],
                            "description": ch.description[r]})
        out.sort(key=lambda a: a["index"])
        return out


class Selection:
    """What a subscription matches: per channel, a row mask (None = every row)."""

    def __init__(self, mirror: Mirror, prefixes: Sequence[str], attributes: Sequence[str]):
        self.key = (tuple(sorted(set(prefixes))), tuple(sorted(set(attributes))))
        prims = mirror.table.prims
        pre = [p.rstrip("/") for p in prefixes]
        if any(p == "" for p in pre):
            pre = []
        prim_ok = None
        if pre:
            prim_ok = np.array([any(p == x or p.startswith(x + "/") for x in pre) for p in prims], dtype=bool)
        attrs = set(attributes)
        self.masks: dict[str, np.ndarray | None] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.count = 0
        for name, ch in mirror.channels.items():
            if attrs and name not in attrs:
                continue
            if prim_ok is None:
                mask = None
                rows = np.arange(len(ch))
            else:
                m = prim_ok[ch.prim_index]
                if not m.any():
                    continue
                mask = None if m.all() else m
                rows = np.flatnonzero(m)
            self.masks[name] = mask
            self.rows[name] = rows
            self.count += len(rows)
        self.unknown_attributes = sorted(attrs - set(mirror.channels))

    def filter(self, frame: Any) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """The frame's changes this selection matches: [(channel, rows, values, quality)]."""
        out = []
        for name, change in frame.changes.items():
            if name not in self.masks:
                continue
            mask = self.masks[name]
            if mask is None:
                out.append((name, change.rows, change.values, change.quality))
            else:
                keep = mask[change.rows]
                if keep.any():
                    out.append((name, change.rows[keep], change.values[keep], change.quality[keep]))
        return out

    def touched_rows(self, frame: Any) -> list[tuple[str, np.ndarray]]:
        return [(name, rows) for name, rows, _, _ in self.filter(frame)]

    def contains(self, name: str, row: int) -> bool:
        if name not in self.masks:
            return False
        mask = self.masks[name]
        return True if mask is None else bool(mask[row])


@dataclass
class Parts:
    """A state message's arrays, split into scalar and vec3 entries."""

    indices: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    vec3_indices: np.ndarray
    vec3_values: np.ndarray
    vec3_quality: np.ndarray

    @property
    def count(self) -> int:
        return len(self.indices) + len(self.vec3_indices)


_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)
_EMPTY_Q = np.zeros(0, dtype=np.uint8)


def gather(mirror: Mirror, items: Iterable[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]]) -> Parts:
    """Concatenate per-channel (name, rows, values, quality) into message arrays.

    ``values``/``quality`` None: take them from the mirror (merged deltas, snapshots).
    """
    si, sv, sq, vi, vv, vq = [], [], [], [], [], []
    for name, rows, values, quality in items:
        if not len(rows):
            continue
        ch = mirror.channels[name]
        if values is None:
            values = mirror.values[name][rows]
            quality = mirror.quality[name][rows]
        idx = rows.astype(np.int64) + ch.offset
        if ch.type == "vec3":
            vi.append(idx)
            vv.append(np.asarray(values, dtype=np.float64).reshape(-1, 3))
            vq.append(quality)
        else:
            si.append(idx)
            sv.append(np.asarray(values, dtype=np.float64))
            sq.append(quality)
    cat = np.concatenate
    return Parts(
        cat(si) if si else _EMPTY_I, cat(sv) if sv else _EMPTY_F, cat(sq) if sq else _EMPTY_Q,
        cat(vi) if vi else _EMPTY_I, cat(vv) if vv else np.zeros((0, 3)), cat(vq) if vq else _EMPTY_Q,
    )


def encode_values(parts: Parts, seq: int, tick: int, sim_time: float, wall_time: float, merged: int, *, full: bool, part: int = 0,
                  n_parts: int = 1) -> str:
    """A compact ``values`` message, quality only where not 0: ``full`` = every subscribed value in
    snapshot order (no indices), else the entries in ``parts`` with their indices (``part`` of ``n_parts``: :mod:`._split`)."""
    q = np.concatenate([parts.quality, parts.vec3_quality])
    bad = np.flatnonzero(q)
    flagged = np.concatenate([parts.indices, parts.vec3_indices])[bad]
    return dumps({"type": "values", "seq": seq, "tick": tick, "simTime": sim_time, "wallTime": wall_time, "merged": int(merged),
                  "part": part, "parts": n_parts, "indices": _EMPTY_I if full else parts.indices, "values": parts.values,
                  "vec3Indices": _EMPTY_I if full else parts.vec3_indices,
                  "vec3Values": parts.vec3_values.reshape(-1), "flagged": flagged, "flaggedQuality": q[bad]})


def encode_state(kind: str, encoding: str, parts: Parts, seq: int, tick: int, sim_time: float, wall_time: float, *, merged: int = 1,
                 reason: str = "subscribe", part: int = 0, n_parts: int = 1) -> bytes | str:
    """A snapshot or delta as JSON text or a binary frame (``compact`` snapshots are plain JSON snapshots);
    ``part`` of ``n_parts``: one slice of a message too big to go whole (:mod:`._split`)."""
    if encoding == "binary":
        return _binary.encode(_binary.DELTA if kind == "delta" else _binary.SNAPSHOT, seq, tick, sim_time, wall_time, parts.indices, parts.values,
                              parts.quality, parts.vec3_indices, parts.vec3_values, parts.vec3_quality, merged=merged, reason=reason, part=part,
                              parts=n_parts)
    msg: dict[str, Any] = {"type": kind, "seq": seq, "tick": tick, "simTime": sim_time, "wallTime": wall_time}
    if kind == "delta":
        msg["merged"] = int(merged)
    else:
        msg["reason"] = reason
    msg.update(part=part, parts=n_parts, indices=parts.indices, values=parts.values, quality=parts.quality, vec3Indices=parts.vec3_indices,
               vec3Values=parts.vec3_values.reshape(-1), vec3Quality=parts.vec3_quality)
    return dumps(msg)


@dataclass
class RingEntry:
    seq: int
    frame: Any
    size: int
    encoded: dict[tuple[Any, str], bytes | str | None] = field(default_factory=dict)
    touched: dict[Any, bool] = field(default_factory=dict)


class Ring:
    """The last frames (bounded by count and by total changed entries) for merges and resumes."""

    def __init__(self, max_frames: int = 600, max_entries: int = 2_000_000):
        self.max_frames = max_frames
        self.max_entries = max_entries
        self.entries: collections.deque[RingEntry] = collections.deque()
        self.total = 0
        self._by_seq: dict[int, RingEntry] = {}

    def append(self, seq: int, frame: Any) -> RingEntry:
        e = RingEntry(seq, frame, frame.n_changed)
        self.entries.append(e)
        self._by_seq[seq] = e
        self.total += e.size
        if len(self.entries) > 8:  # encoded payloads are kept for the newest frames only (clients at most a few behind)
            self.entries[-9].encoded.clear()
        while self.entries and (len(self.entries) > self.max_frames or self.total > self.max_entries) and len(self.entries) > 1:
            old = self.entries.popleft()
            self.total -= old.size
            del self._by_seq[old.seq]
        return e

    def get(self, seq: int) -> RingEntry | None:
        return self._by_seq.get(seq)

    @property
    def oldest(self) -> int:
        return self.entries[0].seq if self.entries else 0

    def since(self, seq: int) -> list[RingEntry] | None:
        """Entries after ``seq``, or None if the ring no longer holds all of them."""
        if not self.entries:
            return []
        if seq + 1 < self.entries[0].seq:
            return None
        return [e for e in self.entries if e.seq > seq]


def merged_rows(selection: Selection, entries: Iterable[RingEntry]) -> list[tuple[str, np.ndarray, None, None]]:
    """Union of the rows the selection matches over several frames (values come from the mirror)."""
    acc: dict[str, list[np.ndarray]] = {}
    for e in entries:
        for name, rows in selection.touched_rows(e.frame):
            acc.setdefault(name, []).append(rows)
    return [(name, np.unique(np.concatenate(parts)), None, None) for name, parts in acc.items()]
