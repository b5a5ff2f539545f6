"""Colormaps as small sRGB control-point tables (no matplotlib needed), unit labels and value formatting,
and the text colours of the HUD's panels."""

from __future__ import annotations

import numpy as np

# sRGB control points, evenly spaced over 0..1 (sampled from the published maps)
_TABLES: dict[str, list[tuple[float, float, float]]] = {
    "viridis": [(0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553), (0.164, 0.471, 0.558),
                (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441), (0.478, 0.821, 0.318), (0.741, 0.873, 0.150),
                (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.087, 0.045, 0.224), (0.258, 0.039, 0.406), (0.416, 0.090, 0.433), (0.578, 0.148, 0.404),
                (0.735, 0.216, 0.330), (0.865, 0.317, 0.226), (0.954, 0.469, 0.099), (0.988, 0.645, 0.040), (0.964, 0.843, 0.273),
                (0.988, 0.998, 0.645)],
    "coolwarm": [(0.230, 0.299, 0.754), (0.348, 0.466, 0.888), (0.484, 0.622, 0.975), (0.619, 0.744, 0.999), (0.754, 0.830, 0.961),
                 (0.865, 0.865, 0.865), (0.958, 0.780, 0.692), (0.969, 0.658, 0.537), (0.932, 0.519, 0.406), (0.852, 0.341, 0.285),
                 (0.706, 0.016, 0.150)],
    "turbo": [(0.190, 0.072, 0.232), (0.275, 0.408, 0.859), (0.158, 0.736, 0.923), (0.106, 0.930, 0.706), (0.460, 0.996, 0.340),
              (0.785, 0.935, 0.204), (0.986, 0.755, 0.230), (0.978, 0.470, 0.104), (0.830, 0.227, 0.023), (0.590, 0.076, 0.005),
              (0.480, 0.016, 0.011)],
}

COLORMAPS = tuple(sorted(_TABLES))

# text colours of the HUD's status line, panels and alarm list (sRGB RGBA)
TEXT = (1.0, 1.0, 1.0, 1.0)
DIM = (0.72, 0.75, 0.80, 1.0)
RED = (1.0, 0.45, 0.40, 1.0)
AMBER = (1.0, 0.75, 0.30, 1.0)
GREY = (0.62, 0.62, 0.66, 1.0)
CYAN = (0.45, 0.85, 1.0, 1.0)


def colormap(name: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` sRGB lookup table of a named colormap (``viridis``, ``inferno``, ``coolwarm``, ``turbo``)."""
    try:
        pts = np.asarray(_TABLES[name], dtype=np.float64)
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}") from None
    x = np.linspace(0.0, 1.0, len(pts))
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, x, pts[:, i]) for i in range(3)], axis=1)


def srgb_lut_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB colours (0..1) to linear light, as the shader expects overlay colours."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def apply(values: np.ndarray, lut: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map values to LUT colours (NaN → mid-grey)."""
    v = np.asarray(values, dtype=np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    scale = (len(lut) - 1) / span
    idx = (v - vmin) * scale + 0.5
    nan = np.isnan(idx)
    if nan.any():
        idx[nan] = 0.0
    idx = np.clip(idx, 0, len(lut) - 1).astype(np.int64)
    out = lut[idx]
    if nan.any():
        out[nan] = 0.5
    return out


def unit_label(unit: str) -> str:
    """How a pint unit string reads on screen (``degC`` → ``°C``, ``1`` → nothing): one rule for every display."""
    from ..units import format_unit

    return format_unit(unit)


def nice_ticks(vmin: float, vmax: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [vmin, vmax]."""
    if not np.isfinite(vmin) or not np.isfinite(vmax) or vmax <= vmin:
        return [vmin]
    raw = (vmax - vmin) / max(n - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = np.ceil(vmin / step) * step
    ticks = list(np.arange(first, vmax + step * 0.001, step))
    return [float(t) for t in ticks]


def fmt_value(v: float, unit: str = "") -> str:
    """A value for a label: 3–4 significant digits and the unit label."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        s = "—"
    elif isinstance(v, (bool, np.bool_)):
        s = "on" if v else "off"
    elif isinstance(v, (int, np.integer)):
        s = str(int(v))
    else:
        a = abs(float(v))
        if a >= 1000:
            s = f"{v:.0f}"
        elif a >= 100:
            s = f"{v:.1f}"
        elif a >= 1:
            s = f"{v:.2f}"
        elif a >= 0.01 or a == 0:
            s = f"{v:.3f}"
        else:
            s = f"{v:.2e}"
    u = unit_label(unit)
    return f"{s} {u}".strip()
