"""What a bridge :class:`~twinstage.bridge.Server` asks of the twin from its event loop: run a call on
the command thread, wait for a tick's frame, pause at a known last tick, list the clients.

A fan-out worker's control (:class:`~twinstage.bridge._fanout_remote.RemoteControl`) answers ``pause``,
``clients`` and ``scenario`` in the twin process (``pause_remote``, ``all_clients``, ``start_scenario``),
so that every worker's clients see one twin, one list of clients and one scenario runner."""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class TwinCalls:
    """Mixin of :class:`~twinstage.bridge.Server` (it provides control, mirror, loop, sessions, the waiters)."""

    async def call_twin(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        fut = loop.run_in_executor(self._executor, fn, *args)
        return await asyncio.wait_for(fut, self.command_timeout)

    async def wait_tick(self, target: int, timeout: float | None = None) -> int:
        """Wait until the frame of tick ``target`` has been handed to every session."""
        mirror = self.mirror
        assert mirror is not None
        if mirror.tick >= target:
            return mirror.tick
        fut = asyncio.get_running_loop().create_future()
        self._tick_waiters.append((target, fut))
        return await asyncio.wait_for(fut, timeout or self.command_timeout)

    async def pause(self) -> int:
        """Pause the twin at the end of its next tick; returns the last tick (its frame handed to every session)."""
        ctl = self.control
        assert ctl is not None and self.mirror is not None
        remote = getattr(ctl, "pause_remote", None)
        if remote is not None:  # a fan-out worker: the twin process pauses and names the last tick
            tick = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, remote), self.command_timeout)
            return await self.wait_tick(tick)
        if ctl.paused:
            await self.call_twin(ctl.request_pause)
            await self.call_twin(ctl.pause_now)
            return self.mirror.tick
        fut = asyncio.get_running_loop().create_future()
        self._pause_waiters.append(fut)
        ctl.request_pause()
        try:  # a ticking twin pauses itself at the end of its next tick
            return await asyncio.wait_for(asyncio.shield(fut), min(self.command_timeout / 2, 3 * ctl.tick_seconds + 0.25))
        except (asyncio.TimeoutError, TimeoutError):
            pass
        if await self.call_twin(ctl.pause_now):  # nobody ticks it: paused here
            if fut in self._pause_waiters:
                self._pause_waiters.remove(fut)
            return await self.wait_tick(ctl.tick)
        return await asyncio.wait_for(fut, self.command_timeout)

    async def start_scenario(self, name: str, user: str) -> int:
        """Start a registered scenario from now (raises ScenarioRejected); its number of events."""
        remote = getattr(self.control, "start_scenario", None)
        if remote is None:
            return self.scenarios.start(name, user, self.mirror.sim_time)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(None, remote, name, user, self.mirror.sim_time), self.command_timeout)

    def local_clients(self) -> list[dict[str, Any]]:
        return [s.info() for s in self.sessions]

    async def client_infos(self) -> list[dict[str, Any]]:
        """Every client of this server (with fan-out: of every worker), ordered by id."""
        remote = getattr(self.control, "all_clients", None)
        if remote is None:
            return sorted(self.local_clients(), key=lambda c: c["id"])
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, remote), self.command_timeout)
