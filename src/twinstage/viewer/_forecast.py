"""A what-if forecast in the HUD: the predicted band of one attribute, ghosted, above the timeline.

:meth:`Viewer.show_forecast` takes a :class:`twinstage.scenarios.WhatIf` result (``whatif()``)
or a bridge ``forecast`` message (``Client.whatif(...)["forecasts"][key]``). The strip shows,
left = now to right = the horizon, the spread over the predictions: min–max as a faint band,
p10–p90 stronger, the mean as a line, with the value range and the horizon as labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BAND = (0.95, 0.55, 0.10)  #: orange, sRGB
COLUMNS = 160  #: at most this many quads per band layer


@dataclass
class Forecast:
    key: str
    unit: str
    times: np.ndarray
    band: dict[str, np.ndarray]
    runs: int

    @classmethod
    def of(cls, result: Any, key: str | None = None) -> "Forecast":
        if isinstance(result, dict):  # a bridge forecast message
            k = key or f"{result['prim']}.{result['attribute']}"
            band = {q: np.asarray(result[q], float) for q in ("min", "p10", "mean", "p90", "max")}
            return cls(k, result.get("unit", ""), np.asarray(result["times"], float), band, int(result.get("runs", 0)))
        if key is None:
            raise ValueError("show_forecast(result, key): which attribute (Prim.attribute) of the what-if result")
        band = result.band(key)
        ok = [r for r in result.runs if r.status == "ok"]
        return cls(key, ok[0].units.get(key, "") if ok else "", np.asarray(result.times, float), band, len(ok))


def layout(w: float, h: float) -> tuple[float, float, float, float]:
    """The strip's plot area (x0, y0, x1, y1), screen px from the bottom left: just above the timeline."""
    return 46.0, 52.0, w - 16.0, min(52.0 + 90.0, h * 0.45)


def draw(hud: Any, fc: Forecast, w: float, h: float) -> dict[str, float]:
    """Draw ``fc`` into ``hud``; returns the mapping used (for hit tests and pixel tests)."""
    from ._hud import DIM, PANEL_BG

    x0, y0, x1, y1 = layout(w, h)
    b = fc.band
    finite = np.concatenate([b["min"][np.isfinite(b["min"])], b["max"][np.isfinite(b["max"])]])
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    pad = 0.08 * (vmax - vmin)
    vmin, vmax = vmin - pad, vmax + pad
    tmax = float(fc.times[-1]) if len(fc.times) else 1.0
    hud.rect(0, y0 - 8, w, y1 - y0 + 24, PANEL_BG)
    hud.obstacles.append((0, y0 - 8, w, y1 + 16))
    n = len(fc.times)
    if n:
        edges = np.linspace(0, n, min(n, COLUMNS) + 1).astype(int)
        sx = (x1 - x0) / n

        def y_of(v: float) -> float:
            return y0 + (y1 - y0) * (v - vmin) / (vmax - vmin)

        for a, c in zip(edges[:-1], edges[1:]):
            if c <= a:
                continue
            xa, wa = x0 + a * sx, (c - a) * sx
            lo, hi = float(np.nanmin(b["min"][a:c])), float(np.nanmax(b["max"][a:c]))
            p10, p90 = float(np.nanmin(b["p10"][a:c])), float(np.nanmax(b["p90"][a:c]))
            m = float(np.nanmean(b["mean"][a:c]))
            hud.rect(xa, y_of(lo), wa, max(1.0, y_of(hi) - y_of(lo)), (*BAND, 0.28))
            hud.rect(xa, y_of(p10), wa, max(1.0, y_of(p90) - y_of(p10)), (*BAND, 0.45))
            hud.rect(xa, y_of(m) - 1.0, wa, 2.0, (*BAND, 1.0))
    hud.rect(x0 - 1, y0, 1.5, y1 - y0, DIM)  # "now"
    u = f" {fc.unit}" if fc.unit not in ("", "1") else ""
    hud.text(f"what-if {fc.key}: {fc.runs} prediction{'s' if fc.runs != 1 else ''}, next {tmax:g} s", x0, y1 + 2, size=11, color=DIM)
    hud.text(f"{vmax:.4g}{u}", x1, y1, size=10, color=DIM, anchor="top-right")
    hud.text(f"{vmin:.4g}{u}", x1, y0, size=10, color=DIM, anchor="bottom-right")
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "vmin": vmin, "vmax": vmax, "tmax": tmax}
