"""The bridge's one view of the twin: everything it reads from or does to the twin goes
through :class:`TwinControl`, so a sink context object (``sink.start(ctx)``) can replace
the twin without touching the rest of the bridge.

What it uses: ``table`` (the StateTable: channels, prims, validate, row, attributes),
``clock.tick``, ``clock.sim_time``, ``clock.rate``, ``clock.dt``, ``clock.speed``,
``clock.paused``, ``stage`` (optional), ``assets`` (optional), ``source`` (optional, the scene path), ``errors``
(optional list), ``set(path, **values)``, ``pause()``, ``resume()``, ``clock.step(n)`` (the step allowance of a
paused run loop; the bridge never ticks the twin on its own thread).

Pause is exact: :meth:`request_pause` only raises a flag; the next :meth:`on_tick` (called
by the server's ``consume``, i.e. on the tick thread, at the end of a tick) pauses the
twin there, so that tick is the last one and the server knows which it is. A twin that
does not tick is paused directly by :meth:`pause_now`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class TwinControl:
    def __init__(self, twin: Any):
        self.twin = twin
        self._lock = threading.Lock()
        self._pause_requested = False
        self._step_end = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def table(self) -> Any:
        return self.twin.table

    @property
    def stage(self) -> Any:
        return getattr(self.twin, "stage", None)

    @property
    def assets(self) -> dict[str, Any]:
        return getattr(self.twin, "assets", None) or {}

    @property
    def scene_name(self) -> str:
        return Path(getattr(self.twin, "source", "") or "").name

    @property
    def tick(self) -> int:
        return int(self.twin.clock.tick)

    @property
    def sim_time(self) -> float:
        return float(self.twin.clock.sim_time)

    @property
    def rate(self) -> float:
        return float(self.twin.clock.rate)

    @property
    def tick_seconds(self) -> float:
        """Wall seconds between ticks when paced (dt / speed)."""
        clock = self.twin.clock
        return float(clock.dt) / float(getattr(clock, "speed", 1.0) or 1.0)

    @property
    def paused(self) -> bool:
        return bool(self.twin.clock.paused)

    def errors(self) -> list[Any]:
        return list(getattr(self.twin, "errors", None) or ())

    # -- changing (command thread) ---------------------------------------------------------
    def validate(self, prim: str, attribute: str, value: Any) -> Any:
        return self.twin.table.validate(prim, attribute, value)

    def set(self, prim: str, attribute: str, value: Any) -> None:
        self.twin.set(prim, **{attribute: value})

    def resume(self) -> None:
        self.twin.resume()

    def step(self, n: int) -> int:
        """Let ``n`` more ticks run (paused: through the step allowance, which adds up over
        concurrent requests); returns the tick after which they have all run."""
        if self.paused:
            with self._lock:
                base = max(self.tick, self._step_end)
                self._step_end = base + n
            self.twin.clock.step(n)  # the run loop lets them through; never ticks on this thread
            return base + n
        return self.tick + n

    def request_pause(self) -> None:
        with self._lock:
            self._pause_requested = True

    def pause_now(self) -> bool:
        """Pause from this thread if the tick thread has not done it yet; True if it did it here."""
        with self._lock:
            if not self._pause_requested:
                return False
            self._pause_requested = False
        self.twin.pause()
        return True

    def on_tick(self) -> bool:
        """Tick thread, end of a tick: apply a requested pause; True if this tick is the last."""
        return self._pause_requested and self.pause_now()  # unlocked read first: the common case is no pause
