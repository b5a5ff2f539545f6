"""The viewer's own copy of twin state and what it means on screen (no GPU here).

:class:`TwinState` mirrors the twin's channels. It is fed by Frames (live, in
process), by full snapshots (a bridge client, a recording's tick) and marks the
rows that changed; :class:`Overlays` turns dirty rows into per-object colours,
alarm levels, quality codes and transforms, and hands them to the GPU scene.

Thread model: ``TwinState.apply`` may run on the twin's thread (a sink's
``consume``); everything else runs on the thread that draws. A lock guards the
arrays and the dirty sets; drawing takes the dirty rows and works on copies.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..state import Channel, Frame, Quality, Replica
from . import _colormap as cm

log = logging.getLogger("twinstage.viewer")

_OOR = np.uint8(Quality.OUT_OF_RANGE)
_BAD = np.uint8(Quality.BAD)
_STALEISH = np.uint8(Quality.STALE | Quality.LATE)
_EST = np.uint8(Quality.ESTIMATED)


class TwinState:
    """Channels of a twin as the viewer knows them: metadata, values, quality, dirty rows."""

    def __init__(self, prims: Sequence[str], channels: Mapping[str, Channel], values: Mapping[str, np.ndarray],
                 quality: Mapping[str, np.ndarray] | None = None, *, tick: int = 0, sim_time: float = 0.0):
        self.prims = tuple(prims)
        self.prim_index = {p: i for i, p in enumerate(self.prims)}
        self.channels = dict(channels)
        # values, quality and dirty rows live in one twinstage.state.Replica (the same mirror the bridge and its client keep)
        self._replica = Replica({k: (c.offset, len(c), c.type) for k, c in self.channels.items()}, track_dirty=True, known=True)
        for k in self.channels:
            if k in values:
                self._replica.values[k][...] = values[k]
            if quality and k in quality:
                self._replica.quality[k][...] = quality[k]
        self.values = self._replica.values
        self.quality = self._replica.quality
        self.tick = tick
        self.sim_time = sim_time
        self.wall_time = 0.0
        self._lock = threading.Lock()
        self._replica.mark_all_dirty()
        self.frames_seen = 0
        # rows of each prim per channel, for the selection panel
        self._rows: dict[str, dict[int, int]] = {k: {int(p): r for r, p in enumerate(c.prim_index)} for k, c in self.channels.items()}

    @classmethod
    def from_table(cls, table: Any) -> TwinState:
        """Copy a :class:`~twinstage.state.StateTable` (its current values and quality)."""
        return cls(table.prims, table.channels, {k: table[k] for k in table.channels}, {k: table.quality(k) for k in table.channels})

    # -- feeding ---------------------------------------------------------------------
    def apply(self, frame: Frame) -> None:
        """Take one Frame's changes (any thread)."""
        with self._lock:
            self._replica.apply(frame)
            self.tick, self.sim_time, self.wall_time = frame.tick, frame.sim_time, frame.wall_time
            self.frames_seen += 1

    def set_all(self, values: Mapping[str, np.ndarray], quality: Mapping[str, np.ndarray] | None = None, *,
                tick: int | None = None, sim_time: float | None = None) -> None:
        """Replace whole channels (a recording's tick, a bridge snapshot); rows that differ become dirty."""
        with self._lock:
            for name, v in values.items():
                cur = self.values.get(name)
                if cur is None:
                    continue
                v = np.asarray(v, dtype=cur.dtype).reshape(cur.shape)
                q = np.asarray(quality[name], np.uint8) if quality is not None and name in quality else self.quality[name]
                neq = v != cur
                if neq.ndim == 2:
                    neq = neq.any(axis=1)
                neq |= q != self.quality[name]
                rows = np.flatnonzero(neq)
                if len(rows):
                    cur[rows] = v[rows]
                    self.quality[name][rows] = q[rows]
                    self._replica.mark_dirty(name, rows)
            if tick is not None:
                self.tick = int(tick)
            if sim_time is not None:
                self.sim_time = float(sim_time)

    def take_dirty(self) -> dict[str, np.ndarray]:
        """Rows changed since the last call, per channel (drawing thread)."""
        with self._lock:
            return self._replica.take_dirty()

    def mark_all_dirty(self) -> None:
        with self._lock:
            self._replica.mark_all_dirty()

    # -- reading -------------------------------------------------------------------------
    def attributes(self, prim_index: int) -> list[str]:
        return [k for k, rows in self._rows.items() if prim_index in rows]

    def row(self, prim_index: int, name: str) -> int | None:
        return self._rows.get(name, {}).get(prim_index)

    def value(self, prim_index: int, name: str) -> tuple[Any, int] | None:
        r = self.row(prim_index, name)
        if r is None:
            return None
        with self._lock:
            v = self.values[name][r]
            q = int(self.quality[name][r])
        if self.channels[name].type == "vec3":
            return tuple(float(c) for c in v), q
        return v.item(), q

    def numeric_channels(self) -> list[str]:
        return [k for k, c in self.channels.items() if c.type in ("float", "int", "bool")]


