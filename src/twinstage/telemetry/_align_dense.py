"""The replay fast path of :class:`~twinstage.telemetry._align.FeedAlign`: a contiguous run of rows,
one good (or few flagged) sample each, none late or ahead of the target, written as whole slices.

Kept apart from the general path (``FeedAlign._consume``) because it is the hot loop of every
replay: no gathers, no sort, no per-row work; it hands back ``False`` untouched whenever the
general rules (late, duplicates among unknown periods, samples ahead of the target) are needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..state import Quality
from ._reasons import SOURCE_BAD, SOURCE_UNCERTAIN

_BAD = np.uint8(Quality.BAD)
_LATE = np.uint8(Quality.LATE)
_UNCERTAIN = np.uint8(Quality.UNCERTAIN)


def dense(fa: Any, sl: slice, t: np.ndarray, v: np.ndarray, q: np.ndarray, rid: Any, target: float) -> bool:
    """``FeedAlign._dense``: one good sample for each of a run of rows, none late or ahead of the target: contiguous
    slices only (the replay case). Returns False, touching nothing, when the general path is needed."""
    seen = fa.t_seen[sl]
    q_all = int(np.bitwise_or.reduce(q)) if len(q) else 0  # every flag present, in one pass
    q_any = q_all != 0
    t_lo, t_hi = float(t.min()), float(t.max())
    fresh = t_lo > fa._seen_hi  # newer than anything consumed: nothing late, no duplicates (the usual case)
    if t_hi > target or (not fresh and (t < seen).any()) or (q_any and (q_all & _LATE or fa.any_unknown_period)):
        return False
    fa._seen_hi = max(fa._seen_hi, t_hi)
    if not fresh:
        fa.counts["duplicates"] += int(np.count_nonzero(t == seen))
    if q_any:  # flagged samples among them (few): sparse fix-ups after whole-run writes, still no gathers of the run
        seen[...] = t
        bi = np.flatnonzero((q & _BAD) != 0) if q_all & _BAD else np.zeros(0, np.int64)
        held, t_good, flags = fa.held[sl], fa.t_good[sl], fa.flags[sl]
        keep_v, keep_t = held[bi], t_good[bi]
        held[...] = v
        t_good[...] = t
        held[bi], t_good[bi] = keep_v, keep_t  # a bad sample never replaces the held good value
        if fa._any_bad or fa._any_uncertain:
            held_unc = flags[bi] & _UNCERTAIN  # a bad sample leaves the held (uncertain) value's flag
            flags &= ~np.uint8(_BAD | _UNCERTAIN)
            flags[bi] |= held_unc
        if len(bi):
            fa.counts["bad"] += len(bi)
            flags[bi] |= _BAD
            fa._any_bad = True
            fa.reason_id[sl][bi] = SOURCE_BAD if rid is None else np.where(rid[bi] > 0, rid[bi], SOURCE_BAD)
        ui = np.flatnonzero((q & (_UNCERTAIN | _BAD)) == _UNCERTAIN) if q_all & _UNCERTAIN else ()
        if len(ui):
            flags[ui] |= _UNCERTAIN
            fa._any_uncertain = True
            fa.reason_id[sl][ui] = SOURCE_UNCERTAIN if rid is None else np.where(rid[ui] > 0, rid[ui], SOURCE_UNCERTAIN)
        fa.counts["applied"] += len(v) - len(bi)
        return True
    if fa.any_unknown_period:
        prev = fa.t_good[sl]
        ok = np.isfinite(prev)
        if ok.any():
            ep = fa.est_period[sl]
            obs = t - prev
            est = np.where(ok, np.where(ep > 0, 0.8 * ep + 0.2 * obs, obs), ep)
            fa.est_period[sl] = est
            fa._set_limit(sl, np.where(fa.period[sl] > 0, fa.period[sl], est) * fa.stale_after[sl])
    seen[...] = t
    fa.held[sl] = v
    fa.t_good[sl] = t
    if fa._any_bad or fa._any_uncertain:
        fa.flags[sl] &= ~np.uint8(_BAD | _UNCERTAIN)
    fa.counts["applied"] += len(v)
    return True
