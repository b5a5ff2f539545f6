"""The fan-out hub answering its workers (in the twin process): the changes a worker's clients ask for,
run against the one twin with the single server's rules.

* ``set``, ``resume``, ``step``, ``ingest``: one command thread, in the order the workers sent them (a
  client's requests keep their order).
* ``pause``: the twin pauses at the end of its next tick (the tick thread applies it, so that tick is
  the last one and its frame carries the flag); the answer is that tick — the worker acknowledges once
  its clients have its delta. A twin that does not tick is paused at once.
* ``clients``: every worker lists its own clients; the answer is all of them.
* ``scenario``: the twin process runs the registered scenario (its sets enter the twin from the tick
  thread, after each frame, as the single server's runner does); its events go to every worker.
* ``whatif``: predicted here, from the running twin (:func:`~twinstage.bridge._whatif.handle_whatif` on an
  event loop of the hub's own), off the command thread; the forecasts and the reply go back to the worker.

After each answer the twin's paused state goes to every worker when it changed without a frame (a pause
of a twin that does not tick, a resume), so a ``hello`` or ``ack`` there says what is true.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from types import SimpleNamespace
from typing import Any

WHATIF_TIMEOUT = 600.0  #: seconds a worker waits for a what-if the twin process runs
CLIENTS_TIMEOUT = 3.0  #: seconds the hub waits for every worker's list of clients


class _Asker:
    """The asking client as :func:`handle_whatif` sees it in the twin process: a role, and a queue."""

    def __init__(self, server: Any, role: str):
        self.server, self.role = server, role
        self.out: list[str] = []

    def queue(self, text: str) -> None:
        self.out.append(text)


class _WhatifHost:
    """The server as :func:`handle_whatif` sees it in the twin process (its control is the real twin's)."""

    def __init__(self, hub: Any):
        self.hub = hub
        self.control = hub.control
        self.command_timeout = float(hub.server_kwargs.get("command_timeout", 5.0))

    @property
    def mirror(self) -> Any:
        return SimpleNamespace(tick=self.control.tick, seq=self.hub.seq)

    def count(self, what: str, n: int = 1) -> None:
        pass


class HubCalls:
    """Mixin of :class:`~twinstage.bridge._fanout.FanoutHub`."""

    def scenario_event(self, kind: str, message: str, *, user: str = "", tick: int | None = None) -> None:
        """The scenario runner's events, for every worker's clients."""
        ctl = self.control
        self.broadcast(("event", kind, message, user, ctl.tick if tick is None else tick, ctl.sim_time))

    def _start_calls(self) -> None:
        self.calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twinstage-fanout-cmd")
        self.side_calls = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="twinstage-fanout-side")
        self._pause_cond = threading.Condition()
        self._pause_gen, self._paused_tick = 0, 0
        self._clients_ids = itertools.count(1)
        self._clients: dict[int, dict[int, list]] = {}
        self._clients_cond = threading.Condition()
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._whatif_host: Any = None
        self._sent_paused = self.control.paused

    def _stop_calls(self) -> None:
        for pool in (self.calls, self.side_calls):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        loop = getattr(self, "_aloop", None)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    # -- reader threads --------------------------------------------------------------------------
    def on_call(self, w: Any, call_id: int, method: str, args: tuple) -> None:
        if self.closed:
            return
        try:
            if method == "whatif":
                asyncio.run_coroutine_threadsafe(self._whatif(w, call_id, *args), self._whatif_loop())
            elif method in ("pause", "clients"):
                self.side_calls.submit(self._answer, w, call_id, method, args)
            else:
                self.calls.submit(self._answer, w, call_id, method, args)
        except RuntimeError:  # shutting down: the worker's call times out, its clients are closed
            pass

    def on_clients(self, w: Any, query: int, infos: list) -> None:
        with self._clients_cond:
            if query in self._clients:
                self._clients[query][w.index] = infos
                self._clients_cond.notify_all()

    # -- command threads ----------------------------------------------------------------------------
    def _answer(self, w: Any, call_id: int, method: str, args: tuple) -> None:
        ctl = self.control
        try:
            if method == "ingest":
                if self.ingest is None:
                    raise LookupError("this server takes no ingest")
                result = self.ingest.push(*args)
            elif method in ("set", "resume", "step"):
                result = getattr(ctl, method)(*args)
            elif method == "scenario":
                result = self.scenarios.start(*args)
            elif method == "pause":
                result = self._pause()
            elif method == "clients":
                result = self._all_clients()
            else:
                raise LookupError(f"unknown call {method!r}")
            reply = ("reply", call_id, True, result, None)
        except Exception as exc:  # re-raised in the worker as the same kind of error
            reply = ("reply", call_id, False, type(exc).__name__, str(exc))
        self._reply(w, reply)

    def _reply(self, w: Any, reply: tuple) -> None:
        ctl = self.control
        if w.alive:  # through the feed: after the frames and events that came before it
            w.put(("msg", reply + ({"tick": ctl.tick, "paused": ctl.paused},)))
        paused = ctl.paused
        if paused != self._sent_paused:  # changed without a frame saying so: tell every worker
            self._sent_paused = paused
            self.broadcast(("status", ctl.tick, paused))

    def on_last_tick(self, tick: int) -> None:
        """Tick thread: the twin paused at the end of ``tick`` (a requested pause)."""
        with self._pause_cond:
            self._pause_gen += 1
            self._paused_tick = tick
            self._pause_cond.notify_all()

    def _pause(self) -> int:
        """Pause the twin; the last tick whose frame will be sent."""
        ctl = self.control
        with self._pause_cond:
            gen = self._pause_gen
        if ctl.paused:
            ctl.request_pause()
            ctl.pause_now()  # clears the request (as the single server does)
            return ctl.tick
        ctl.request_pause()
        wait = min(self._command_timeout() / 2, 3 * ctl.tick_seconds + 0.25)
        with self._pause_cond:
            if self._pause_cond.wait_for(lambda: self._pause_gen != gen, wait):
                return self._paused_tick
        if ctl.pause_now():  # nobody ticks it: paused here, after the tick the frames already carry
            return ctl.tick
        with self._pause_cond:  # the tick thread took the request meanwhile
            self._pause_cond.wait_for(lambda: self._pause_gen != gen, self._command_timeout())
            return self._paused_tick

    def _command_timeout(self) -> float:
        return float(self.server_kwargs.get("command_timeout", 5.0))

    def _all_clients(self) -> list[dict[str, Any]]:
        live = [w for w in self.workers if w.alive]
        query = next(self._clients_ids)
        with self._clients_cond:
            self._clients[query] = {}
        try:
            for w in live:
                try:
                    w.send(("clients?", query))
                except (OSError, ValueError):
                    w.dead("its pipe broke")
            with self._clients_cond:
                self._clients_cond.wait_for(lambda: len(self._clients[query]) >= sum(w.alive for w in live), CLIENTS_TIMEOUT)
        finally:
            with self._clients_cond:
                got = self._clients.pop(query, {})
        return sorted((c for infos in got.values() for c in infos), key=lambda c: c["id"])

    # -- what-if (the hub's event loop) --------------------------------------------------------------
    def _whatif_loop(self) -> asyncio.AbstractEventLoop:
        with self._pause_cond:  # any lock: two workers' first what-ifs may come at once
            if self._aloop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="twinstage-fanout-whatif", daemon=True).start()
                self._whatif_host = _WhatifHost(self)
                self._aloop = loop
        return self._aloop

    async def _whatif(self, w: Any, call_id: int, payload: dict, role: str) -> None:
        from ._whatif import handle_whatif
        from ._whatif_message import WhatIf

        asker = _Asker(self._whatif_host, role)
        try:
            reply = await handle_whatif(asker, WhatIf.model_validate(payload))
            out = ("reply", call_id, True, (asker.out, reply), None)
        except Exception as exc:
            out = ("reply", call_id, False, type(exc).__name__, str(exc))
        self._reply(w, out)
