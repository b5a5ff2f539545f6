"""Playback of a recording (``Recorder`` output): its ticks read one by one into a :class:`TwinState`,
the play/seek/speed position, and where on the timeline alarms start."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..state import Quality
from ._overlays import Overlays
from ._state import TwinState


class Playback:
    """A recording (``Recorder`` output) read tick by tick into a :class:`TwinState`."""

    def __init__(self, path: str | os.PathLike[str], state: TwinState):
        from ..usd._recorder import Recording
        from ..usd._writer import COLUMN_NS

        self.recording = rec = Recording(path)
        self.path = Path(path)
        self.state = state
        if tuple(rec.prims) != tuple(state.prims):
            from ..usd import StageError

            missing = sorted(set(rec.prims) - set(state.prims))
            raise StageError(f"{path}: the recording's prims do not match the scene's twin prims"
                                    f"{' (e.g. ' + missing[0] + ')' if missing else ''}; open the scene it was recorded from")
        self.times = rec.times
        if not len(self.times):
            from ..usd import StageError

            raise StageError(f"{path}: the recording holds no ticks")
        self.rate = float(rec.rate or 10.0)
        self.index = 0
        self.playing = False
        self.speed = 1.0
        self._pos = 0.0
        sp = rec.state_path
        self._paths = {name: (sp.AppendProperty(f"{COLUMN_NS}:{name}"), sp.AppendProperty(f"{COLUMN_NS}:{name}:quality"))
                       for name in rec.channels if name in state.channels}
        self._sim = sp.AppendProperty(f"{COLUMN_NS}:simTime")
        self._markers: np.ndarray | None = None
        self.provenance = rec.provenance

    def __len__(self) -> int:
        return len(self.times)

    @property
    def tick(self) -> int:
        return int(self.times[self.index])

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
        layer = self.recording.layer
        t = float(self.times[i])
        vals, qual = {}, {}
        for name, (vp, qp) in self._paths.items():
            v = layer.QueryTimeSample(vp, t)
            q = layer.QueryTimeSample(qp, t)
            if v is not None:
                vals[name] = np.asarray(v)
            if q is not None:
                qual[name] = np.asarray(q, dtype=np.uint8)
        sim = layer.QueryTimeSample(self._sim, t)
        return vals, qual, float(sim) if sim is not None else t / self.rate

    def seek(self, i: int) -> None:
        i = int(np.clip(i, 0, len(self.times) - 1))
        self.index = i
        self._pos = float(i)
        vals, qual, sim = self.read(i)
        self.state.set_all(vals, qual, tick=int(self.times[i]), sim_time=sim)

    def advance(self, dt_wall: float) -> bool:
        """Move on by ``dt_wall`` seconds at ``speed``; returns True if the tick changed."""
        if not self.playing:
            return False
        self._pos += dt_wall * self.rate * self.speed
        i = int(self._pos)
        if i >= len(self.times) - 1:
            i = len(self.times) - 1
            self.playing = False
        if i != self.index:
            self.seek(i)
            self._pos = max(self._pos, float(i))
            return True
        return False

    def markers(self, overlays: Overlays, limit: int = 2_000_000) -> np.ndarray:
        """Fractions of the timeline where an alarm starts (empty if the recording is too big to scan)."""
        if self._markers is not None:
            return self._markers
        n_ticks = len(self.times)
        total = n_ticks * sum(len(self.state.channels[n]) for n in self._paths)
        if total > limit or n_ticks < 2:
            self._markers = np.zeros(0)
            return self._markers
        alarm = np.zeros(n_ticks, bool)
        for name in self._paths:
            q = self.recording.channel(name, quality=True)
            a = (q & np.uint8(Quality.OUT_OF_RANGE)).any(axis=1)
            arr = overlays._arrays.get(name)
            if arr is not None:
                v = self.recording.channel(name).astype(np.float64)
                wl, wh, al, ah = arr
                a |= ((v <= al) | (v >= ah)).any(axis=1)
            alarm |= a
        starts = np.flatnonzero(alarm & ~np.r_[False, alarm[:-1]])
        self._markers = starts / max(n_ticks - 1, 1)
        return self._markers


__all__ = ["Playback"]
