"""Recording runs to USD: columnar time samples in their own file, saved atomically.

A recording is a USD layer (``.usdc`` is compact; ``.usda`` is readable) that
sublayers the scene by a relative path and holds, under ``/<root>/TwinState``,
one array attribute per channel with a time sample per recorded tick (time code
= tick number, ``timeCodesPerSecond`` = tick rate). Live values sit in the
session layer of the running stage, never in the recording, so they cannot hide
its samples.

Crash safety: the layer is written when recording starts and then every
``save_every_s`` seconds to a temp file that is renamed over the recording, and
``endTimeCode`` is updated before each save, so a killed run leaves a loadable
file whose time range is exactly what it holds; stale temp files are removed on
start. A save rewrites the whole file, so its cost grows with the recording; the
interval stretches to keep saves under 5 % of the run (``save_interval_s`` is the
current bound on what a kill can lose).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Sdf, Usd, UsdGeom, Vt

from ..state import Frame, StateTable
from ._stage import StageError, tf_error_text
from ._writer import COLUMN_NS, QUALITY_ARRAY, VT_ARRAYS, state_prim_path, write_column_layout


def _temp_prefix(path: Path) -> str:
    """Our save writes ``.<name>.tmp-XXXXXX<ext>`` beside ``path`` and renames it over ``path``."""
    return f".{path.name}.tmp-"


def _usd_or_empty(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head == b"" or head.startswith((b"PXR-USDC", b"#usda"))


def clean_stale_temp_files(path: Path) -> list[Path]:
    """Remove temp files that an interrupted save left next to ``path``.

    That is ours (``.<name>.tmp-*``) and those of ``Layer.Save`` (``<name>.XXXXXX`` and,
    for usda, ``<stem>.XXXXXX``); the latter only when they hold USD data or nothing,
    so a user's ``rec.backup`` text file survives.
    """
    prefix = _temp_prefix(path)
    pat = re.compile(rf"(?:{re.escape(path.name)}|{re.escape(path.stem)})\.[A-Za-z0-9_]{{6}}$")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if not p.is_file() or p == path:
                continue
            if p.name.startswith(prefix) or (pat.fullmatch(p.name) and _usd_or_empty(p)):
                p.unlink()
                removed.append(p)
    return removed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Recorder:
    """A Frame sink writing every ``every``-th tick's full state as array time samples."""

    writes_stage = False
    #: at most this share of wall time goes to periodic saves (the interval grows with the file)
    MAX_SAVE_SHARE = 0.05

    def __init__(self, path: str | os.PathLike[str], *, save_every_s: float = 2.0, every: int = 1, reproducible: bool = False):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".usd", ".usda", ".usdc"):
            raise StageError(f"{self.path}: a recording must be .usd, .usda or .usdc")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.save_every_s = save_every_s
        self.last_save_s = 0.0
        #: leave wall-clock times (start, end) and the command line out of the provenance,
        #: so the same scene, seed and inputs give the same file, byte for byte
        self.reproducible = reproducible
        self.every = every
        self.first_tick: int | None = None
        self.last_tick: int | None = None
        self.saves = 0

    def start(self, twin: Any) -> None:
        self.bind(twin.stage, twin.table, rate=1.0 / twin.clock.dt, provenance=twin.provenance())

    def bind(self, stage: Usd.Stage, table: StateTable, *, rate: float, provenance: dict[str, Any] | None = None) -> None:
        self.table = table
        target = self.path.resolve()
        for used in stage.GetUsedLayers():  # recording over the scene would wipe a base layer
            if used.realPath and Path(used.realPath).resolve() == target:
                raise StageError(f"{self.path}: is a layer of the scene ({used.identifier}); record to a separate file")
        layer = Sdf.Layer.Find(str(self.path))
        if layer is not None and "twinstage" not in layer.customLayerData:  # e.g. the scene of another open stage
            raise StageError(f"{self.path}: is open as a layer that is not a twinstage recording; record to a separate file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(self.path)
        if self.path.exists():
            self.path.unlink()
        if layer is not None:  # still registered from an earlier recording in this process
            layer.Clear()
        else:  # not CreateNew: it writes an empty layer, which reads as no recording at all
            layer = Sdf.Layer.New(Sdf.FileFormat.FindByExtension(self.path.suffix.lower().lstrip(".")), str(self.path))
        if layer is None:
            raise StageError(f"{self.path}: cannot create recording")
        self.layer = layer
        scene = stage.GetRootLayer()
        if not scene.anonymous and scene.realPath:
            rel = os.path.relpath(scene.realPath, self.path.parent.resolve())
            layer.subLayerPaths.append(rel if rel.startswith(".") else f"./{rel}")
        default = stage.GetDefaultPrim()
        if default:
            layer.defaultPrim = default.GetName()
        layer.pseudoRoot.SetInfo("upAxis", UsdGeom.GetStageUpAxis(stage))
        layer.pseudoRoot.SetInfo("metersPerUnit", UsdGeom.GetStageMetersPerUnit(stage))
        layer.timeCodesPerSecond = rate
        layer.framesPerSecond = rate
        self.provenance = dict(provenance or {})
        if self.reproducible:
            self.provenance.pop("command", None)
            self.provenance["reproducible"] = True
            scene_file = self.provenance.get("scene")
            if isinstance(scene_file, str) and os.path.isabs(scene_file):  # where the run happened is not part of it
                self.provenance["scene"] = os.path.relpath(scene_file, self.path.parent.resolve())
        else:
            self.provenance.setdefault("start", _now())
        self.path_in_layer = state_prim_path(stage)
        self._specs = write_column_layout(layer, self.path_in_layer, table)
        self._vt = {name: VT_ARRAYS[ch.type][0] for name, ch in table.channels.items()}
        self._paths = {name: (s[0].path, s[1].path) for name, s in self._specs.items() if name is not None}
        self._tick_path, self._time_path = (s.path for s in self._specs[None])
        self._arrays: dict[str, tuple[Any, Any]] = {}  # last recorded (values, quality) Vt arrays per channel
        self._changed: set[str] = set()
        # Write the layout (prims, channels, units, provenance) at once, so the file
        # reads as a (still empty) recording even if the run dies before its first
        # periodic save.
        self.save()

    def consume(self, frame: Frame) -> None:
        # Channels that changed since the last recorded sample (values or quality; skipped
        # ticks count too). An unchanged channel re-uses the previous sample's arrays:
        # VtArrays share their buffer, so a static channel costs no copy and no memory.
        self._changed.update(frame.changes)
        if frame.tick % self.every:
            return
        layer = self.layer
        t = float(frame.tick)
        changed, arrays = self._changed, self._arrays
        for name, (vpath, qpath) in self._paths.items():
            a = arrays.get(name)
            if a is None or name in changed:
                a = arrays[name] = (self._vt[name](self.table[name]), QUALITY_ARRAY[0](self.table.quality(name)))
            layer.SetTimeSample(vpath, t, a[0])
            layer.SetTimeSample(qpath, t, a[1])
        changed.clear()
        layer.SetTimeSample(self._tick_path, t, frame.tick)
        layer.SetTimeSample(self._time_path, t, frame.sim_time)
        if self.first_tick is None:
            self.first_tick = frame.tick
            layer.startTimeCode = t
        self.last_tick = frame.tick
        if time.monotonic() - self._last_save >= self.save_interval_s:
            self.save()

    @property
    def save_interval_s(self) -> float:
        """Seconds between periodic saves: ``save_every_s``, stretched so saves take at
        most ``MAX_SAVE_SHARE`` of the run (``save_every_s=0`` saves every tick, whatever it costs)."""
        if self.save_every_s <= 0:
            return 0.0
        return max(self.save_every_s, self.last_save_s / self.MAX_SAVE_SHARE)

    def save(self) -> None:
        """Update the time range and provenance, then save atomically."""
        if self.last_tick is not None:
            self.layer.endTimeCode = float(self.last_tick)
        prov = dict(self.provenance)
        if not self.reproducible:
            prov["end"] = _now()
        prov["recordedTicks"] = [self.first_tick if self.first_tick is not None else -1, self.last_tick if self.last_tick is not None else -1]
        self.layer.customLayerData = {"twinstage": _to_vt_dict(prov)}
        t0 = time.monotonic()
        self._write_atomically()
        self.saves += 1
        self._last_save = time.monotonic()
        # A save rewrites the whole file, so it costs more as the recording grows; keep
        # its share of the run at MAX_SAVE_SHARE by saving less often. The ticks a kill
        # can lose are those of the current interval (save_interval_s).
        self.last_save_s = self._last_save - t0


    def _write_atomically(self) -> None:
        """Export the layer to a temp file beside the target, fsync it, rename it over the target.

        Not ``Layer.Save()``: saving a .usdc to the file it was saved to before appends
        the changed sections (crate's incremental save), so a recording saved every few
        seconds grows without bound (a 1000-tick pump run saved every tick: 70 MB
        instead of 0.2 MB). A failed write leaves the previous file as it was.
        """
        tmp = self.path.with_name(f"{_temp_prefix(self.path)}{secrets.token_hex(3)}{self.path.suffix}")
        try:
            if not self.layer.Export(str(tmp)):
                raise StageError(f"{self.path}: cannot write recording")
            with tmp.open("rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def close(self) -> None:
        if getattr(self, "layer", None) is not None:
            self.save()


def _to_vt_dict(d: dict[str, Any]) -> dict[str, Any]:
    """customLayerData wants plain strings/numbers/dicts; lists of mixed things become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _to_vt_dict(v)
        elif isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif v is None:
            out[k] = ""
        else:
            out[k] = json.dumps(v, sort_keys=True, default=str)
    return out


class Recording:
    """Read a recording written by :class:`Recorder`: ticks, sim times, channel arrays."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise StageError(f"{self.path}: no such recording")
        try:
            self.layer = Sdf.Layer.FindOrOpen(str(self.path))
        except Exception as exc:
            raise StageError(f"{self.path}: cannot open recording ({tf_error_text(exc)[:300]})") from None
        if self.layer is None:
            raise StageError(f"{self.path}: cannot open recording")
        self.provenance = dict(self.layer.customLayerData.get("twinstage", {}))
        state = None
        for prim in self.layer.rootPrims:
            child = prim.nameChildren.get("TwinState") if prim.nameChildren else None
            if child is not None:
                state = child
                break
        if state is None:
            raise StageError(f"{self.path}: holds no twinstage recording (no <root>/TwinState prim)")
        self.state_path = state.path
        attrs = state.attributes
        prims = attrs.get(f"{COLUMN_NS}:prims")
        if prims is None:
            raise StageError(f"{self.path}: {state.path} has no {COLUMN_NS}:prims")
        self.prims = tuple(prims.default)
        self.channels: dict[str, np.ndarray] = {}
        self.units: dict[str, str] = {}
        for a in attrs:
            name = a.name
            if name.endswith(":rows"):
                ch = name[len(COLUMN_NS) + 1 : -len(":rows")]
                self.channels[ch] = np.array(a.default, dtype=np.int64)
                u = attrs.get(f"{COLUMN_NS}:{ch}:unit")
                self.units[ch] = u.default if u is not None else ""
        self.times = np.array(self.layer.ListTimeSamplesForPath(state.path.AppendProperty(f"{COLUMN_NS}:tick")), dtype=float)
        self.rate = self.layer.timeCodesPerSecond

    @property
    def ticks(self) -> np.ndarray:
        return self.times.astype(np.int64)

    @property
    def time_range(self) -> tuple[float, float]:
        return self.layer.startTimeCode, self.layer.endTimeCode

    def sim_times(self) -> np.ndarray:
        p = self.state_path.AppendProperty(f"{COLUMN_NS}:simTime")
        return np.array([self.layer.QueryTimeSample(p, t) for t in self.times])

    def channel(self, name: str, quality: bool = False) -> np.ndarray:
        """All recorded values of channel ``name``: shape (ticks, rows[, 3])."""
        if name not in self.channels:
            raise StageError(f"{self.path}: no channel {name!r} (have {', '.join(sorted(self.channels))})")
        suffix = ":quality" if quality else ""
        p = self.state_path.AppendProperty(f"{COLUMN_NS}:{name}{suffix}")
        return np.array([np.asarray(self.layer.QueryTimeSample(p, t)) for t in self.times])

    def series(self, prim: str, name: str) -> np.ndarray:
        """Recorded values of one prim's ``twin:<name>`` over time."""
        try:
            pi = self.prims.index(prim)
        except ValueError:
            raise StageError(f"{self.path}: {prim} is not a recorded prim") from None
        rows = np.flatnonzero(self.channels[name] == pi) if name in self.channels else []
        if len(rows) == 0:
            raise StageError(f"{self.path}: {prim} has no recorded attribute {name!r}")
        return self.channel(name)[:, rows[0]]

    def export_per_prim(self, out: str | os.PathLike[str]) -> Path:
        """Write the recording as per-prim ``twin:<name>`` time samples (plus mirrored
        ``drives`` attributes such as ``xformOp:translate``) for tools that animate
        prims (Omniverse, usdview). The output sublayers the scene like the recording."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.unlink()
        layer = Sdf.Layer.CreateNew(str(out))
        for sub in self.layer.subLayerPaths:
            src = (self.path.parent / sub).resolve()
            rel = os.path.relpath(src, out.parent.resolve())
            layer.subLayerPaths.append(rel if rel.startswith(".") else f"./{rel}")
        for key in ("upAxis", "metersPerUnit"):
            if self.layer.pseudoRoot.HasInfo(key):
                layer.pseudoRoot.SetInfo(key, self.layer.pseudoRoot.GetInfo(key))
        layer.defaultPrim = self.layer.defaultPrim
        layer.timeCodesPerSecond = self.layer.timeCodesPerSecond
        layer.framesPerSecond = self.layer.framesPerSecond
        layer.startTimeCode = self.layer.startTimeCode
        layer.endTimeCode = self.layer.endTimeCode
        layer.customLayerData = dict(self.layer.customLayerData)
        stage = Usd.Stage.Open(str(self.path))
        with Sdf.ChangeBlock():
            for name, rows in self.channels.items():
                data = self.channel(name)
                vspec = self.layer.GetAttributeAtPath(self.state_path.AppendProperty(f"{COLUMN_NS}:{name}"))
                elem = vspec.typeName.scalarType
                for r, pi in enumerate(rows.tolist()):
                    prim_path = Sdf.Path(self.prims[pi])
                    ps = Sdf.CreatePrimInLayer(layer, prim_path)
                    targets = [(f"twin:{name}", elem)]
                    drives = stage.GetPrimAtPath(prim_path).GetAttribute(f"twin:{name}:drives") if stage else None
                    dv = drives.Get() if drives else ""
                    if dv:
                        driven = stage.GetPrimAtPath(prim_path).GetAttribute(dv)
                        if driven:
                            targets.append((dv, driven.GetTypeName()))
                    for attr_name, vtype in targets:
                        spec = ps.attributes.get(attr_name) or Sdf.AttributeSpec(ps, attr_name, vtype)
                        for ti, t in enumerate(self.times.tolist()):
                            v = data[ti, r]
                            layer.SetTimeSample(spec.path, t, tuple(v.tolist()) if np.ndim(v) else v.item())
        layer.Save()
        return out
