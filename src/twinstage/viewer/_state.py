"""The viewer's own copy of twin state (no GPU here).

:class:`TwinState` mirrors the twin's channels. It is fed by Frames (live, in
process), by full snapshots (a bridge client, a recording's tick) and marks the
rows that changed; :class:`~._overlays.Overlays` turns dirty rows into what is drawn.
:func:`open_scene` opens the scene to show, :func:`state_from_stage` reads the values authored
in it, :func:`measured_pairs` its sensors' ``twin:measures`` relationships.

Thread model: ``TwinState.apply`` may run on the twin's thread (a sink's
``consume``); everything else runs on the thread that draws. A lock guards the
arrays and the dirty sets; drawing takes the dirty rows and works on copies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..state import Channel, Frame, Quality, Replica


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


def open_scene(scene: Any) -> tuple[Any, str]:
    """``(stage, source name)`` of a USD path (opened with clear errors) or a ``Usd.Stage``."""
    from pxr import Usd

    if isinstance(scene, (str, os.PathLike)):
        from ..usd import open_stage

        return open_stage(scene), str(scene)
    if isinstance(scene, Usd.Stage):
        root = scene.GetRootLayer()
        return scene, root.realPath or root.identifier
    raise TypeError(f"scene must be a USD path or a Usd.Stage, not {type(scene).__name__}")


def state_from_stage(stage: Any, prims: Sequence[str] | None = None) -> TwinState | None:
    """A :class:`TwinState` of the values authored in a stage (None if it has no twin prims)."""
    from ..state import Declaration, StateTable
    from ..usd import read_asset, read_attributes, twin_prims

    if prims is None:
        prims = [str(p.GetPath()) for p in twin_prims(stage)]
    if not prims:
        return None
    decls = []
    for path in prims:
        prim = stage.GetPrimAtPath(path)
        if not prim:
            from ..usd import StageError

            raise StageError(f"{path}: not in the scene (a recording or remote twin of another scene?)")
        read_asset(prim)
        for d, value in read_attributes(prim):
            decls.append(Declaration(path, d.name, d.type, value, d.unit, d.min, d.max, d.role, d.drives, d.description))
    return TwinState.from_table(StateTable(list(prims), decls))


def measured_pairs(stage: Any, state: TwinState) -> dict[int, tuple[str, int, str]]:
    """Sensors: prim index → (its measured channel, source prim index, source channel) from ``twin:measures``."""
    out: dict[int, tuple[str, int, str]] = {}
    if stage is None or state is None:
        return out
    for pi, path in enumerate(state.prims):
        prim = stage.GetPrimAtPath(path)
        rel = prim.GetRelationship("twin:measures") if prim else None
        targets = rel.GetForwardedTargets() if rel else []
        if not targets:
            continue
        t = targets[0]
        if not t.IsPropertyPath() or not t.name.startswith("twin:"):
            continue
        src_pi = state.prim_index.get(str(t.GetPrimPath()))
        src_ch = t.name[len("twin:"):]
        if src_pi is None or src_ch not in state.channels:
            continue
        mine = [n for n in state.attributes(pi) if state.channels[n].role[state.row(pi, n)] == "measured"]
        if mine:
            out[pi] = (mine[0], src_pi, src_ch)
    return out


__all__ = ["TwinState", "measured_pairs", "open_scene", "quality_names", "state_from_stage"]
