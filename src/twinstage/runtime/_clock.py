"""Fixed-step clock: sim time advances by ``dt`` per tick; wall time is paced or not."""

from __future__ import annotations

import time


class Clock:
    """Fixed-step clock.

    ``rate`` ticks per *sim* second. ``realtime=True`` paces ticks to the wall clock
    (``speed`` × real time; a late tick does not try to catch up by bursting, it
    re-anchors and counts an overrun); ``realtime=False`` runs as fast as possible.
    ``pause()`` stops :meth:`wait` from advancing until ``resume()``; ``step(n)``
    lets ``n`` ticks through while paused.
    """

    def __init__(self, rate: float = 10.0, *, realtime: bool = False, speed: float = 1.0):
        if not rate > 0:
            raise ValueError(f"rate must be > 0 ticks per second, not {rate!r}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed!r}")
        self.rate = float(rate)
        self.dt = 1.0 / self.rate
        self.realtime = realtime
        self.speed = speed
        self.tick = 0
        self.paused = False
        self._steps = 0
        self._anchor: float | None = None
        self._anchor_tick = 0
        self.overruns = 0

    @property
    def sim_time(self) -> float:
        """Sim time of the current tick: ``tick * dt`` (no accumulated float error)."""
        return self.tick * self.dt

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._anchor = None

    def step(self, n: int = 1) -> None:
        """Allow ``n`` ticks while paused."""
        self._steps += n

    def may_tick(self) -> bool:
        if not self.paused:
            return True
        if self._steps > 0:
            self._steps -= 1
            return True
        return False

    def wait(self) -> None:
        """Sleep until the next tick is due (real-time mode only)."""
        if not self.realtime or self.paused:
            return
        now = time.perf_counter()
        if self._anchor is None:
            self._anchor, self._anchor_tick = now, self.tick
            return
        due = self._anchor + (self.tick - self._anchor_tick) * self.dt / self.speed
        if due > now:
            time.sleep(due - now)
        elif now - due > self.dt / self.speed:
            self.overruns += 1
            self._anchor, self._anchor_tick = now, self.tick

    def advance(self) -> None:
        self.tick += 1
