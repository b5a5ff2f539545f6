"""Alarm derivation from the twin's quality flags (OUT_OF_RANGE → warning, BAD → critical), and
from alarm attributes: a bool twin attribute with ``twin:<name>:alarmHigh`` authored (e.g. the
live anomaly detector's ``twin:anomalyAlarm``) raises a critical alarm when it turns true and
clears it when it turns false.

It belongs with the twin's quality rather than the transport; it lives in its own module
so that it can move there without touching the server. Runs on the server's loop thread,
before the mirror applies the frame (it compares the old quality with the new).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._jsonio import wire
from ._messages import Alarm

OUT_OF_RANGE, BAD = 2, 16
MAX_PER_FRAME = 50


def alarm_flags(table: Any, stage: Any) -> dict[str, np.ndarray]:
    """Per bool channel, the rows whose prim authors ``twin:<name>:alarmHigh`` (read once at start)."""
    out: dict[str, np.ndarray] = {}
    if stage is None:
        return out
    for name, ch in table.channels.items():
        if ch.type != "bool":
            continue
        rows = [r for r, pi in enumerate(ch.prim_index.tolist())
                if (a := stage.GetPrimAtPath(table.prims[pi]).GetAttribute(f"twin:{name}:alarmHigh")) and a.HasAuthoredValue()]
        if rows:
            mask = np.zeros(len(ch), bool)
            mask[rows] = True
            out[name] = mask
    return out


def _companion_score(mirror: Any, frame: Any, name: str, prim_index: int) -> float | None:
    """``<x>Score`` of the same prim for an ``<x>Alarm`` (this frame's value where it changed)."""
    score = f"{name[:-5]}Score" if name.endswith("Alarm") else ""
    ch = mirror.channels.get(score)
    if ch is None or ch.type != "float":
        return None
    hit = np.flatnonzero(ch.prim_index == prim_index)
    if not hit.size:
        return None
    row = int(hit[0])
    change = frame.changes.get(score)
    if change is not None and (k := np.flatnonzero(change.rows == row)).size:
        return float(change.values[k[0]])
    return float(mirror.values[score][row])


def _flag_alarms(mirror: Any, seq: int, frame: Any, out: list, extra: int) -> int:
    """Alarm attributes (bool, ``alarmHigh`` authored) whose value changed in this frame."""
    flags = getattr(mirror, "alarm_flags", None) or {}
    for name, mask in flags.items():
        change = frame.changes.get(name)
        if change is None:
            continue
        rows = change.rows
        new = np.asarray(change.values, dtype=bool)
        hit = mask[rows] & (new != mirror.values[name][rows].astype(bool))
        ch = mirror.channels[name]
        for k in np.flatnonzero(hit).tolist():
            if len(out) >= MAX_PER_FRAME:
                extra += 1
                continue
            row, active = int(rows[k]), bool(new[k])
            prim = mirror.table.prims[int(ch.prim_index[row])]
            text = f"{prim}.{name} raised" if active else f"{prim}.{name} cleared"
            if active and (score := _companion_score(mirror, frame, name, int(ch.prim_index[row]))) is not None:
                text += f" (score {score:.3g})"
            msg = Alarm(seq=seq, tick=frame.tick, sim_time=frame.sim_time, index=ch.offset + row, prim=prim, attribute=name, severity="critical",
                        active=active, value=1.0 if active else 0.0, message=text)
            out.append((name, row, wire(msg)))
    return extra


def derive_alarms(mirror: Any, seq: int, frame: Any) -> tuple[list[tuple[str, int, str]], int]:
    """[(channel, row, alarm text)] for the frame's OUT_OF_RANGE/BAD transitions and alarm-attribute
    changes (at most ``MAX_PER_FRAME``), and how many more there were."""
    out: list[tuple[str, int, str]] = []
    extra = 0
    for name, change in frame.changes.items():
        prev = mirror.quality[name][change.rows]
        new = change.quality
        flip = (prev ^ new) & (OUT_OF_RANGE | BAD)
        if not flip.any():
            continue
        ch = mirror.channels[name]
        for k in np.flatnonzero(flip).tolist():
            for bit, severity in ((BAD, "critical"), (OUT_OF_RANGE, "warning")):
                if not flip[k] & bit:
                    continue
                if len(out) >= MAX_PER_FRAME:
                    extra += 1
                    continue
                row = int(change.rows[k])
                active = bool(new[k] & bit)
                v = change.values[k]
                value = float(v[0]) if np.ndim(v) else float(v)
                prim = mirror.table.prims[int(ch.prim_index[row])]
                if bit == OUT_OF_RANGE:
                    text = (f"{prim}.{name} = {value:g} {ch.unit} is outside [{ch.lo[row]:g}, {ch.hi[row]:g}]" if active
                            else f"{prim}.{name} is back within its limits")
                else:
                    text = f"{prim}.{name}: a non-finite value was rejected" if active else f"{prim}.{name}: good again"
                msg = Alarm(seq=seq, tick=frame.tick, sim_time=frame.sim_time, index=ch.offset + row, prim=prim, attribute=name, severity=severity,
                            active=active, value=value if math.isfinite(value) else 0.0, message=text)
                out.append((name, row, wire(msg)))
    extra = _flag_alarms(mirror, seq, frame, out, extra)
    return out, extra


class AlarmState:
    """What alarm derivation needs of the state before a frame — every channel's quality, the values of
    alarm-attribute channels and their scores — kept in step with the frames, without a full mirror.

    The fan-out hub (``serve --fanout-procs``) derives alarms once per tick in the twin process with it
    and ships them with the frame, so every worker sends the same alarms, even for frames it gets merged.
    """

    def __init__(self, table: Any, stage: Any):
        self.table = table
        self.channels = dict(table.channels)
        self.alarm_flags = alarm_flags(table, stage)
        self.quality = {n: np.array(table.quality(n)) for n in self.channels}
        keep = set(self.alarm_flags) | {f"{n[:-5]}Score" for n in self.alarm_flags if n.endswith("Alarm")}
        self.values = {n: np.array(table[n]) for n in keep if n in self.channels}

    def derive(self, seq: int, frame: Any) -> tuple[list[tuple[str, int, str]], int]:
        """:func:`derive_alarms` for ``frame``, then take its changes."""
        out = derive_alarms(self, seq, frame)
        for name, change in frame.changes.items():
            q = self.quality.get(name)
            if q is None or not len(change.rows):
                continue
            q[change.rows] = change.quality
            v = self.values.get(name)
            if v is not None:
                v[change.rows] = change.values
        return out
