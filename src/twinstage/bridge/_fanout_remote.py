"""A fan-out worker's view of the twin in the other process: :class:`RemoteControl` stands in for
:class:`~twinstage.bridge._control.TwinControl` (reads from the scene this process opened and from the
frames; changes as calls answered in the twin process, :mod:`._fanout_calls`), :class:`RemoteIngest`
for the twin's :class:`~twinstage.telemetry.BridgeIngestSource`."""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
import threading
from pathlib import Path
from typing import Any

from ._fanout_calls import WHATIF_TIMEOUT


def _error(kind: str, message: str) -> Exception:
    """The twin process's exception, as the same kind here (the bridge maps them to protocol errors)."""
    if kind in ("StateError",):
        from ..state import StateError

        return StateError(message)
    if kind in ("UnitError", "DimensionalityError", "UndefinedUnitError"):
        from ..units import UnitError

        return UnitError(message)
    if kind == "ScenarioRejected":
        from ._scenario import ScenarioRejected

        return ScenarioRejected(message)
    if kind in ("TelemetryError", "MappingError"):
        from ..telemetry._source import TelemetryError

        return TelemetryError(message)
    return RuntimeError(f"{kind}: {message}")


class RemoteControl:
    """:class:`~twinstage.bridge._control.TwinControl` for a worker: metadata from the scene this
    process opened, tick/paused from the twin process's frames, changes as calls to that process."""

    remote = True  #: the server takes alarms and errors from the frames, not from this process's twin

    def __init__(self, twin: Any, conn: Any, init: dict[str, Any], call_timeout: float = 30.0):
        self.twin = twin
        self.conn = conn
        self.send_lock = threading.Lock()
        self._tick = int(init["tick"])
        self._sim_time = float(init["sim_time"])
        self._paused = bool(init["paused"])
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self.call_timeout = call_timeout

    # -- reading (as TwinControl) -------------------------------------------------------------
    table = property(lambda self: self.twin.table)
    stage = property(lambda self: getattr(self.twin, "stage", None))
    assets = property(lambda self: getattr(self.twin, "assets", None) or {})
    scene_name = property(lambda self: Path(getattr(self.twin, "source", "") or "").name)
    tick = property(lambda self: self._tick)
    sim_time = property(lambda self: self._sim_time)
    rate = property(lambda self: float(self.twin.clock.rate))
    paused = property(lambda self: self._paused)

    @property
    def tick_seconds(self) -> float:
        clock = self.twin.clock
        return float(clock.dt) / float(getattr(clock, "speed", 1.0) or 1.0)

    def errors(self) -> list[Any]:
        return []  # the twin's errors come with the frames (the hub reads them in the twin process)

    def validate(self, prim: str, attribute: str, value: Any) -> Any:
        return self.twin.table.validate(prim, attribute, value)

    def on_tick(self) -> bool:
        return False  # the twin process decides which tick is the last (it sends the flag with the frame)

    def status(self, tick: int, paused: bool, sim_time: float | None = None) -> None:
        """The twin's tick and paused state as the twin process last reported them."""
        self._tick, self._paused = max(self._tick, int(tick)), bool(paused)
        if sim_time is not None:
            self._sim_time = float(sim_time)

    # -- changing: calls into the twin process ------------------------------------------------------
    def set(self, prim: str, attribute: str, value: Any) -> None:
        self.call("set", prim, attribute, value)

    def resume(self) -> None:
        self.call("resume")

    def step(self, n: int) -> int:
        return int(self.call("step", n))

    def pause_remote(self) -> int:
        """Pause the twin (at the end of its next tick if it ticks); the last tick whose frame is sent."""
        return int(self.call("pause"))

    def start_scenario(self, name: str, user: str, sim_time: float) -> int:
        """A registered scenario, run by the twin process's runner (its events reach every worker)."""
        return int(self.call("scenario", name, user, sim_time))

    def all_clients(self) -> list[dict[str, Any]]:
        """Every worker's clients (``clients`` command)."""
        return list(self.call("clients"))

    async def whatif(self, session: Any, msg: Any) -> str:
        """A ``whatif`` predicted in the twin process: its forecasts queued to ``session``; the reply."""
        from ._commands import ack

        payload = msg.model_dump(by_alias=True, mode="json")
        loop = asyncio.get_running_loop()
        role = session.role or "viewer"
        forecasts, reply = await loop.run_in_executor(None, lambda: self.call("whatif", payload, role, timeout=WHATIF_TIMEOUT))
        for text in forecasts:
            session.queue(text)
        m = json.loads(reply)
        if m.get("type") != "ack":
            return reply
        session.server.count("whatif")
        return ack(session.server, msg.id, "whatif", count=m["count"], detail=m["detail"])  # this worker's tick and seq

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        cid = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._waiting[cid] = slot
        wait = self.call_timeout if timeout is None else timeout
        try:
            with self.send_lock:
                self.conn.send_bytes(pickle.dumps(("call", cid, method, args), protocol=5))
            if not slot[0].wait(wait):
                raise TimeoutError(f"the twin process did not answer {method} within {wait:g} s")
        finally:
            with self._lock:
                self._waiting.pop(cid, None)
        _, _, ok, result, message, status = slot[1]
        self.status(status["tick"], status["paused"])
        if not ok:
            raise _error(result, message)
        return result

    def resolve(self, msg: tuple) -> None:
        with self._lock:
            slot = self._waiting.get(msg[1])
        if slot is not None:
            slot[1] = msg
            slot[0].set()

    def send(self, msg: tuple) -> None:
        with self.send_lock:
            self.conn.send_bytes(pickle.dumps(msg, protocol=5))


class RemoteIngest:
    """The twin process's BridgeIngestSource as a worker sees it: its keys, and ``push`` as a call."""

    def __init__(self, control: RemoteControl, keys: list[str]):
        self.control = control
        self.keys = list(keys)

    def push(self, keys: Any, values: Any, times: Any = None, quality: Any = None) -> int:
        return int(self.control.call("ingest", list(keys), list(values), None if times is None else list(times),
                                     None if quality is None else list(quality)))

    def describe(self) -> str:
        return f"bridge ingest (in the twin process, {len(self.keys)} keys)"
