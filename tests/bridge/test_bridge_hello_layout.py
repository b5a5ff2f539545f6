"""Which hello a client gets: ``?hello=rows|compact`` picks; without it, rows unless rows would be over the
server's ``max_state_bytes`` — so a client written from the docs with websockets' default 1 MiB limit can
connect to a big scene (before: the 1k factory's 1.2 MB rows hello closed it with 1009)."""

from __future__ import annotations

import asyncio
import json

import pytest
from _bridgeutil import VIEW_SECRET, arun
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from twinstage.bridge import Client

MIB = 1 << 20


async def _hello(url: str, query: str = "", **kw) -> dict:
    async with connect(url + query, additional_headers={"Authorization": f"Bearer {VIEW_SECRET}"}, subprotocols=["twinstage.v1"],
                       compression=None, proxy=None, **kw) as ws:
        raw = await asyncio.wait_for(ws.recv(), 30)
        assert len(raw) <= (kw.get("max_size") or 1 << 40)
        return json.loads(raw)


def test_a_big_scene_sends_compact_unless_rows_are_asked_for(bridge, factory_1k):
    b = bridge(factory_1k, run=False)
    assert b.server.hello_builder.sizes["rows"] > b.server.max_state_bytes  # the case this is about

    async def go():
        plain = await _hello(b.url)  # websockets' default max_size: 1 MiB
        assert plain["layout"] == "compact" and plain["attributes"] == [] and plain["channels"]
        rows = await _hello(b.url, "?hello=rows", max_size=None)
        assert rows["layout"] == "rows" and len(rows["attributes"]) == sum(ch["count"] for ch in plain["channels"])
        assert (await _hello(b.url, "?hello=compact"))["layout"] == "compact"
        for bad in ("?hello=big", "?hello=rows&hello=compact", "?hello="):
            with pytest.raises(InvalidStatus) as err:
                await _hello(b.url, bad)
            assert err.value.response.status_code == 400 and b"hello must be one of rows, compact" in err.value.response.body
        async with Client(b.url, token=VIEW_SECRET, max_size=MIB) as c:  # the default, "auto", reads either
            assert c.hello["layout"] == "compact"
            assert len(c.hello["attributes"]) == len(rows["attributes"])
        async with Client(b.url, token=VIEW_SECRET, hello="rows") as c:
            assert c.hello["layout"] == "rows"

    arun(go(), 120)


def test_a_small_scene_and_an_unbounded_server_send_rows(bridge, pump_scene, factory_1k):
    small = bridge(pump_scene, run=False)
    unbounded = bridge(factory_1k, run=False, max_state_bytes=0)

    async def go():
        assert (await _hello(small.url))["layout"] == "rows"
        assert (await _hello(unbounded.url, max_size=None))["layout"] == "rows"

    arun(go(), 120)


def test_client_refuses_an_unknown_layout():
    with pytest.raises(ValueError, match="'auto', 'rows' or 'compact'"):
        Client("ws://127.0.0.1:1/", hello="big")
