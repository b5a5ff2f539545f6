"""Helpers for the recorder tests: a tape of everything a run produced, and a scripted run."""

from __future__ import annotations

import numpy as np


class Tape:
    """Everything the run produced, tick by tick, collected through on_frame."""

    def __init__(self, twin):
        self.table = twin.table
        self.ticks: list[int] = []
        self.sim_times: list[float] = []
        self.values: list[dict[str, np.ndarray]] = []
        self.quality: list[dict[str, np.ndarray]] = []
        self.frames = []
        twin.on_frame(self)

    def __call__(self, frame):
        self.frames.append(frame)
        self.ticks.append(frame.tick)
        self.sim_times.append(frame.sim_time)
        self.values.append(self.table.snapshot())
        self.quality.append({n: self.table.quality(n).copy() for n in self.table.channels})

    def at(self, tick: int) -> int:
        return self.ticks.index(tick)


def scripted_run(twin, ticks: int = 40) -> None:
    twin.set("/Testbed/Valve1", opening=0.4)
    twin.run(ticks=ticks // 2)
    twin.set("/Testbed/Pump", motorSpeed=0.6)
    twin.set("/Testbed/Valve2", opening=0.7)
    twin.run(ticks=ticks - ticks // 2)