def quality_names(q: int) -> list[str]:
    return [f.name.lower().replace("_", " ") for f in Quality if f.value and q & f.value]


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


class Drives:
    """Twin channels that drive transform ops (``twin:<name>:drives = xformOp:translate`` …).

    For a driven prim whose local transform is ``A · M(value) · B`` (row-vector
    USD order: ops after the driven one, the op, ops before it), world =
    ``A · M(v) · B · parentWorld``; ``A``, ``B`` and ``parentWorld`` are read from
    the stage once.
    """

    OPS = ("translate", "scale", "rotateX", "rotateY", "rotateZ")

    def __init__(self, stage: Any, state: TwinState, n_objects: int, time: Any = None):
        from pxr import Usd, UsdGeom

        self.groups: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        if stage is None:
            return
        tc = Usd.TimeCode.Default() if time is None else time
        cache = UsdGeom.XformCache(tc)
        for name, ch in state.channels.items():
            targets = [(r, d) for r, d in enumerate(ch.drives) if d and d.startswith("xformOp:")]
            if not targets:
                continue
            by_op: dict[str, list] = {}
            for r, d in targets:
                pi = int(ch.prim_index[r])
                if pi >= n_objects:
                    continue
                prim = stage.GetPrimAtPath(state.prims[pi])
                if not prim:
                    continue
                xf = UsdGeom.Xformable(prim)
                ops = xf.GetOrderedXformOps() if xf else []
                names = [op.GetOpName() for op in ops]
                if d not in names:
                    log.info("viewer: %s.twin:%s drives %s, which is not in its xformOpOrder; ignored", state.prims[pi], name, d)
                    continue
                op_type = d.split(":")[1]
                if op_type not in self.OPS:
                    log.info("viewer: %s.twin:%s drives %s; only %s are animated", state.prims[pi], name, d, ", ".join(self.OPS))
                    continue
                k = names.index(d)
                a = np.eye(4)
                for op in ops[k + 1:]:
                    a = np.array(op.GetOpTransform(tc)) @ a
                b = np.eye(4)
                for op in ops[:k]:
                    b = np.array(op.GetOpTransform(tc)) @ b
                # row-vector: local = M(op_last) … M(op_0); ops after k are applied outside → on the left
                parent = np.array(cache.GetParentToWorldTransform(prim)) if not xf.GetResetXformStack() else np.eye(4)
                by_op.setdefault(op_type, []).append((r, pi, a, b, parent))
            for op_type, items in by_op.items():
                rows = np.array([i[0] for i in items])
                objs = np.array([i[1] for i in items])
                a = np.stack([i[2] for i in items])
                bp = np.stack([i[3] @ i[4] for i in items])  # ops before the driven one, then the parent: fixed
                self.groups.append((name, op_type, rows, objs, a, bp, bool(np.allclose(a, np.eye(4))), len(ch)))
        self.channels = {g[0] for g in self.groups}

    def update(self, state: TwinState, dirty: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """New world matrices of objects whose driving channels changed: (objects, matrices)."""
        objs_out, mats_out = [], []
        for name, op_type, rows, objs, a, bp, a_is_identity, n_rows in self.groups:
            d = dirty.get(name)
            if d is None or not len(d):
                continue
            mask = np.zeros(n_rows, bool)
            mask[d] = True
            sel = np.flatnonzero(mask[rows])
            if not len(sel):
                continue
            v = np.asarray(state.values[name][rows[sel]], dtype=np.float64)
            if op_type == "translate" and a_is_identity:
                # T(v)·BP: rows 0..2 are BP's, row 3 is [v, 1]·BP (the common case, no 4×4 products)
                world = bp[sel].copy()
                world[:, 3, :] = np.einsum("ni,nij->nj", v.reshape(-1, 3), bp[sel, :3, :]) + bp[sel, 3, :]
            else:
                world = a[sel] @ _op_matrices(op_type, v) @ bp[sel]
            ok = np.isfinite(world).all(axis=(1, 2))
            objs_out.append(objs[sel][ok])
            mats_out.append(world[ok])
        if not objs_out:
            return None
        return np.concatenate(objs_out), np.concatenate(mats_out)


def _op_matrices(op_type: str, v: np.ndarray) -> np.ndarray:
    n = len(v)
    m = np.tile(np.eye(4), (n, 1, 1))
    if op_type == "translate":
        m[:, 3, :3] = v.reshape(n, 3)
    elif op_type == "scale":
        s = v.reshape(n, -1)
        s = np.repeat(s, 3, axis=1) if s.shape[1] == 1 else s
        m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = s[:, 0], s[:, 1], s[:, 2]
    else:  # rotateX/Y/Z in degrees, row-vector convention (as Gf)
        a = np.radians(v.reshape(n))
        c, s = np.cos(a), np.sin(a)
        i, j = {"rotateX": (1, 2), "rotateY": (2, 0), "rotateZ": (0, 1)}[op_type]
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, s, -s, c
    return m


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
