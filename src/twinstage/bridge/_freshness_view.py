"""The Python client's copy of the ``freshness`` messages: ages and reasons per entry index."""

from __future__ import annotations

from typing import Any


class FreshnessView:
    def __init__(self) -> None:
        self.indices: list[int] = []
        self.ages: dict[int, float] = {}  #: entry index -> seconds since its last good sample (inf: none yet)
        self.reasons: dict[int, str] = {}  #: entry index -> why it is flagged (absent: good)
        self.messages = 0
        self.tick = 0
        self.sim_time = 0.0

    def apply(self, m: dict[str, Any]) -> None:
        if m["indices"] or not m["ages"]:
            self.indices = list(m["indices"])
        if len(self.indices) != len(m["ages"]):
            raise ValueError(f"freshness message: {len(m['ages'])} ages for {len(self.indices)} entries")
        self.ages = {i: (float("inf") if a < 0 else float(a)) for i, a in zip(self.indices, m["ages"])}
        for r in m["reasons"]:
            if r["text"]:
                self.reasons[r["index"]] = r["text"]
            else:
                self.reasons.pop(r["index"], None)
        self.messages += 1
        self.tick, self.sim_time = m["tick"], m["simTime"]
