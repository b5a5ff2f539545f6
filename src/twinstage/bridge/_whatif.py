"""The ``whatif`` request: fork the running twin at a tick boundary, predict off the tick thread,
stream one ``forecast`` per attribute to the asking client, then answer with one ack.

Where things run: the fork (a copy of the table — values, quality, the previous tick, sim time,
model parameters, random streams: :meth:`Engine.fork(copy_state=True)`) is taken on the tick
thread right after a tick (a one-shot Frame callback), so it is one consistent state, including
an assimilated estimate a fidelity stage wrote into the table; a paused twin is forked at once.
The predictions (:func:`twinstage.scenarios.whatif`, one headless unpaced run per grid point) run
on a one-thread pool of their own: neither the tick nor the event loop waits for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
import weakref
from typing import Any

from ._jsonio import wire
from ._messages import Ack, Error
from ._whatif_message import MAX_POINTS, MAX_SERIES_POINTS, Forecast
from .infra.auth import RANK

MAX_TICKS = 500_000  #: predicted ticks per request, all grid points together
MAX_QUEUED = 4  #: what-if requests waiting or running per server
_HEADLESS_ONLY = ("fail", "bias", "restore", "replay")
_pools: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def error(code: str, message: str, id: str = "", of: str = "") -> str:  # as _commands.error (which imports this module)
    return wire(Error(id=id, of=of, code=code, message=message))


def ack(server: Any, id: str, of: str, **extra: Any) -> str:
    m = server.mirror
    return wire(Ack(id=id, of=of, **{"tick": m.tick, "seq": m.seq, "paused": server.control.paused, **extra}))


def _pool(server: Any) -> list:
    entry = _pools.get(server)
    if entry is None:
        entry = _pools[server] = [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twinstage-whatif"), 0]
        weakref.finalize(server, entry[0].shutdown, wait=False)
    return entry


async def _fork(server: Any, twin: Any) -> Any:
    """A headless copy of ``twin`` taken between two ticks (on the tick thread), or now when paused."""
    loop = asyncio.get_running_loop()
    pool = _pool(server)[0]
    if server.control.paused:
        return await loop.run_in_executor(pool, lambda: twin.fork(copy_state=True, realtime=False))
    fut = loop.create_future()
    done: list[Any] = []

    def on_frame(_frame: Any) -> None:
        if done:
            return
        try:
            res: Any = twin.fork(copy_state=True, realtime=False)
        except Exception as exc:  # handed to the request, not to the engine's sink error log
            res = exc
        done.append(res)
        loop.call_soon_threadsafe(lambda: fut.done() or (fut.set_exception(res) if isinstance(res, Exception) else fut.set_result(res)))

    unsubscribe = twin.on_frame(on_frame)
    try:
        return await asyncio.wait_for(fut, server.command_timeout)
    except (asyncio.TimeoutError, TimeoutError):  # not ticking (e.g. not running yet): fork now
        return await loop.run_in_executor(pool, lambda: twin.fork(copy_state=True, realtime=False))
    finally:
        unsubscribe()


def _predict(snap: Any, msg: Any) -> tuple[Any, float]:
    from ..scenarios import whatif

    t = time.perf_counter()
    w = whatif(snap, [dict(e) for e in msg.events], horizon=msg.horizon, grid={a.key: list(a.values) for a in msg.grid})
    return w, time.perf_counter() - t


def _forecasts(msg: Any, w: Any, snap: Any, keys: list[str]) -> list[str]:
    ok = [r for r in w.runs if r.status == "ok"]
    n = len(w.times)
    stride = max(1, math.ceil(n / MAX_SERIES_POINTS))
    out = []
    for key in keys:
        band = w.band(key)
        prim, _, attribute = key.rpartition(".")
        out.append(wire(Forecast(id=msg.id, prim=prim, attribute=attribute, unit=ok[0].units.get(key, ""), start_tick=snap.tick_count,
                                 start_sim_time=w.start_sim_time, runs=len(ok), times=[float(x) for x in w.times[::stride]],
                                 **{k: [float(x) for x in v[::stride]] for k, v in band.items()})))
    return out


async def handle_whatif(session: Any, msg: Any) -> str:
    server = session.server
    role = session.role or "viewer"
    if RANK[role] < RANK["operator"]:
        return error("forbidden", f"role {role!r} may not run what-if predictions (operator or admin needed)", msg.id, "whatif")
    remote = getattr(server.control, "whatif", None)
    if remote is not None:  # a fan-out worker: the twin process predicts (bridge/_fanout_remote.py)
        return await remote(session, msg)
    from ..runtime._fork import engine_of

    twin = engine_of(getattr(server.control, "twin", None))
    if twin is None:
        return error("not_found", "what-if needs the twin's engine in the server's process (this server was started without one)", msg.id, "whatif")
    for i, ev in enumerate(msg.events):
        bad = [k for k in _HEADLESS_ONLY if k in ev]
        if bad:
            return error("invalid_value", f"events[{i}]: {bad[0]} events run headless only (twinstage scenario run); "
                                          "a what-if from now may set and ramp attributes", msg.id, "whatif")
    points = math.prod(len(a.values) for a in msg.grid) if msg.grid else 1
    if points > MAX_POINTS:
        return error("invalid_value", f"grid: {points} points; at most {MAX_POINTS}", msg.id, "whatif")
    ticks = points * msg.horizon * server.control.rate
    if ticks > MAX_TICKS:
        return error("invalid_value", f"{points} predictions of {msg.horizon:g} s at {server.control.rate:g} Hz are {ticks:.0f} ticks; "
                                      f"at most {MAX_TICKS} (shorten the horizon or the grid)", msg.id, "whatif")
    entry = _pool(server)
    if entry[1] >= MAX_QUEUED:
        return error("rate_limited", f"{MAX_QUEUED} what-if requests are already waiting or running; try again later", msg.id, "whatif")
    entry[1] += 1
    try:
        from ..scenarios import ScenarioError

        snap = await _fork(server, twin)
        try:
            w, wall = await asyncio.get_running_loop().run_in_executor(entry[0], _predict, snap, msg)
        except ScenarioError as exc:
            return error("invalid_value", str(exc).replace("<spec>: ", ""), msg.id, "whatif")
        ok = [r for r in w.runs if r.status == "ok"]
        if not ok:
            return error("invalid_value", "no prediction succeeded: " + "; ".join(r.error for r in w.runs)[:2000], msg.id, "whatif")
        keys = list(msg.attributes) or list(ok[0].series)
        unknown = [k for k in keys if k not in ok[0].series]
        if unknown:
            return error("not_found", f"attributes: {unknown[0]!r} is not a predicted attribute (Prim.attribute with the full prim path, "
                                      f"e.g. {next(iter(ok[0].series))!r})", msg.id, "whatif")
        for text in _forecasts(msg, w, snap, keys):
            session.queue(text)
        server.count("whatif")
        return ack(server, msg.id, "whatif", count=len(ok),
                   detail=f"{len(ok)}/{len(w.runs)} predictions of {msg.horizon:g} s from sim time {w.start_sim_time:g} s "
                          f"(tick {snap.tick_count}) in {wall:.3g} s wall; {len(keys)} forecasts sent")
    finally:
        entry[1] -= 1
