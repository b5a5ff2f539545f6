"""The inspect panel of the selected asset: its path, kind, model and layer, every twin attribute with
unit, role, alarm level, quality flags, uncertainty, telemetry age and the sensor/model counterpart,
and where the values come from (provenance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..state import Quality
from . import _colormap as cm
from ._colormap import AMBER, CYAN, DIM, GREY, RED, TEXT
from ._state import quality_names


def selection_lines(viewer: Any, o: int) -> list[tuple[str, tuple]]:
    """The inspect panel of object ``o`` of a :class:`~._viewer.Viewer`: (text, colour) lines."""
    geo = viewer.geo
    ob = geo.objects[o]
    lines: list[tuple[str, tuple]] = [(ob.path, CYAN)]
    prim = viewer.stage.GetPrimAtPath(ob.path) if viewer.stage is not None else None
    meta = []
    if prim:
        for a, label in (("twin:kind", "kind"), ("twin:model", "model"), ("twin:assetId", "id")):
            at = prim.GetAttribute(a)
            v = at.Get() if at else None
            if v:
                meta.append(f"{label} {v}")
    if not meta:
        meta.append(ob.type_name or "prim")
        if ob.kind:
            meta.append(f"kind {ob.kind}")
    lines.append(("  ".join(meta), DIM))
    if ob.layer:
        lines.append((f"defined in {Path(ob.layer).name}", DIM))
    st = viewer.state
    if ob.twin and st is not None:
        meas_of = {sc: (p, c) for p, (c, src, sc) in viewer._measures.items() if src == o}
        names = list(st.attributes(o))
        ages = freshness(viewer.twin)
        for n in names:
            if n.endswith("Std") and n[:-3] in names:
                continue  # shown as ± on its attribute
            v = st.value(o, n)
            ch = st.channels[n]
            r = st.row(o, n)
            if isinstance(v[0], tuple):
                val = "(" + ", ".join(f"{c:.2f}" for c in v[0]) + f") {cm.unit_label(ch.unit)}"
            else:
                val = cm.fmt_value(v[0], ch.unit)
            q = v[1]
            flags = quality_names(q)
            lvl = viewer.overlays.channel_level(n, o) if viewer.overlays else 0
            tag = "  ALARM" if lvl >= 2 else "  warn" if lvl == 1 else ""
            color = RED if lvl >= 2 else AMBER if lvl == 1 else GREY if q & (Quality.BAD | Quality.STALE | Quality.LATE) else TEXT
            extra = f"  [{', '.join(flags)}]" if flags else ""
            sd = st.value(o, f"{n}Std") if f"{n}Std" in names else None
            if sd is not None and isinstance(sd[0], float) and sd[0] > 0:  # an estimate's uncertainty (assimilation)
                val = val.replace(" ", f" ± {cm.fmt_value(sd[0], '').strip()} ", 1) if " " in val else f"{val} ± {sd[0]:.3g}"
            age = ages.get(n)
            if age is not None and r < len(age) and not np.isnan(age[r]):  # fed by telemetry: age of its last good sample
                extra += "  no sample yet" if np.isinf(age[r]) else f"  age {age[r]:.1f} s"
            line = f"{n} = {val}  {ch.role[r]}{tag}{extra}"
            if n in meas_of:  # simulated here, measured by a sensor
                p, c = meas_of[n]
                mv = st.value(p, c)
                if mv is not None and not isinstance(mv[0], tuple):
                    line += f"  (measured {cm.fmt_value(mv[0], st.channels[c].unit)})"
            if o in viewer._measures and viewer._measures[o][0] == n:  # a sensor reading: show the model's value
                _, src, sc = viewer._measures[o]
                sv = st.value(src, sc)
                if sv is not None and not isinstance(sv[0], tuple):
                    line += f"  (simulated {cm.fmt_value(sv[0], st.channels[sc].unit)}"
                    if isinstance(v[0], float) and isinstance(sv[0], float):
                        line += f", Δ {v[0] - sv[0]:+.3g}"
                    line += ")"
            lines.append((line, color))
        ext = viewer.overlays.external.get(o) if viewer.overlays else None
        if ext:
            lines.append((f"alarm: {ext[1] or 'raised externally'}", RED))
        lines.append((provenance_line(viewer, o), DIM))
    return lines


def freshness(twin: Any) -> dict:
    """Per-channel age (s) of the last good telemetry sample, from a live twin (empty otherwise)."""
    fn = getattr(twin, "freshness", None) if twin is not None else None
    try:
        return dict(fn()) if callable(fn) else {}
    except Exception:
        return {}


def provenance_line(viewer: Any, o: int) -> str:
    """Where object ``o``'s values come from: the live twin and its model's parameter hash, a recording, …"""
    st = viewer.state
    model = ""
    if viewer.twin is not None:
        asset = viewer.twin.assets.get(st.prims[o]) if hasattr(viewer.twin, "assets") else None
        if asset is not None and asset.model and asset.model in viewer.twin.models:
            from ..models import parameters_hash

            m = viewer.twin.models[asset.model]
            model = f"model {asset.model} #{parameters_hash(m.parameters())[:8]}"
    if viewer.mode == "playback" and viewer.playback is not None:
        prov = viewer.playback.provenance
        tool = prov.get("tool", "")
        return f"recorded tick {st.tick} by {tool or 'twinstage'}; params {str(prov.get('parametersHash', ''))[:8]}"
    src = "live twin" if viewer.mode.startswith("live") else "remote twin" if viewer.mode == "remote" else "authored values"
    return f"{src}, tick {st.tick}" + (f"; {model}" if model else "")


__all__ = ["freshness", "provenance_line", "selection_lines"]
