"""Bridge fixtures: a twin ticking in its own thread with a bridge on a free loopback port."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

import twinstage
from _bridgeutil import ADMIN, OPERATOR, VIEWER
from twinstage.bridge import Server


@pytest.fixture
def bridge(pump_scene):
    """``make(scene=None, rate=20, run=True, **server_kwargs)`` → namespace(twin, server, url, port)."""
    made: list[tuple[Any, threading.Thread | None]] = []

    def make(scene: Any = None, *, rate: float = 20.0, run: bool = True, **kw: Any) -> SimpleNamespace:
        twin = twinstage.open(scene or pump_scene, rate=rate, realtime=True)
        kw.setdefault("tokens", [OPERATOR, VIEWER, ADMIN])
        server = Server("127.0.0.1", 0, **kw)
        twin.add_sink(server)
        thread = None
        if run:
            thread = threading.Thread(target=twin.run, kwargs={"ticks": 10**9, "wait_when_paused": True}, daemon=True, name="test-twin")
            thread.start()
        made.append((twin, thread))
        return SimpleNamespace(twin=twin, server=server, url=server.url, port=server.port, thread=thread)

    yield make
    for twin, thread in made:
        twin.stop()
        if thread is not None:
            thread.join(10)
        twin.close()

