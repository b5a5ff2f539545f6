"""What the HUD shows each frame: the status line, the inspect panel of the selection, the colour
legend, the alarm list, label badges, the playback timeline, a what-if forecast and notes.
:class:`~._hud.Hud` draws them; this module decides what they say."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from . import _colormap as cm
from ._colormap import AMBER, DIM, RED, TEXT
from ._inspect import selection_lines
from ._labels import badges
from ._overlays import Overlays
from ._state import TwinState


def status_line(viewer: Any) -> str:
    """The status line: mode (live, playback, remote, static), tick and sim time, the feed's state."""
    st = viewer.state
    if viewer.mode in ("live", "live-ended"):
        s = f"LIVE  tick {st.tick}  t = {st.sim_time:.1f} s" if st else "LIVE"
    elif viewer.mode == "playback" and viewer.playback is not None:
        s = f"PLAYBACK  {Path(viewer.source).name}"
    elif viewer.mode == "remote":
        s = f"REMOTE  {getattr(viewer._remote, 'url', '')}  tick {st.tick if st else '-'}"
        if viewer._remote is not None and getattr(viewer._remote, "status", ""):
            s += f"  {viewer._remote.status}"
    else:
        s = f"{Path(viewer.source).name}" if viewer.source else "twinstage"
    return s + (f"  {viewer.status_extra}" if viewer.status_extra else "")


def draw_hud(viewer: Any, w: float, h: float) -> None:
    """Lay out one frame of a :class:`~._viewer.Viewer`'s HUD (``viewer._hud``) for a ``w``×``h`` view."""
    hud = viewer._hud
    hud.begin(w, h)
    y = h - 10
    y = hud.panel([(status_line(viewer), TEXT)], 10, y, size=12) - 6
    if viewer.selected is not None:
        y = hud.panel(selection_lines(viewer, viewer.selected), 10, y, size=11) - 6
    ov = viewer.overlays
    if ov is not None and ov.color_by is not None:
        cb = ov.color_by
        unit = cm.unit_label(viewer.state.channels[cb.attribute].unit)
        hud.legend(f"{cb.attribute}" + (f" [{unit}]" if unit else ""), cb.vmin, cb.vmax, cb.lut)
    if ov is not None:
        alarmed = ov.alarm_objects()
        if len(alarmed):
            n_alarm = sum(1 for o in alarmed.tolist() if ov.object_level(o) >= 2)
            n_warn = len(alarmed) - n_alarm
            head = ", ".join(x for x in (f"{n_alarm} alarm{'s' if n_alarm != 1 else ''}" if n_alarm else "",
                                         f"{n_warn} warning{'s' if n_warn != 1 else ''}" if n_warn else "") if x)
            lines = [(head, RED if n_alarm else AMBER)]
            for o in alarmed[:5].tolist():
                lines.append((alarm_line(ov, viewer.state, o), RED if ov.object_level(o) >= 2 else AMBER))
            if len(alarmed) > 5:
                lines.append((f"… and {len(alarmed) - 5} more", DIM))
            hud.panel(lines, w - 10, h - 10, size=12, align="right")
    if ov is not None:
        hud.badges(badges(viewer, w, h), viewer.max_labels)
    if viewer.playback is not None:
        pb = viewer.playback
        frac = pb.index / max(len(pb) - 1, 1)
        sim = viewer.state.sim_time
        hud.timeline(frac, f"tick {pb.tick}  ({pb.index + 1}/{len(pb)})   t = {sim:.1f} s   x{pb.speed:g}   "
                           f"[space] play  [←/→] step  [home/end]", pb.playing, pb.markers(ov) if ov else None)
    if viewer.forecast is not None:
        from ._forecast import draw

        viewer.forecast_area = draw(hud, viewer.forecast, w, h)
    lines = [ln for note in viewer.notes[:3] for ln in wrap(note, max(20, int(w / 7.5)))]
    top = h / 2 if not viewer.geo or viewer.geo.parts or viewer.geo.prototypes else h / 2 + 9 * len(lines)
    if viewer.geo is not None and (viewer.geo.parts or viewer.geo.prototypes):
        top = 30 + 18 * len(lines)  # a scene is drawn: notes go to the bottom
    for k, ln in enumerate(lines):
        hud.text(ln, w / 2, top - 18 * k, size=13, color=DIM, anchor="middle-center")
    hud.end()


def alarm_line(overlays: Overlays, state: TwinState, o: int) -> str:
    """One line of the alarm list: the asset and (up to two of) its alarmed attributes."""
    ov, st = overlays, state
    name = st.prims[o].rsplit("/", 1)[-1]
    parts = []
    for n in st.attributes(o):
        lv = ov.channel_level(n, o)
        if lv:
            v = st.value(o, n)
            parts.append(f"{n} {cm.fmt_value(v[0], st.channels[n].unit)}" + (" (warn)" if lv == 1 else ""))
    ext = ov.external.get(o)
    if ext:
        parts.append(ext[1] or "external alarm")
    return f"{name}: " + ", ".join(parts[:2])


def wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [text]


__all__ = ["alarm_line", "draw_hud", "status_line", "wrap"]
