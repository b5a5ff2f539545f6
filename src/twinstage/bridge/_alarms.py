"""Alarm derivation from the twin's quality flags (OUT_OF_RANGE → warning, BAD → critical).

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


def derive_alarms(mirror: Any, seq: int, frame: Any) -> tuple[list[tuple[str, int, str]], int]:
    """[(channel, row, alarm text)] for the frame's OUT_OF_RANGE/BAD transitions (at most
    ``MAX_PER_FRAME``), and how many more there were."""
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
    return out, extra
