"""Why a fed value is flagged, in words: interned reason texts and the per-row description."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..state import Quality

_MAX_TEXTS = 65536  # distinct reasons kept (a file's bad cells each name their line); beyond: a generic one
NONFINITE, SOURCE_BAD, SOURCE_UNCERTAIN = 1, 2, 3  #: ids of the built-in texts


class _Texts:
    """Interned reason texts (ids are small ints stored per row)."""

    def __init__(self) -> None:
        self.texts = ["", "non-finite value", "bad (flagged by its source)", "uncertain (flagged by its source)"]
        self.ids = {t: i for i, t in enumerate(self.texts)}

    def id(self, text: str) -> int:
        i = self.ids.get(text)
        if i is None:
            if len(self.texts) >= _MAX_TEXTS:
                return 2
            i = self.ids[text] = len(self.texts)
            self.texts.append(text)
        return i


def describe(fa: Any, i: int) -> str:
    """The reason row ``i`` (flat position) of a :class:`~twinstage.telemetry._align.FeedAlign` is flagged ('' when good)."""
    q = int(fa.quality[i])
    out = []
    if not np.isfinite(fa.t_good[i]):
        out.append("missing: no good sample yet")
    elif q & Quality.STALE:
        per = fa.period[i] if fa.period[i] > 0 else fa.est_period[i]
        out.append(f"stale: last good sample {fa.age[i]:.3g} s ago (period {per:.3g} s × {fa.stale_after[i]:g})")
    if q & Quality.BAD:
        out.append(f"bad: {fa.texts.texts[int(fa.reason_id[i])] or 'rejected'}; holding the previous good value")
    if q & Quality.UNCERTAIN:
        out.append(f"uncertain: {fa.texts.texts[int(fa.reason_id[i])] or 'flagged by its source'}")
    if q & Quality.LATE:
        out.append("late: a sample older than one already applied arrived (not applied)")
    if q & Quality.OVERFLOW:
        out.append("overflow: the inbox was full and dropped samples for this value")
    return "; ".join(out)
