"""What the twin's state means on screen: alarm thresholds, the colour mapping and
:class:`Overlays`, which turns a :class:`TwinState`'s dirty rows into per-object colours, alarm
levels, quality codes and transforms for the GPU scene (CPU side, no GPU here)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..state import Quality
from . import _colormap as cm
from ._drives import Drives
from ._state import TwinState

_OOR = np.uint8(Quality.OUT_OF_RANGE)
_BAD = np.uint8(Quality.BAD)
_STALEISH = np.uint8(Quality.STALE | Quality.LATE)
_EST = np.uint8(Quality.ESTIMATED)


@dataclass
class AlarmLimits:
    """Thresholds of one attribute: values at or beyond ``warn_*`` warn, beyond ``alarm_*`` alarm."""

    warn_low: float = -math.inf
    warn_high: float = math.inf
    alarm_low: float = -math.inf
    alarm_high: float = math.inf

    @classmethod
    def parse(cls, spec: Any) -> AlarmLimits:
        """``95`` (alarm above 95), ``(None, 95)`` (low, high alarm), or a dict with
        ``warn``/``alarm``/``warn_low``/``alarm_low``/``warn_high``/``alarm_high``."""
        if isinstance(spec, AlarmLimits):
            return spec
        if isinstance(spec, (int, float)):
            return cls(alarm_high=float(spec))
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            lo, hi = spec
            return cls(alarm_low=-math.inf if lo is None else float(lo), alarm_high=math.inf if hi is None else float(hi))
        if isinstance(spec, Mapping):
            d = dict(spec)
            out = cls()
            for key, attr in (("warn", "warn_high"), ("alarm", "alarm_high"), ("high", "alarm_high"), ("low", "alarm_low")):
                if key in d:
                    d.setdefault(attr, d.pop(key))
            for attr in ("warn_low", "warn_high", "alarm_low", "alarm_high"):
                if d.get(attr) is not None:
                    setattr(out, attr, float(d[attr]))
            return out
        raise ValueError(f"alarm spec {spec!r}: use a number, (low, high) or a dict with warn/alarm keys")


#: USD attributes a scene may author per twin attribute to set its alarm thresholds
USD_ALARM_ATTRS = {"warnLow": "warn_low", "warnHigh": "warn_high", "alarmLow": "alarm_low", "alarmHigh": "alarm_high"}


@dataclass
class ColorBy:
    attribute: str
    cmap: str = "viridis"
    vmin: float | None = None
    vmax: float | None = None
    lut: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    auto: bool = False  #: range chosen by the viewer: it widens (never narrows) to keep new values in view

    def __post_init__(self):
        self.lut = cm.colormap(self.cmap)


class Overlays:
    """Per-object overlay state computed from a :class:`TwinState` (CPU side).

    Objects ``0..n-1`` are the twin prims in the state's order (the scene puts
    them first). Results are pushed through the ``gpu`` object's
    ``set_overlay`` / ``set_state`` / ``set_matrices`` (a :class:`GpuScene`).
    """

    def __init__(self, state: TwinState, n_objects: int, *, alarms: Mapping[str, Any] | None = None, stage: Any = None,
                 drives: Drives | None = None):
        self.state = state
        self.n = min(n_objects, len(state.prims))
        self.color_by: ColorBy | None = None
        self.limits: dict[str, dict[int, AlarmLimits]] = {}  # channel -> row -> limits (USD-authored)
        self.global_limits: dict[str, AlarmLimits] = {}
        for name, spec in (alarms or {}).items():
            self.global_limits[name] = AlarmLimits.parse(spec)
        if stage is not None:
            self._read_usd_limits(stage)
        self._arrays: dict[str, tuple[np.ndarray, ...]] = {}
        self._build_limit_arrays()
        self.level = {k: np.zeros(self.n, np.uint8) for k in state.channels}
        self.qcode = {k: np.zeros(self.n, np.uint8) for k in state.channels}
        #: ESTIMATED values that carry an uncertainty (a companion ``<name>Std`` channel): drawn with a light hatch
        self.uncertain = {k: np.zeros(self.n, bool) for k in state.channels if f"{k}Std" in state.channels}
        self.external: dict[int, tuple[int, str]] = {}  # object -> (level, message) set by fidelity monitors etc.
        self.drives = drives
        self.alarm_count = 0

    # -- configuration ----------------------------------------------------------------
    def _read_usd_limits(self, stage: Any) -> None:
        for name, ch in self.state.channels.items():
            if ch.type not in ("float", "int", "bool"):  # a bool compares as 0/1 (twin:anomalyAlarm:alarmHigh = 1)
                continue
            for r, pi in enumerate(ch.prim_index.tolist()):
                prim = stage.GetPrimAtPath(self.state.prims[pi])
                if not prim:
                    continue
                lim = None
                for usd_name, field_name in USD_ALARM_ATTRS.items():
                    a = prim.GetAttribute(f"twin:{name}:{usd_name}")
                    v = a.Get() if a and a.HasAuthoredValue() else None
                    if v is not None:
                        lim = lim or AlarmLimits()
                        setattr(lim, field_name, float(v))
                if lim is not None:
                    self.limits.setdefault(name, {})[r] = lim

    def _build_limit_arrays(self) -> None:
        self._arrays = {}
        for name, ch in self.state.channels.items():
            if ch.type not in ("float", "int", "bool"):
                continue
            n = len(ch)
            arr = [np.full(n, -np.inf), np.full(n, np.inf), np.full(n, -np.inf), np.full(n, np.inf)]
            g = self.global_limits.get(name)
            if g is not None:
                for k, v in enumerate((g.warn_low, g.warn_high, g.alarm_low, g.alarm_high)):
                    arr[k][:] = v
            for r, lim in self.limits.get(name, {}).items():
                for k, v in enumerate((lim.warn_low, lim.warn_high, lim.alarm_low, lim.alarm_high)):
                    if math.isfinite(v):
                        arr[k][r] = v
            if any(np.isfinite(a).any() for a in arr):
                self._arrays[name] = tuple(arr)

    def set_alarm_limits(self, attribute: str, spec: Any) -> None:
        self.global_limits[attribute] = AlarmLimits.parse(spec)
        self._build_limit_arrays()
        self.state.mark_all_dirty()

    def set_color_by(self, attribute: str | None, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> None:
        if attribute is None:
            self.color_by = None
            return
        if attribute not in self.state.channels:
            raise ValueError(f"cannot colour by {attribute!r}: no such twin attribute (have {', '.join(sorted(self.state.channels))})")
        ch = self.state.channels[attribute]
        if ch.type not in ("float", "int", "bool"):
            raise ValueError(f"cannot colour by {attribute!r}: it is a {ch.type}, not a number")
        cb = ColorBy(attribute, cmap, vmin, vmax, auto=vmin is None or vmax is None)
        if cb.vmin is None or cb.vmax is None:
            lo, hi = self.auto_range(attribute)
            cb.vmin = lo if cb.vmin is None else cb.vmin
            cb.vmax = hi if cb.vmax is None else cb.vmax
        self.color_by = cb

    def auto_range(self, attribute: str) -> tuple[float, float]:
        """Declared limits when both are finite and not absurdly wide, else the current data range (padded)."""
        ch = self.state.channels[attribute]
        v = np.asarray(self.state.values[attribute], dtype=np.float64)
        v = v[np.isfinite(v)]
        lo_lim, hi_lim = float(np.min(ch.lo)) if len(ch) else -np.inf, float(np.max(ch.hi)) if len(ch) else np.inf
        if len(v):
            dlo, dhi = float(v.min()), float(v.max())
        else:
            dlo, dhi = 0.0, 1.0
        if np.isfinite(lo_lim) and np.isfinite(hi_lim) and hi_lim > lo_lim:
            span = hi_lim - lo_lim
            # limits 100× wider than the data would flatten every colour: use the data then
            if dhi - dlo > span / 100 or not len(v):
                return lo_lim, hi_lim
        if dhi <= dlo:
            pad = abs(dlo) * 0.05 or 1.0
            return dlo - pad, dhi + pad
        pad = (dhi - dlo) * 0.05
        return dlo - pad, dhi + pad

    def set_external(self, obj: int, level: int, message: str = "") -> None:
        if level <= 0:
            self.external.pop(obj, None)
        else:
            self.external[obj] = (int(level), message)

    # -- per draw ----------------------------------------------------------------------
    def update(self, gpu: Any, dirty: Mapping[str, np.ndarray], *, recolor: bool = False) -> None:
        st = self.state
        n = self.n
        affected: list[np.ndarray] = []
        with st._lock:
            snap = {k: (st.values[k][rows].copy(), st.quality[k][rows].copy()) for k, rows in dirty.items() if k in st.values}
        for name, rows in dirty.items():
            if name not in snap:
                continue
            ch = st.channels[name]
            vals, q = snap[name]
            objs = ch.prim_index[rows].astype(np.int64)
            keep = objs < n
            objs, vals, q = objs[keep], vals[keep], q[keep]
            rows = rows[keep]
            if not len(objs):
                continue
            lvl = np.where(q & _OOR, 2, 0).astype(np.uint8)
            arr = self._arrays.get(name)
            if arr is not None:
                v = vals.astype(np.float64)
                wl, wh, al, ah = (a[rows] for a in arr)
                lvl = np.maximum(lvl, np.where((v <= wl) | (v >= wh), 1, 0).astype(np.uint8))
                lvl = np.maximum(lvl, np.where((v <= al) | (v >= ah), 2, 0).astype(np.uint8))
            self.level[name][objs] = lvl
            self.qcode[name][objs] = np.where(q & _BAD, 2, np.where(q & _STALEISH, 1, 0))
            if name in self.uncertain:
                self.uncertain[name][objs] = (q & _EST) != 0
            affected.append(objs)
        cb = self.color_by
        if cb is not None and cb.auto and cb.attribute in dirty:
            with st._lock:
                v = np.asarray(st.values[cb.attribute][dirty[cb.attribute]], dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v) and (v.min() < cb.vmin or v.max() > cb.vmax):
                lo, hi = min(cb.vmin, float(v.min())), max(cb.vmax, float(v.max()))
                pad = (hi - lo) * 0.05
                cb.vmin = lo - pad if v.min() < cb.vmin else cb.vmin
                cb.vmax = hi + pad if v.max() > cb.vmax else cb.vmax
                recolor = True
        if cb is not None and (recolor or cb.attribute in dirty):
            ch = st.channels[cb.attribute]
            rows = np.arange(len(ch)) if recolor else dirty[cb.attribute]
            with st._lock:
                vals = np.asarray(st.values[cb.attribute][rows], dtype=np.float64)
            objs = ch.prim_index[rows].astype(np.int64)
            keep = objs < n
            rgb = cm.srgb_lut_to_linear(cm.apply(vals[keep], cb.lut, cb.vmin, cb.vmax))
            gpu.set_overlay(objs[keep], rgb, 1.0)
        if affected:
            mark = np.zeros(n, bool)
            for a in affected:
                mark[a] = True
            self._push_state(gpu, np.flatnonzero(mark))
        if self.drives is not None and dirty:
            moved = self.drives.update(st, dirty)
            if moved is not None:
                gpu.set_matrices(*moved)

    def _push_state(self, gpu: Any, objs: np.ndarray) -> None:
        if not len(objs):
            return
        lv = np.zeros(len(objs), np.uint8)
        qc = np.zeros(len(objs), np.uint8)
        for name in self.level:
            lv = np.maximum(lv, self.level[name][objs])
            qc = np.maximum(qc, self.qcode[name][objs])
        if self.external:
            ext = np.array([self.external.get(int(o), (0, ""))[0] for o in objs], np.uint8)
            lv = np.maximum(lv, ext)
        if self.uncertain:  # shader code 3: estimated with uncertainty (stale and bad take precedence)
            est = np.zeros(len(objs), bool)
            for a in self.uncertain.values():
                est |= a[objs]
            qc = np.where((qc == 0) & est, 3, qc).astype(np.uint8)
        gpu.set_state(objs, alarm=lv.astype(np.float32), quality=qc.astype(np.float32))

    def refresh_external(self, gpu: Any, objs: Sequence[int]) -> None:
        self._push_state(gpu, np.asarray(sorted(set(objs)), dtype=np.int64))

    def clear_color(self, gpu: Any) -> None:
        if self.n:
            gpu.set_overlay(np.arange(self.n), np.zeros((self.n, 3)), 0.0)

    def object_level(self, obj: int) -> int:
        lv = max((int(a[obj]) for a in self.level.values()), default=0)
        return max(lv, self.external.get(obj, (0, ""))[0])

    def object_quality(self, obj: int) -> int:
        return max((int(a[obj]) for a in self.qcode.values()), default=0)

    def alarm_objects(self) -> np.ndarray:
        if not self.n:
            return np.zeros(0, np.int64)
        lv = np.zeros(self.n, np.uint8)
        for a in self.level.values():
            lv = np.maximum(lv, a)
        for o, (level, _) in self.external.items():
            if o < self.n:
                lv[o] = max(lv[o], level)
        return np.flatnonzero(lv)

    def channel_level(self, name: str, obj: int) -> int:
        a = self.level.get(name)
        return int(a[obj]) if a is not None and obj < len(a) else 0

__all__ = ["AlarmLimits", "ColorBy", "Overlays", "USD_ALARM_ATTRS"]
