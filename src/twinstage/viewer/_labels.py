"""Label badges over the assets: which attribute each shows, its text, and where it sits on screen.

Which assets get one: all of them up to ``max_labels``, else the alarmed ones, plus the selected one.
The badge of a sensor whose model disagrees says so (``(sim …)``); stale, late and bad values say so too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..state import Quality
from . import _colormap as cm
from ._overlays import Overlays
from ._pick import project
from ._state import TwinState, quality_names

_FLAGGED = Quality.BAD | Quality.STALE | Quality.LATE


def label_value(state: TwinState, overlays: Overlays | None, labels: Any, o: int) -> tuple[str, Any, int, str] | None:
    """(attribute, value, quality, unit) a badge shows for twin object ``o``: the first of ``labels`` (a list)
    it has, else the colour-by attribute, else its most alarmed one, else a measured, state or input value."""
    st = state
    names = st.attributes(o)
    if not names:
        return None
    pick = None
    if isinstance(labels, (list, tuple)):
        pick = next((n for n in labels if n in names), None)
    cb = overlays.color_by if overlays else None
    if pick is None and cb is not None and cb.attribute in names:
        pick = cb.attribute
    if pick is None and overlays is not None:
        lv = [(overlays.channel_level(n, o), n) for n in names]
        lv = [x for x in lv if x[0]]
        if lv:
            pick = max(lv)[1]
    if pick is None:
        meas = [n for n in names if st.channels[n].role[st.row(o, n)] == "measured"]
        state_ = [n for n in names if st.channels[n].role[st.row(o, n)] == "state" and st.channels[n].type != "vec3"]
        inputs = [n for n in names if st.channels[n].role[st.row(o, n)] == "input" and st.channels[n].type != "vec3"]
        pick = (meas or state_ or inputs or [None])[0]
    if pick is None:
        return None
    v = st.value(o, pick)
    if v is None:
        return None
    return pick, v[0], v[1], st.channels[pick].unit


def badges(viewer: Any, w: float, h: float) -> list:
    """The :class:`~._hud.Badge` list of a :class:`~._viewer.Viewer` for a ``w``×``h`` view (empty when labels are off)."""
    from ._hud import Badge

    v = viewer
    if not v.show_labels or v.labels is False or v.overlays is None or not v.quality.labels:
        return []
    ov = v.overlays
    n = ov.n
    if n == 0:
        return []
    alarmed = set(ov.alarm_objects().tolist())
    if n <= v.max_labels or v.labels not in ("auto", True):
        cand = list(range(n))
    else:
        cand = sorted(alarmed)[: v.max_labels]
    if v.selected is not None and v.selected < n and v.selected not in cand:
        cand.append(v.selected)
    if not cand:
        return []
    gpu = v._gpu
    xy, ok = project(v._camera.camera_matrix, _anchors(gpu, cand), w, h)
    out = []
    cb = ov.color_by
    for k, o in enumerate(cand):
        if not ok[k]:
            continue
        lv = label_value(v.state, ov, v.labels, o)
        if lv is None:
            continue
        attr, value, q, unit = lv
        name = v.state.prims[o].rsplit("/", 1)[-1]
        val = cm.fmt_value(value, unit) if not isinstance(value, tuple) else ", ".join(f"{c:.2f}" for c in value)
        text = f"{name}  {val}" if cb is not None and attr == cb.attribute else f"{name}  {attr} {val}"
        if o in v._measures:
            ch, src, src_ch = v._measures[o]
            sim = v.state.value(src, src_ch)
            if sim is not None and isinstance(value, float) and isinstance(sim[0], float):
                if abs(sim[0] - value) > 0.005 * max(abs(value), 1e-9):
                    text += f" (sim {cm.fmt_value(sim[0])})"
        if q & _FLAGGED:
            text += "  " + "/".join(quality_names(q & _FLAGGED)).upper()
        level = ov.object_level(o)
        prio = (100 if o == v.selected else 0) + level * 10 + (1.0 / (1 + k))
        out.append(Badge(o, float(xy[k, 0]), float(xy[k, 1]), text, level, ov.object_quality(o), o == v.selected, prio))
    return out


def _anchors(gpu: Any, cand: Sequence[int]) -> np.ndarray:
    """Where badges point: the top centre of each object's box along the up axis (its origin without geometry)."""
    b = gpu.object_bounds()[cand]
    up = np.array(gpu.up)
    has = np.isfinite(b[:, 0, 0])
    centre = np.where(has[:, None], (b[:, 0] + b[:, 1]) / 2, 0.0)
    top = np.where(has[:, None], centre + up[None, :] * (((b[:, 1] - b[:, 0]) @ up) / 2)[:, None], 0.0)
    for k, o in enumerate(cand):
        if not has[k]:
            top[k] = gpu.object_matrix[o][3, :3] - gpu.origin
    return top


__all__ = ["badges", "label_value"]
