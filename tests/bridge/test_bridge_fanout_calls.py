"""Fan-out (``FanoutHub`` with two worker processes) when the twin does not tick: a ``pause`` is answered
from the twin process at once, and the paused state reaches the *other* worker without a frame, so a
client connecting there is told the truth in its ``hello`` and ``ack``s; a ``resume`` likewise."""

from __future__ import annotations

import asyncio

from _bridgeutil import ADMIN, ADMIN_SECRET, VIEW_SECRET, VIEWER, arun, ws_connect
from _fanoututil import Recorder, client_port, owner_pid

import twinstage
from twinstage.bridge._fanout import FanoutHub


async def _on(url: str, port: int, pids: list[int], secret: str, want: int | None) -> Recorder:
    """A connection on worker ``want`` (None: any)."""
    for _ in range(40):
        ws = await ws_connect(url, token=secret)
        pid = owner_pid(port, client_port(ws), pids)
        if want is None or pid == want:
            r = Recorder(ws)
            r.pid = pid
            await r.until(lambda m: m["type"] == "hello")
            return r
        await ws.close()
    raise AssertionError(f"no connection landed on worker {want}")


async def _until_hello(url: str, port: int, pids: list[int], want: int, paused: bool) -> Recorder:
    """A viewer on worker ``want`` whose hello says ``paused`` (the state may still be on its way: retried, bounded)."""
    for _ in range(50):
        r = await _on(url, port, pids, VIEW_SECRET, want)
        if r.msgs[0]["paused"] is paused:
            return r
        await r.close()
        await asyncio.sleep(0.1)
    raise AssertionError(f"worker {want} never said paused={paused}")


def test_pause_and_resume_of_a_twin_that_does_not_tick_reach_every_worker(pump_scene):
    twin = twinstage.open(pump_scene, rate=20.0, realtime=True)
    hub = FanoutHub(str(pump_scene), 2, "127.0.0.1", 0, open_kwargs={"rate": 20.0, "realtime": True}, server_kwargs={"tokens": [ADMIN, VIEWER]})
    twin.add_sink(hub)  # never run: nobody ticks it
    pids = [w.proc.pid for w in hub.workers]

    async def go():
        a = await _on(hub.url, hub.port, pids, ADMIN_SECRET, None)
        other = next(p for p in pids if p != a.pid)
        assert a.msgs[0]["paused"] is False
        p = await a.reply({"type": "command", "id": "p", "command": "pause"})
        assert p["type"] == "ack" and p["paused"] is True and p["tick"] == 0
        assert twin.clock.paused
        b = await _until_hello(hub.url, hub.port, pids, other, True)  # told by the twin process: no frame says so
        ping = await b.reply({"type": "command", "id": "q", "command": "ping"})
        assert ping["paused"] is True
        w = await b.reply({"type": "whatif", "id": "w", "events": [], "horizon": 1.0})
        assert w["type"] == "error" and w["code"] == "forbidden"  # the role is checked on the worker
        r = await a.reply({"type": "command", "id": "r", "command": "resume"})
        assert r["type"] == "ack" and r["paused"] is False and not twin.clock.paused
        c = await _until_hello(hub.url, hub.port, pids, other, False)
        assert (await b.reply({"type": "command", "id": "q2", "command": "ping"}))["paused"] is False
        for _ in range(100):  # the workers' counters reach the hub (FanoutHub.stats: metrics, the serve summary)
            if hub.stats().get("clients") == 3:
                break
            await asyncio.sleep(0.1)
        assert hub.stats()["clients"] == 3 and hub.stats()["seq"] == 0
        ev = [m["kind"] for m in b.msgs if m["type"] == "event"]
        assert ev == ["resumed"]  # b joined after the pause; it hears of the resume from a's worker
        for x in (a, b, c):
            await x.close()

    try:
        arun(go(), timeout=120)
    finally:
        twin.close()


def test_workers_get_the_serve_process_log_format_and_level():
    import logging

    from twinstage.bridge._fanout import _log_setup
    from twinstage.observability import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", level=logging.INFO)
        assert _log_setup() == ("json", logging.INFO)
        configure_logging("text", level=logging.WARNING)
        assert _log_setup() == ("text", logging.WARNING)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
