"""``set`` and ``command`` requests: validated, authorised, run against the twin (through
:class:`~twinstage.bridge._control.TwinControl` on the command thread), answered once.

Replies to requests whose effect is visible in the state stream come after that state:
``step n`` is acknowledged after the delta of its last tick went to the client, ``pause``
with the last tick that will be sent (its delta first; nothing follows).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._jsonio import wire
from ._messages import Ack, Error
from .infra.auth import RANK
from .infra.sender import AfterState

COMMAND_NAMES = ("ping", "pause", "resume", "step", "scenario", "clients")


def error(code: str, message: str, id: str = "", of: str = "") -> str:
    return wire(Error(id=id, of=of, code=code, message=message))


def ack(server: Any, id: str, of: str, **extra: Any) -> str:
    m = server.mirror
    fields = {"tick": m.tick, "seq": m.seq, "paused": server.control.paused}
    fields.update(extra)
    return wire(Ack(id=id, of=of, **fields))


async def execute(session: Any, msg: Any) -> str | AfterState:
    """Run one set/command for ``session``; the reply (ack or error) as wire text."""
    from ..state import StateError
    from ..units import UnitError

    server = session.server
    ctl = server.control
    role = session.role or "viewer"
    user = session.user
    if msg.type == "whatif":  # what-if from now: bridge/_whatif.py
        from ._whatif import handle_whatif

        return await handle_whatif(session, msg)
    if msg.type == "set":
        if RANK[role] < RANK["operator"]:
            return error("forbidden", f"role {role!r} may not set values (operator or admin needed)", msg.id, "set")
        table = ctl.table
        if msg.prim not in table.prim_index:
            return error("not_found", f"{msg.prim}: not a twin prim of this twin", msg.id, "set")
        if msg.attribute not in table.channels or msg.attribute not in table.attributes(msg.prim):
            return error("not_found", f"{msg.prim}: has no twin attribute {msg.attribute!r}", msg.id, "set")
        row = table.row(msg.prim, msg.attribute)
        attr_role = str(table.channels[msg.attribute].role[row])
        if attr_role not in ("input", "parameter") and RANK[role] < RANK["admin"]:
            return error("forbidden", f"{msg.prim}.{msg.attribute} is a {attr_role!r} attribute: only admin may set it", msg.id, "set")
        value = tuple(msg.value) if isinstance(msg.value, list) else msg.value
        if msg.unit:
            value = (value, msg.unit)
        try:
            await server.call_twin(ctl.set, msg.prim, msg.attribute, value)
        except (StateError, UnitError) as exc:
            return error("invalid_value", str(exc), msg.id, "set")
        return ack(server, msg.id, "set", detail="queued; it enters the next tick")
    name = msg.command
    if name not in COMMAND_NAMES:
        return error("unknown_type", f"unknown command {name!r} ({', '.join(COMMAND_NAMES)})", msg.id, name)
    need = {"ping": "viewer", "clients": "admin"}.get(name, "operator")
    if RANK[role] < RANK[need]:
        return error("forbidden", f"role {role!r} may not {name} ({need} needed)", msg.id, name)
    if name == "ping":
        return ack(server, msg.id, "ping")
    if name == "clients":
        infos = await server.client_infos()  # with fan-out: every worker's clients
        return ack(server, msg.id, "clients", count=len(infos), clients=infos)
    if name == "pause":
        tick = await server.pause()
        server.broadcast_event("paused", f"paused by {user or 'anonymous'} after tick {tick}", user=user, tick=tick)
        return AfterState(ack(server, msg.id, "pause", paused=True, tick=tick, detail=f"tick {tick} is the last tick sent"))
    if name == "resume":
        await server.call_twin(ctl.resume)
        server.broadcast_event("resumed", f"resumed by {user or 'anonymous'}", user=user)
        return ack(server, msg.id, "resume", paused=False)
    if name == "step":
        n = msg.steps or 1
        if not 1 <= n <= 100_000:
            return error("invalid_value", f"steps must be 1..100000, got {n}", msg.id, name)
        target = await server.call_twin(ctl.step, n)
        tick = await server.wait_tick(target, server.command_timeout + n * ctl.tick_seconds)
        server.broadcast_event("stepped", f"stepped {n} tick(s) by {user or 'anonymous'}", user=user, tick=tick)
        return AfterState(ack(server, msg.id, "step", count=n, tick=tick))
    # scenario
    scenarios = server.scenarios
    if msg.scenario not in scenarios.scenarios:
        known = ", ".join(sorted(scenarios.scenarios)) or "none registered"
        return error("not_found", f"no scenario named {msg.scenario!r} ({known})", msg.id, name)
    from ._scenario import ScenarioRejected

    try:
        n = await server.start_scenario(msg.scenario, user)  # with fan-out: run by the twin process
    except ScenarioRejected as exc:
        return error("invalid_value", str(exc), msg.id, name)
    return ack(server, msg.id, "scenario", count=n, detail=f"scenario {msg.scenario!r} started")


async def run_request(session: Any, msg: Any) -> None:
    """Run one request and queue exactly one reply with its id."""
    import logging

    server = session.server
    of = msg.command if msg.type == "command" else msg.type
    try:
        reply = await execute(session, msg)
    except (asyncio.TimeoutError, TimeoutError):
        reply = error("timeout", f"the twin did not answer within {server.command_timeout:g} s (is it running?); the request may still take effect",
                      msg.id, of)
    except asyncio.CancelledError:
        reply = error("internal", "the server is shutting down", msg.id, of)
    except Exception as exc:
        logging.getLogger("twinstage.bridge").exception("bridge client %d: %s failed", session.id, of)
        reply = error("internal", f"{of} failed: {type(exc).__name__}", msg.id, of)
    session.queue(reply)
