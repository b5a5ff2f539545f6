"""The heads-up display: legend, label badges, selection panel, alarm list, timeline, status.

Drawn in a second pass over the 3D view in screen coordinates (logical pixels,
origin at the bottom left). All flat shapes of a frame are one mesh with vertex
colours; text comes from a pool of :class:`pygfx.Text` objects whose strings
only change when their content does (text layout is the expensive part).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pygfx as gfx

from ._colormap import nice_ticks, srgb_lut_to_linear

PANEL_BG = (0.06, 0.07, 0.09, 0.82)
BADGE_BG = (0.10, 0.12, 0.15, 0.85)
WARN_BG = (0.80, 0.45, 0.00, 0.92)
ALARM_BG = (0.78, 0.05, 0.05, 0.92)
GREY_BG = (0.35, 0.35, 0.38, 0.90)
SELECT_BG = (0.00, 0.45, 0.60, 0.92)
WHITE = (1.0, 1.0, 1.0, 1.0)
DIM = (0.75, 0.78, 0.82, 1.0)


@dataclass
class Badge:
    obj: int
    x: float  # anchor in screen px (bottom-left origin)
    y: float
    text: str
    level: int = 0
    quality: int = 0
    selected: bool = False
    priority: float = 0.0


class Hud:
    def __init__(self) -> None:
        self.scene = gfx.Scene()
        self.camera = gfx.ScreenCoordsCamera()
        self._rect_mesh: gfx.Mesh | None = None
        self._rect_capacity = 0
        self._texts: list[gfx.Text] = []
        self._text_state: list[tuple] = []
        self._used = 0
        self._quads: list[tuple[float, float, float, float, tuple]] = []
        self._gradients: list[tuple[float, float, float, float, np.ndarray]] = []
        self.size = (1, 1)
        self.timeline_rect: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in screen px (bottom-left)

    # -- primitives -------------------------------------------------------------------
    def begin(self, width: float, height: float) -> None:
        self.size = (float(width), float(height))
        self._quads = []
        self._gradients = []
        self._used = 0
        self.timeline_rect = None
        self.obstacles: list[tuple[float, float, float, float]] = []  # panels that badges avoid

    def rect(self, x: float, y: float, w: float, h: float, color) -> None:
        self._quads.append((x, y, w, h, tuple(color)))

    def gradient(self, x: float, y: float, w: float, h: float, colors_srgb: np.ndarray) -> None:
        """A vertical colour bar, bottom = first colour."""
        self._gradients.append((x, y, w, h, np.asarray(colors_srgb)))

    def text(self, s: str, x: float, y: float, *, size: float = 13, color=WHITE, anchor: str = "bottom-left") -> tuple[float, float]:
        """Place a text; returns its (width, height) in px."""
        i, w, h = self._text(s, size=size, color=color, anchor=anchor)
        self.place(i, x, y)
        return w, h

    def _text(self, s: str, *, size: float, color, anchor: str) -> tuple[int, float, float]:
        """Lay out a text (not yet placed): (slot, width, height)."""
        i = self._used
        self._used += 1
        if i >= len(self._texts):
            t = gfx.Text(text=" ", font_size=size, anchor=anchor, screen_space=False,
                         material=gfx.TextMaterial(color=color, aa=True, depth_test=False, alpha_mode="blend"),
                         render_order=10)
            self._texts.append(t)
            self._text_state.append(())
            self.scene.add(t)
        t = self._texts[i]
        state = (s, size, anchor)
        if self._text_state[i] != state:
            t.font_size = size
            t.anchor = anchor
            t.set_text(s)  # after the size: the layout (and so the extent) uses the current font size
            self._text_state[i] = state
            self._extent = getattr(self, "_extent", {})
            bb = t.get_geometry_bounding_box()
            self._extent[i] = (0.0, size) if bb is None else (float(bb[1][0] - bb[0][0]), float(bb[1][1] - bb[0][1]))
        if tuple(t.material.color) != tuple(color):
            t.material.color = color
        t.visible = False
        w, h = self._extent[i]
        return i, w, h

    def place(self, i: int, x: float, y: float) -> None:
        t = self._texts[i]
        t.local.position = (round(x), round(y), 0)
        t.visible = True

    def measure(self, s: str, size: float = 13) -> float:
        """Rough width of a text in px (0.52 em per character) for layout before the text exists."""
        return 0.52 * size * len(s)

    def end(self) -> None:
        for t in self._texts[self._used:]:
            t.visible = False
        quads = list(self._quads)
        pos, col = [], []
        for x, y, w, h, c in quads:
            pos.append([[x, y, 0], [x + w, y, 0], [x + w, y + h, 0], [x, y + h, 0]])
            col.append([c] * 4)
        for x, y, w, h, cs in self._gradients:
            n = len(cs) - 1  # quads between consecutive colour stops, interpolated along the bar
            for k in range(n):
                y0, y1 = y + h * k / n, y + h * (k + 1) / n
                c0, c1 = (*cs[k][:3], 1.0), (*cs[k + 1][:3], 1.0)
                pos.append([[x, y0, 0], [x + w, y0, 0], [x + w, y1, 0], [x, y1, 0]])
                col.append([c0, c0, c1, c1])
        n = len(pos)
        if n == 0:
            if self._rect_mesh is not None:
                self._rect_mesh.visible = False
            return
        positions = np.asarray(pos, np.float32).reshape(-1, 3)
        colors = np.asarray(col, np.float64).reshape(-1, 4)
        colors[:, :3] = srgb_lut_to_linear(colors[:, :3])  # pygfx takes vertex colours as linear light
        colors = colors.astype(np.float32)
        if self._rect_mesh is None or n > self._rect_capacity:
            cap = max(64, n * 2)
            self._rect_capacity = cap
            idx = np.arange(cap)[:, None, None] * 4 + np.array([[0, 1, 2], [0, 2, 3]])[None]
            geo = gfx.Geometry(indices=idx.reshape(-1, 3).astype(np.int32), positions=np.zeros((cap * 4, 3), np.float32),
                               colors=np.zeros((cap * 4, 4), np.float32))
            mat = gfx.MeshBasicMaterial(color_mode="vertex", depth_test=False, alpha_mode="blend", side="both")
            if self._rect_mesh is not None:
                self.scene.remove(self._rect_mesh)
            self._rect_mesh = gfx.Mesh(geo, mat, render_order=0)
            self.scene.add(self._rect_mesh)
        g = self._rect_mesh.geometry
        g.positions.data[: n * 4] = positions
        g.positions.data[n * 4:] = 0
        g.colors.data[: n * 4] = colors
        g.colors.data[n * 4:] = 0
        g.positions.update_full()
        g.colors.update_full()
        g.indices.draw_range = 0, n * 2
        self._rect_mesh.visible = True

    # -- widgets ------------------------------------------------------------------------
    def legend(self, title: str, vmin: float, vmax: float, lut_srgb: np.ndarray, *, margin: float = 14) -> None:
        W, H = self.size
        bar_h = min(180.0, H * 0.45)
        bar_w = 14.0
        x = W - margin - 8 - bar_w
        y = H / 2 - bar_h / 2
        ticks = nice_ticks(vmin, vmax, 5)
        labels = [_fmt_tick(t, vmax - vmin) for t in ticks]
        ti, tw, th = self._text(title, size=12, color=WHITE, anchor="bottom-right")
        self.place(ti, W - margin - 8, y + bar_h + 8)
        lw = 0.0
        for t, label in zip(ticks, labels):
            if vmax > vmin:
                ty = y + bar_h * (t - vmin) / (vmax - vmin)
                self.rect(x - 4, ty - 0.5, 4, 1, WHITE)
                i, w, _ = self._text(label, size=11, color=DIM, anchor="middle-right")
                self.place(i, x - 7, ty)
                lw = max(lw, w)
        panel_w = max(bar_w + lw + 16, tw + 8) + 8
        self.rect(W - margin - panel_w, y - 10, panel_w, bar_h + th + 26, PANEL_BG)
        self.obstacles.append((W - margin - panel_w, y - 10, W - margin, y + bar_h + th + 16))
        step = max(1, (len(lut_srgb) - 1) // 32)
        stops = lut_srgb[::step]
        if (len(lut_srgb) - 1) % step:
            stops = np.concatenate([stops, lut_srgb[-1:]])  # always end on the top colour
        self.gradient(x, y, bar_w, bar_h, stops)

    def badges(self, badges: list[Badge], max_n: int) -> None:
        placed: list[tuple[float, float, float, float]] = list(self.obstacles)
        W, H = self.size
        shown = 0
        for b in sorted(badges, key=lambda b: -b.priority):
            if shown >= max_n:
                break
            if not (0 <= b.x <= W and 0 <= b.y <= H):
                continue
            i, tw, _ = self._text(b.text, size=12, color=WHITE, anchor="middle-left")
            w = tw + 10
            h = 18.0
            x0 = min(max(b.x - w / 2, 2), W - w - 2)
            y0 = b.y + 8
            ok = False
            for _ in range(5):
                box = (x0, y0, x0 + w, y0 + h)
                if not any(_overlap(box, p) for p in placed):
                    ok = True
                    break
                y0 += h + 2
            if not ok and not b.selected:
                continue
            placed.append((x0, y0, x0 + w, y0 + h))
            bg = SELECT_BG if b.selected else ALARM_BG if b.level >= 2 else WARN_BG if b.level == 1 else GREY_BG if b.quality else BADGE_BG
            self.rect(b.x - 0.75, b.y, 1.5, y0 - b.y, (*bg[:3], 0.9))
            self.rect(x0, y0, w, h, bg)
            self.place(i, x0 + 5, y0 + h / 2)
            shown += 1

    def panel(self, lines: list[tuple[str, tuple]], x: float, y_top: float, *, size: float = 12, min_w: float = 0,
              align: str = "left") -> float:
        """Lines of (text, colour) in a box whose top-left (top-right with ``align="right"``) is at
        (x, y_top); returns the bottom y."""
        if not lines:
            return y_top
        lh = size * 1.45
        made = [self._text(s, size=size, color=c, anchor="middle-left") for s, c in lines]
        w = max([m[1] for m in made] + [min_w]) + 16
        h = lh * len(lines) + 10
        x0 = x - w if align == "right" else x
        self.rect(x0, y_top - h, w, h, PANEL_BG)
        self.obstacles.append((x0, y_top - h, x0 + w, y_top))
        for k, (i, _, _) in enumerate(made):
            self.place(i, x0 + 8, y_top - 6 - lh * (k + 0.5))
        return y_top - h

    def timeline(self, frac: float, label: str, playing: bool, markers: np.ndarray | None = None) -> None:
        W, H = self.size
        x0, x1 = 46.0, W - 16.0
        y = 14.0
        self.rect(0, 0, W, 40, PANEL_BG)
        self.obstacles.append((0, 0, W, 40))
        self.rect(x0, y, x1 - x0, 6, (0.30, 0.32, 0.36, 1.0))
        f = float(np.clip(frac, 0, 1))
        self.rect(x0, y, (x1 - x0) * f, 6, (0.20, 0.60, 0.95, 1.0))
        if markers is not None and len(markers):
            for m in np.asarray(markers)[:400]:
                self.rect(x0 + (x1 - x0) * float(m) - 0.75, y - 3, 1.5, 12, (0.95, 0.15, 0.10, 0.9))
        self.rect(x0 + (x1 - x0) * f - 3, y - 4, 6, 14, WHITE)
        self.text("||" if playing else ">", 14, y + 3, size=14, color=WHITE, anchor="middle-left")
        self.text(label, x0, y + 10, size=11, color=DIM, anchor="bottom-left")
        self.timeline_rect = (x0, 0.0, x1, 40.0)


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _fmt_tick(t: float, span: float) -> str:
    if span >= 50:
        return f"{t:.0f}"
    if span >= 5:
        return f"{t:.1f}".rstrip("0").rstrip(".") if abs(t - round(t)) > 1e-9 else f"{t:.0f}"
    if span >= 0.5:
        return f"{t:.2f}"
    return f"{t:.3g}"
