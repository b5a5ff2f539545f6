"""The bridge's ``scenario`` command on the one scenario runner (scenarios.Script), over a real server."""

from __future__ import annotations

import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun

from twinstage.bridge import BridgeError, Client
from twinstage.scenarios import ScenarioError, parse_spec


def test_spec_with_a_ramp_runs_on_the_live_twin(bridge):
    spec = parse_spec({"name": "ramp_valve", "scene": "x", "duration": 2.0,
                       "events": [{"at": 0.0, "set": "Valve1.opening", "value": 0.8},
                                  {"at": 0.1, "ramp": "/Testbed/Valve1.opening", "to": 0.2, "over": 0.5}]})
    b = bridge(scenarios={"ramp_valve": spec, "short": [(0.0, "/Testbed/Valve2", "opening", 0.7)]})

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed/Valve1", "/Testbed/Valve2"])
            ack = await c.command("scenario", scenario="ramp_valve")
            assert ack["count"] == 2
            seen: list[float] = []

            def track(c):
                seen.append(c.get("/Testbed/Valve1", "opening"))
                return abs(seen[-1] - 0.2) < 1e-9

            await c.wait_until(track, 10)
            inner = [v for v in seen if 0.2 + 1e-6 < v < 0.8 - 1e-6]
            assert inner, f"the ramp passed through intermediate openings: {seen}"  # not a jump
            await c.wait_until(lambda c: any("'ramp_valve' finished" in e["message"] for e in c.events), 10)
            assert (await c.command("scenario", scenario="short"))["count"] == 1
            await c.wait_until(lambda c: c.get("/Testbed/Valve2", "opening") == 0.7, 10)

    arun(go())


def test_fault_scenarios_are_refused_on_a_live_twin(bridge):
    spec = parse_spec({"name": "dead", "scene": "x", "duration": 5.0, "events": [{"at": 1.0, "fail": "PressureSensor.reading"}]})
    b = bridge(scenarios={"dead": spec})

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            with pytest.raises(BridgeError) as e:
                await c.command("scenario", scenario="dead")
            assert e.value.code == "invalid_value" and "fail events" in str(e.value) and "headless" in str(e.value)
        async with Client(b.url, token=VIEW_SECRET) as c:  # a viewer may not start scenarios at all
            with pytest.raises(BridgeError) as e:
                await c.command("scenario", scenario="dead")
            assert e.value.code == "forbidden"

    arun(go())


def test_a_bad_scenario_fails_when_the_server_starts(bridge):
    with pytest.raises(ScenarioError, match=r"events\[0\].*unknown prim 'NoSuchValve'"):
        bridge(scenarios={"bad": [(0.0, "NoSuchValve", "opening", 0.5)]}, run=False)
    with pytest.raises(ScenarioError, match="outside"):
        bridge(scenarios={"big": [(0.0, "/Testbed/Valve1", "opening", 7.0)]}, run=False)
