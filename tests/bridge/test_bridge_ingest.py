"""Telemetry push (issue 10): ``ingest`` messages from clients with the ingest role, fed through
BridgeIngestSource into the twin — and hostile batches rejected whole with a clear error."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _bridgeutil import OP_SECRET, OPERATOR, arun, recv_json, request, ws_connect

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Binding, Inbox, TelemetryError
from twinstage.telemetry._ingest import BridgeIngestSource

INGEST = "plc:ingest:ingest-secret-1"
ING_SECRET = INGEST.split(":", 2)[2]


def _source() -> BridgeIngestSource:
    return BridgeIngestSource([Binding("/Testbed/Pump", "ambientTemperature", "ingest", "room.temp", unit="degF"),
                               Binding("/Testbed/Tank", "level", "ingest", "tank.level", unit="percent"),
                               Binding("/Testbed/Valve1", "opening", "ingest", "valve.permille", scale=1000.0)])  # a deliberately odd scale


def test_the_source_converts_units_and_rejects_bad_batches_whole(pump_scene):
    twin = twinstage.open(pump_scene, rate=10)
    src = _source()
    src.bind(twin.table)
    inbox = Inbox()
    with pytest.raises(TelemetryError, match="not started"):
        src.push(["room.temp"], [70.0])
    src.start(inbox)
    assert src.push(["room.temp", "tank.level", "room.temp"], [77.0, 150.0, 212.0], [1000.0, 0.0, 1001.0], [0, 4, 0], arrival=2000.0) == 3
    batches, overflow = inbox.drain()
    assert overflow == []
    by = {b.channel: b for b in batches}
    t = by["ambientTemperature"]
    np.testing.assert_allclose(t.values, [25.0, 100.0])  # degF -> degC
    np.testing.assert_array_equal(t.event_time, [1000.0, 1001.0])
    assert list(t.rows) == [twin.table.row("/Testbed/Pump", "ambientTemperature")] * 2
    lvl = by["level"]
    assert lvl.values[0] == pytest.approx(1.5) and lvl.event_time[0] == 2000.0 and lvl.quality[0] == Quality.ESTIMATED
    for keys, vals, kw, msg in ((["room.temp", "nope"], [1.0, 2.0], {}, "sample 1.*unknown key 'nope'"),
                                (["room.temp", "tank.level"], [1.0, float("nan")], {}, "sample 1.*not finite"),
                                (["valve.permille"], [1e306], {}, "overflows after unit conversion"),
                                (["room.temp"], [1.0], {"times": [-1.0]}, "time"),
                                (["room.temp"], [1.0], {"quality": [300]}, "quality"),
                                (["room.temp"] * 10_001, [1.0] * 10_001, {}, "at most 10000"),
                                (["room.temp"], [1.0, 2.0], {}, "same length")):
        with pytest.raises(TelemetryError, match=msg):
            src.push(keys, vals, **kw)
        assert len(inbox) == 0  # nothing of a rejected batch was queued
    assert src.stats()["rejected_batches"] == 8 and src.stats()["samples"] == 3  # 7 bad batches + the one before start
    with pytest.raises(TelemetryError, match="already bound"):
        BridgeIngestSource([Binding("/Testbed/Pump", "ambientTemperature", "ingest", "k"), Binding("/Testbed/Tank", "level", "ingest", "k")])


def test_ingest_over_the_websocket_feeds_the_twin(bridge):
    src = _source()
    b = bridge(tokens=[INGEST, OPERATOR], ingest=src, max_message_bytes=4 << 20)
    b.twin.add_source(src)

    async def go():
        ws = await ws_connect(b.url, token=ING_SECRET)
        hello = await recv_json(ws, lambda m: m["type"] == "hello")
        assert hello["role"] == "ingest"
        a = await request(ws, {"type": "ingest", "id": "i1", "samples": [{"key": "room.temp", "value": 86.0}, {"key": "tank.level", "value": 120}]})
        assert a["type"] == "ack" and a["count"] == 2, a
        for bad, code in (({"samples": [{"key": "room.temp", "value": 1.0}, {"key": "nope", "value": 2.0}]}, "not_found"),
                          ({"samples": [{"key": "room.temp", "value": "hot"}]}, "bad_message"),
                          ({"samples": [{"key": "room.temp", "value": True}]}, "bad_message"),
                          ({"samples": [{"key": "room.temp", "value": 1.0, "extra": 1}]}, "bad_message"),
                          ({"samples": [{"key": "room.temp", "value": 1.0, "quality": 999}]}, "bad_message"),
                          ({"samples": [{"key": "room.temp", "value": 1.0}] * 10_001}, "bad_message"),
                          ({"samples": [{"key": "room.temp", "value": 1.0}, {"key": "valve.permille", "value": 1e306}]}, "invalid_value")):
            e = await request(ws, {"type": "ingest", "id": "bad", **bad})
            assert e["type"] == "error" and e["code"] == code, (bad if len(json.dumps(bad)) < 300 else "...", e)
        await ws.send('{"type": "ingest", "id": "nan", "samples": [{"key": "room.temp", "value": NaN}]}')
        e = await recv_json(ws, lambda m: m["type"] == "error")
        assert (e["code"], e["id"]) == ("bad_json", "nan")
        op = await ws_connect(b.url, token=OP_SECRET)
        await recv_json(op, lambda m: m["type"] == "hello")
        e = await request(op, {"type": "ingest", "id": "x", "samples": [{"key": "room.temp", "value": 1.0}]})
        assert e["code"] == "forbidden", e
        await op.close()
        loop = asyncio.get_running_loop()
        from _bridgeutil import wait_for

        ok = await loop.run_in_executor(None, lambda: wait_for(lambda: abs(b.twin.get("/Testbed/Pump", "ambientTemperature") - 30.0) < 1e-6, 10))
        assert ok, b.twin.get("/Testbed/Pump", "ambientTemperature")
        assert b.twin.get("/Testbed/Tank", "level") == pytest.approx(1.2)
        await ws.close()

    arun(go())
    assert src.stats()["samples"] == 2  # only the accepted batch
