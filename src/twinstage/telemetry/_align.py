"""Event-time alignment: samples onto the tick grid, with quality, reasons and freshness.

One :class:`~twinstage.telemetry._source_align.Aligner` per source (each source has
its own clock); inside it one :class:`FeedAlign` holding the state of every row the source feeds, across its
channels, as flat arrays (no Python loop over rows or samples, one pass per tick
whatever the number of channels). Each tick the engine hands the aligner every
batch that came in (``Aligner.ingest``) and then asks for the values at the tick's
*target* event time (``Aligner.align``).

Rules (per row; every one has a test in ``tests/telemetry/test_align.py``):

* **hold** — the last good sample at or before the target; **linear** — interpolate
  between the last good sample at or before the target and the first good one after
  it, when both are known and no further apart than the stale limit, else hold;
  **mean** — the mean of the good samples that fell in the tick's window, else hold.
* **late** — a sample older than one already consumed for that row (or flagged LATE
  by its source) is not applied: the row is flagged LATE for that tick and counted.
  Samples that arrive out of order but before their tick was aligned are re-ordered.
* **duplicates** — two samples with the same event time: the last to arrive wins;
  counted.
* **bad** — a non-finite value, or one its source flags BAD, is never used: the
  previous good value is held and the row flagged BAD with the reason, until a good
  sample arrives.
* **uncertain** — used, and the row flagged UNCERTAIN while it is the latest.
* **stale** — no good sample for ``period × stale_after`` seconds (``period`` 0: the
  period observed so far) flags STALE; a row that never had a good sample is STALE
  with the reason *missing* and keeps its initial (scene) value.
* **overflow** — rows whose batches the bounded inbox dropped are flagged OVERFLOW
  for that tick.

Freshness is the age of the last good sample (target − its event time, seconds;
``inf`` before the first one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..state import Quality
from ._reasons import NONFINITE, SOURCE_BAD, SOURCE_UNCERTAIN, _Texts, describe
from ._align_dense import dense
from ._source import Samples

HOLD, LINEAR, MEAN = 0, 1, 2
_MODES = {"hold": HOLD, "linear": LINEAR, "mean": MEAN}
_BAD = np.uint8(Quality.BAD)
_LATE = np.uint8(Quality.LATE)
_STALE = np.uint8(Quality.STALE)
_UNCERTAIN = np.uint8(Quality.UNCERTAIN)
_OVERFLOW = np.uint8(Quality.OVERFLOW)

#: flags this module owns on a fed row (the engine replaces exactly these bits)
FEED_FLAGS = np.uint8(Quality.BAD | Quality.LATE | Quality.STALE | Quality.UNCERTAIN | Quality.OVERFLOW)


def _last(idx: np.ndarray) -> np.ndarray:
    """Mask of the last entry of each run of equal values in sorted ``idx``."""
    m = np.empty(len(idx), dtype=bool)
    if len(idx):
        np.not_equal(idx[1:], idx[:-1], out=m[:-1])
        m[-1] = True
    return m


def _pick(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return a if mask is None else a[mask]


class FeedAlign:
    """Per-row alignment state of every row one source feeds, across its channels, as flat arrays.

    ``specs`` is a list of ``(channel, rows, n_channel, initial_values, mode, period,
    stale_after)``; flat position ``i`` of channel ``c`` covers ``slices[c]``.
    """

    def __init__(self, specs: Sequence[tuple], texts: _Texts | None = None):
        self.lookups: dict[str, np.ndarray] = {}
        self.slices: dict[str, slice] = {}
        self.rows_of: dict[str, np.ndarray] = {}
        modes, periods, stales, held, chans = [], [], [], [], []
        pos = 0
        for channel, rows, n_channel, initial, mode, period, stale_after in specs:
            rows = np.asarray(rows, dtype=np.int64)
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
            k = len(rows)
            lookup = np.full(n_channel, -1, dtype=np.int64)
            lookup[rows] = np.arange(pos, pos + k)
            self.lookups[channel], self.slices[channel], self.rows_of[channel] = lookup, slice(pos, pos + k), rows
            pick = (lambda seq, default, dtype, k=k, order=order: np.full(k, default, dtype=dtype) if seq is None else np.asarray(seq, dtype=dtype)[order])
            modes.append(np.array([_MODES[m] for m in mode], dtype=np.uint8)[order] if mode is not None else np.zeros(k, np.uint8))
            periods.append(pick(period, 0.0, np.float64))
            stales.append(pick(stale_after, 3.0, np.float64))
            held.append(np.asarray(initial, dtype=np.float64)[rows])
            chans += [channel] * k
            pos += k
        n = pos
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
        self.mode = cat(modes, np.uint8)
        self.period = cat(periods, np.float64)
        self.stale_after = cat(stales, np.float64)
        self.any_linear = bool((self.mode == LINEAR).any())
        self.any_mean = bool((self.mode == MEAN).any())
        self.held = cat(held, np.float64)  # last good value (the anchor)
        self.out = self.held.copy() if self.any_linear else self.held  # the value at the last target (held, interpolated or mean)
        self.t_good = np.full(n, -np.inf)
        self.t_seen = np.full(n, -np.inf)  # latest event time consumed, good or bad
        self.est_period = np.zeros(n)
        self._lim = np.where(self.period > 0, self.period, 0.0) * self.stale_after
        self._limit_or_inf = np.where(self._lim > 0, self._lim, np.inf)
        self._missing = True
        self.any_unknown_period = bool((self.period <= 0).any())
        self._any_bad = False
        self._any_uncertain = False
        self._seen_hi = -np.inf  # the newest event time consumed on any row
        self.flags = np.zeros(n, np.uint8)  # persisting BAD / UNCERTAIN
        self.tick_flags = np.zeros(n, np.uint8)  # LATE / OVERFLOW of this tick
        self._tick_flagged = False
        self.quality = np.zeros(n, np.uint8)  # all feed flags at the last target
        self.reason_id = np.zeros(n, np.int32)
        self.age = np.full(n, np.inf)
        self.texts = texts or _Texts()
        self._in: list[tuple[Any, ...]] = []
        self._idx_cache: dict[str, tuple[np.ndarray, slice]] = {}
        self._pend: tuple[np.ndarray, ...] | None = None
        self.counts = {"received": 0, "applied": 0, "bad": 0, "late": 0, "duplicates": 0, "overflow": 0, "foreign": 0, "reordered": 0}

    def __len__(self) -> int:
        return len(self.held)

    @property
    def _limit(self) -> np.ndarray:
        """Stale limit per row in seconds (period × stale_after; 0 = none known yet)."""
        return self._lim

    def _set_limit(self, where: Any, lim: np.ndarray) -> None:
        self._lim[where] = lim
        self._limit_or_inf[where] = np.where(lim > 0, lim, np.inf)

    # -- in ------------------------------------------------------------------------------------
    def ingest(self, s: Samples) -> int:
        """Queue one batch (values already in the attribute's unit). Returns the samples for rows not fed here."""
        lookup = self.lookups.get(s.channel)
        if lookup is None:
            self.counts["foreign"] += len(s)
            return len(s)
        rows = s.rows
        v = np.asarray(s.values, dtype=np.float64)
        t, q = s.event_time, s.quality
        foreign = 0
        mine = None
        cached = self._idx_cache.get(s.channel)
        if cached is not None and cached[0] is rows:  # a source re-sending the same rows array (replay)
            idx = cached[1]
        else:
            try:
                idx = lookup[rows]
                if len(rows) and rows.min() < 0:
                    raise IndexError
            except IndexError:
                ok = (rows >= 0) & (rows < len(lookup))
                idx = np.where(ok, lookup[np.where(ok, rows, 0)], -1)
            if len(idx) and idx.min() < 0:
                mine = idx >= 0
                foreign = int(len(idx) - np.count_nonzero(mine))
                idx, v, t, q = idx[mine], v[mine], t[mine], q[mine]
                self.counts["foreign"] += foreign
            elif len(idx) > 1 and idx[-1] - idx[0] == len(idx) - 1 and (np.diff(idx) == 1).all():
                idx = slice(int(idx[0]), int(idx[-1]) + 1)  # a dense run of rows: slices, not gathers
                self._idx_cache[s.channel] = (rows, idx)
        n = len(v)
        if not n:
            return foreign
        # one summing pass each: NaN/inf propagate (a finite overflow to inf only costs the full check)
        v_ok = bool(np.isfinite(np.add.reduce(v)))
        t_ok = bool(np.isfinite(np.add.reduce(t)))
        nf = None
        if not (v_ok and t_ok):
            nonfinite = ~np.isfinite(v) if not v_ok else np.zeros(n, dtype=bool)
            if not t_ok:
                nonfinite |= ~np.isfinite(t)
            nf = np.flatnonzero(nonfinite)
        rid = None
        if s.reason_index is not None and s.reasons:
            ids = np.array([self.texts.id(r) if r else 0 for r in s.reasons], dtype=np.int32)
            ri = np.asarray(s.reason_index)
            if foreign:
                ri = ri[mine]
            rid = np.zeros(n, np.int32)
            nz = np.flatnonzero(ri != 0)  # few: only the flagged samples carry a reason
            rid[nz] = ids[ri[nz]]
        elif s.reason:
            rid = np.full(n, self.texts.id(s.reason), np.int32)
        if nf is not None and len(nf):  # sparse fix-ups: flag BAD, say why, park the time
            if not ((q[nf] & _BAD).all() and rid is not None and (rid[nf] > 0).all()):  # (a source that flagged them already: nothing to do)
                q = q.copy()
                q[nf] |= _BAD
                rid = np.zeros(n, np.int32) if rid is None else rid.copy()
                rid[nf] = np.where(rid[nf] > 0, rid[nf], NONFINITE)
            bad_t = nf[~np.isfinite(t[nf])]
            if len(bad_t):
                t = t.copy()
                t[bad_t] = -np.inf
        self.counts["received"] += n
        self._in.append((idx, t, v, q, rid))
        return foreign

    def overflow(self, channel: str, rows: np.ndarray) -> None:
        lookup = self.lookups.get(channel)
        if lookup is None:
            return
        rows = np.asarray(rows, dtype=np.int64)
        ok = (rows >= 0) & (rows < len(lookup))
        idx = lookup[rows[ok]]
        idx = idx[idx >= 0]
        self.tick_flags[idx] |= _OVERFLOW
        self._tick_flagged = True
        self.counts["overflow"] += len(idx)

    # -- align -----------------------------------------------------------------------------------
    def align(self, target: float) -> None:
        """Values and flags at event time ``target`` into :attr:`out` / :attr:`quality`."""
        parts = self._in
        self._in = []
        if self._pend is not None:
            parts.insert(0, self._pend)
            self._pend = None
        if parts:
            self._consume(parts, target)
        self._finish(target)

    def _consume(self, parts: list[tuple[Any, ...]], target: float) -> None:
        if len(parts) == 1 and isinstance(parts[0][0], slice) and self._dense(*parts[0], target):
            return
        parts = [(np.arange(i.start, i.stop) if isinstance(i, slice) else i, t, v, q, np.zeros(len(v), np.int32) if r is None else r)
                 for i, t, v, q, r in parts]
        if len(parts) == 1:
            idx, t, v, q, rid = parts[0]
        else:
            idx, t, v, q, rid = (np.concatenate(c) for c in zip(*parts))
        late = t < self.t_seen[idx]
        q_any = bool(q.any())
        if q_any:
            late |= (q & _LATE) != 0
        if late.any():
            self.tick_flags[idx[late]] |= _LATE
            self._tick_flagged = True
            self.counts["late"] += int(np.count_nonzero(late))
            keep = ~late
            idx, t, v, q, rid = idx[keep], t[keep], v[keep], q[keep], rid[keep]
        unique = True  # one sample per row (the common replay case: rows ascending, no repeats)
        if len(idx) > 1:
            di = np.diff(idx)
            if not (di > 0).all():  # sorted by (row, event time, arrival)? replay batches are; check in O(n)
                unique = False
                ordered = (di > 0) | ((di == 0) & (np.diff(t) >= 0))
                if not ordered.all():
                    self.counts["reordered"] += int(np.count_nonzero(~ordered))
                    o = np.lexsort((np.arange(len(idx)), t, idx))
                    idx, t, v, q, rid = idx[o], t[o], v[o], q[o], rid[o]
                    di = np.diff(idx)
                dup = (di == 0) & (np.diff(t) == 0)
                if dup.any():  # same row, same event time: the last to arrive wins
                    self.counts["duplicates"] += int(np.count_nonzero(dup))
                    keep = np.append(~dup, True)
                    idx, t, v, q, rid = idx[keep], t[keep], v[keep], q[keep], rid[keep]
        due = t <= target
        if not due.all():
            fut = ~due
            self._pend = (idx[fut], t[fut], v[fut], q[fut], rid[fut])
            idx, t, v, q, rid = idx[due], t[due], v[due], q[due], rid[due]
        if not len(idx):
            return
        self.counts["duplicates"] += int(np.count_nonzero(t == self.t_seen[idx]))
        last = None if unique else _last(idx)
        li = _pick(idx, last)
        self.t_seen[li] = _pick(t, last)
        self._seen_hi = max(self._seen_hi, float(t.max()))
        n_bad = int(np.count_nonzero(q & _BAD)) if q_any else 0
        if n_bad:
            bad = (q & _BAD) != 0
            self.counts["bad"] += n_bad
            lbad = _pick(bad, last)
            rb = li[lbad]
            self.flags[rb] |= _BAD
            self._any_bad = True
            rb_rid = _pick(rid, last)[lbad]
            self.reason_id[rb] = np.where(rb_rid > 0, rb_rid, SOURCE_BAD)
            good = ~bad
            gi, gt, gv, gq, grid = idx[good], t[good], v[good], q[good], rid[good]
            glast = None if unique else _last(gi)
            self.flags[li[~lbad]] &= ~_BAD
        else:
            gi, gt, gv, gq, grid, glast = idx, t, v, q, rid, last
            if self._any_bad:
                self.flags[li] &= ~_BAD
        if not len(gi):
            return
        self.counts["applied"] += len(gi)
        ui = _pick(gi, glast)
        ut = _pick(gt, glast)
        if self.any_unknown_period:  # observed period: running mean of the intervals between good samples
            prev = self.t_good[ui]
            seen = np.isfinite(prev)
            if seen.any():
                cnt = np.bincount(gi, minlength=len(self.held))[ui] if len(gi) > len(ui) else 1
                obs = (ut - prev) / cnt
                ep = self.est_period[ui]
                est = np.where(seen, np.where(ep > 0, 0.8 * ep + 0.2 * obs, obs), ep)
                self.est_period[ui] = est
                per = self.period[ui]
                self._set_limit(ui, np.where(per > 0, per, est) * self.stale_after[ui])
        newv = _pick(gv, glast)
        if self.any_mean:
            m = self.mode[ui] == MEAN
            if m.any():
                n = len(self.held)
                sums = np.bincount(gi, weights=gv, minlength=n)
                cnt = np.bincount(gi, minlength=n)
                newv = np.where(m, sums[ui] / np.maximum(cnt[ui], 1), newv)
        self.held[ui] = newv
        self.t_good[ui] = ut
        if not q_any:
            if self._any_uncertain:
                self.flags[ui] &= ~_UNCERTAIN
            return
        uq = _pick(gq, glast) & _UNCERTAIN
        if uq.any() or self._any_uncertain:
            self.flags[ui] = (self.flags[ui] & ~_UNCERTAIN) | uq
        if uq.any():
            self._any_uncertain = True
            un = uq != 0
            ur = _pick(grid, glast)[un]
            self.reason_id[ui[un]] = np.where(ur > 0, ur, SOURCE_UNCERTAIN)

    _dense = dense  # the replay fast path (its own module)

    def _finish(self, target: float) -> None:
        if self.any_linear:
            np.copyto(self.out, self.held)
        limit = self._limit
        if self.any_linear and self._pend is not None:
            pi, pt, pv, pq, _ = self._pend
            good = (pq & _BAD) == 0
            pi, pt, pv = pi[good], pt[good], pv[good]
            if len(pi):
                first = np.r_[True, pi[1:] != pi[:-1]]
                bi, bt, bv = pi[first], pt[first], pv[first]
                ta = self.t_good[bi]
                span = bt - ta
                sel = (self.mode[bi] == LINEAR) & np.isfinite(ta) & (ta < target) & ((limit[bi] <= 0) | (span <= limit[bi]))
                if sel.any():
                    bi, ta, span, bt, bv = bi[sel], ta[sel], span[sel], bt[sel], bv[sel]
                    w = (target - ta) / span
                    self.out[bi] = self.held[bi] + w * (bv - self.held[bi])
        np.subtract(target, self.t_good, out=self.age)
        stale = self.age > self._limit_or_inf  # limit 0 (no period known yet) never goes stale
        if self._missing:  # rows without a good sample yet are STALE (missing)
            never = self.t_good == -np.inf
            self._missing = bool(never.any())
            stale |= never
        q = self.quality
        np.multiply(stale.view(np.uint8), _STALE, out=q)
        q |= self.flags
        if self._tick_flagged:
            q |= self.tick_flags
            self.tick_flags[:] = 0
            self._tick_flagged = False

    # -- reasons -----------------------------------------------------------------------------------
    def reason(self, i: int) -> str:
        """Why row ``i`` (flat position) is flagged, in words ('' when good)."""
        return describe(self, i)


class ChannelAlign(FeedAlign):
    """A :class:`FeedAlign` over one channel (``lookup`` maps its rows to flat positions)."""

    def __init__(self, channel: str, rows: np.ndarray, n_channel: int, initial: np.ndarray, *,
                 mode: Sequence[str] | None = None, period: Sequence[float] | None = None,
                 stale_after: Sequence[float] | None = None, texts: _Texts | None = None):
        super().__init__([(channel, rows, n_channel, initial, mode, period, stale_after)], texts)
        self.channel = channel
        self.lookup = self.lookups[channel]
        self.rows = self.rows_of[channel]
