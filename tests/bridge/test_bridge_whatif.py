"""The ``whatif`` request over a real server on 127.0.0.1: bands from the running twin's state, streamed
as ``forecast`` messages, then exactly one ack; the twin keeps ticking and is not changed."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun, ws_connect

from twinstage.bridge import BridgeError, Client
from twinstage.bridge._messages import SERVER_TYPES

EVENTS = [{"name": "close", "at": 2.0, "set": "Valve2.opening", "value": 0.3}]


def test_whatif_streams_bands_from_the_current_state(bridge):
    b = bridge(rate=20)
    b.twin.set("/Testbed/Valve2", opening=0.6)

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed/Pump"])
            await c.wait_until(lambda c: c.tick >= 20, 20)
            tick0 = c.tick
            res = await c.whatif(EVENTS, 6.0, grid={"events.close.value": [0.2, 0.5, 0.9]},
                                 attributes=["/Testbed/Pump.pressure", "/Testbed/Pump.motorTemperature"])
            ack, fc = res["ack"], res["forecasts"]
            assert ack["of"] == "whatif" and ack["count"] == 3 and "3/3 predictions" in ack["detail"]
            assert set(fc) == {"/Testbed/Pump.pressure", "/Testbed/Pump.motorTemperature"}
            p = fc["/Testbed/Pump.pressure"]
            SERVER_TYPES["forecast"].model_validate(p)
            assert p["unit"] and p["runs"] == 3 and p["startTick"] >= tick0 and p["startSimTime"] == pytest.approx(p["startTick"] / 20)
            t = np.array(p["times"])
            assert len(t) == 120 and t[0] == pytest.approx(0.05)
            lo, p10, mean, p90, hi = (np.array(p[k]) for k in ("min", "p10", "mean", "p90", "max"))
            assert (lo <= p10 + 1e-12).all() and (p10 <= mean + 1e-12).all() and (mean <= p90 + 1e-12).all() and (p90 <= hi + 1e-12).all()
            assert np.allclose(lo[t < 2.0], hi[t < 2.0])  # one future until the event …
            assert (hi[t > 3.0] - lo[t > 3.0] > 0.01).all()  # … then three
            # starts from the running twin's state (valve at 0.6), not the scene's defaults
            assert abs(mean[0] - c.get("/Testbed/Pump", "pressure")) < abs(mean[0]) * 0.2 + 1e-6
            assert b.twin.get("/Testbed/Valve2", "opening") == 0.6  # the twin is untouched
            await c.wait_until(lambda c: c.tick > ack["tick"], 10)  # and it keeps ticking

    arun(go())


def test_whatif_refusals_each_answered_once(bridge):
    b = bridge(rate=20)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as c:
            with pytest.raises(BridgeError) as e:
                await c.whatif(EVENTS, 5.0)
            assert e.value.code == "forbidden"
        async with Client(b.url, token=OP_SECRET) as c:
            for events, horizon, grid, attrs, code, text in [
                ([{"at": 1.0, "fail": "Pump.pressure"}], 5.0, None, (), "invalid_value", "headless"),
                ([{"at": 1.0, "set": "NoSuchValve.opening", "value": 0.5}], 5.0, None, (), "invalid_value", "NoSuchValve"),
                ([{"at": 9.0, "set": "Valve2.opening", "value": 0.5}], 5.0, None, (), "invalid_value", "after the end"),
                (EVENTS, 5.0, {"events.close.value": list(np.linspace(0, 1, 6)), "pump_loop.motor_tau": [300, 400, 500, 600, 700, 800]}, (),
                 "invalid_value", "36 points; at most 32"),
                (EVENTS, 86_000.0, None, (), "invalid_value", "ticks"),
                (EVENTS, 5.0, None, ["/Testbed/Pump.nope"], "not_found", "not a predicted attribute"),
            ]:
                with pytest.raises(BridgeError) as e:
                    await c.whatif(events, horizon, grid=grid, attributes=attrs)
                assert e.value.code == code and text in str(e.value), (text, str(e.value))
            assert not c.forecasts  # nothing streamed for a refused request
        # malformed on the wire: one error per id, naming the field
        ws = await ws_connect(b.url, token=OP_SECRET)
        await ws.send(json.dumps({"type": "whatif", "id": "m1", "events": [], "horizon": -1}))
        await ws.send(json.dumps({"type": "whatif", "id": "m2", "events": [], "horizon": 5, "grid": [{"key": "x", "values": ["a"]}]}))
        replies = {}
        while len(replies) < 2:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if m["type"] in ("ack", "error"):
                assert m["id"] not in replies
                replies[m["id"]] = m
        assert replies["m1"]["code"] == "bad_message" and "horizon" in replies["m1"]["message"]
        assert replies["m2"]["code"] == "bad_message" and "grid" in replies["m2"]["message"]
        await ws.close()

    arun(go())
