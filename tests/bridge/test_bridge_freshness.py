"""Freshness and quality reasons over the bridge (issue 8): a real server on 127.0.0.1, a real twin
ticking in real time, a CSV replay with a gap — the age grows, the STALE reason arrives, both clear."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import pytest
from _bridgeutil import VIEWER, VIEW_SECRET, arun, recv_json, wait_for, ws_connect

import twinstage
from twinstage.bridge import Client, Server
from twinstage.bridge._messages import SERVER_TYPES
from twinstage.telemetry import Binding, ReplaySource

P = "/Testbed/Sensors/PressureSensor"
C = "/Testbed/Sensors/CurrentSensor"
PUMP = "/Testbed/Pump"


def _csv(tmp_path):
    # pressure every 0.1 s for 0-0.5 s, nothing until 2.5 s (a 2 s gap), then again; current never
    times = [round(0.1 * i, 1) for i in range(6)] + [round(2.5 + 0.1 * i, 1) for i in range(60)]
    p = tmp_path / "gap.csv"
    p.write_text("time;Pressure\n" + "".join(f"{t};{0.1 + t / 100}\n" for t in times))
    return p


@pytest.fixture
def fed_bridge(tmp_path, pump_scene):
    twin = twinstage.open(pump_scene, rate=20.0, realtime=True)
    twin.add_source(ReplaySource(_csv(tmp_path), [Binding(P, "pressure", "csv", "Pressure", period=0.1, stale_after=5.0)], name="gap"))
    # the current sensor is fed too, but its data starts at sim time 1e6: STALE, "missing", age -1 (none yet)
    cur = Binding(C, "current", "csv", "Pressure", period=0.1, stale_after=5.0)
    twin.add_source(ReplaySource(_csv(tmp_path), [cur], name="cur", start=1e6))
    server = Server("127.0.0.1", 0, tokens=[VIEWER], http_dir=Path(__file__).resolve().parents[2] / "examples" / "browser")
    server.freshness_interval = 0.1
    twin.add_sink(server)
    th = threading.Thread(target=twin.run, kwargs={"ticks": 10**9}, daemon=True)
    th.start()
    yield twin, server
    twin.stop()
    th.join(10)
    twin.close()


def test_age_grows_stale_reason_arrives_then_both_clear(fed_bridge):
    twin, server = fed_bridge

    async def go():
        async with Client(server.url, token=VIEW_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed"])
            await c.wait_until(lambda c: c.fresh.messages > 0 and c.freshness(P, "pressure") < 0.2, 10)
            assert math.isnan(c.freshness(PUMP, "pressure"))  # simulated: never listed
            assert (PUMP, "pressure") not in c.freshness() and (P, "pressure") in c.freshness()
            assert c.freshness(C, "current") == math.inf and c.reason(C, "current").startswith("missing")
            await c.wait_until(lambda c: c.reason(P, "pressure").startswith("stale"), 10)
            assert c.freshness(P, "pressure") > 0.5  # period 0.1 s x 5
            await c.wait_until(lambda c: c.quality(P, "pressure") & 1, 5)  # the state says STALE too (its delta may trail)
            await c.wait_until(lambda c: c.reason(P, "pressure") == "good", 10)
            await c.wait_until(lambda c: c.freshness(P, "pressure") < 0.2, 5)
            assert c.reason(C, "current").startswith("missing")  # still flagged, not re-sent but kept
            return c.fresh.messages

    assert arun(go()) >= 10


def test_wire_format_validates_and_lists_indices_once(fed_bridge):
    twin, server = fed_bridge

    async def go():
        ws = await ws_connect(server.url, token=VIEW_SECRET)
        hello = await recv_json(ws, lambda m: m["type"] == "hello")
        index = {(a["prim"], a["attribute"]): a["index"] for a in hello["attributes"]}
        await ws.send('{"type":"subscribe","id":"s","prefixes":["/Testbed/Sensors/PressureSensor"],"attributes":[]}')
        first = await recv_json(ws, lambda m: m["type"] == "freshness")
        second = await recv_json(ws, lambda m: m["type"] == "freshness")
        await ws.close()
        return index, first, second

    index, first, second = arun(go())
    for m in (first, second):
        SERVER_TYPES["freshness"].model_validate(m)
    assert first["indices"] == [index[(P, "pressure")]] and len(first["ages"]) == 1  # only the subscribed fed entry
    assert second["indices"] == [] and len(second["ages"]) == 1  # same entries: not listed again
    assert second["tick"] >= first["tick"]


def test_a_client_without_fed_entries_gets_none_and_zero_turns_it_off(fed_bridge, pump_scene):
    twin, server = fed_bridge

    async def go():
        ws = await ws_connect(server.url, token=VIEW_SECRET)
        await recv_json(ws, lambda m: m["type"] == "hello")
        await ws.send('{"type":"subscribe","id":"s","prefixes":["/Testbed/Pump"],"attributes":[]}')
        await recv_json(ws, lambda m: m["type"] == "snapshot")
        with pytest.raises(asyncio.TimeoutError):
            await recv_json(ws, lambda m: m["type"] == "freshness", timeout=1.0)
        await ws.close()

    arun(go())
    s2 = Server("127.0.0.1", 0)
    s2.freshness_interval = 0
    t2 = twinstage.open(pump_scene, headless=True)
    t2.add_sink(s2)
    assert s2.freshness is None
    t2.close()


def test_the_client_refuses_a_freshness_message_that_does_not_line_up():
    from twinstage.bridge._freshness_view import FreshnessView

    v = FreshnessView()
    v.apply({"type": "freshness", "tick": 1, "simTime": 0.1, "indices": [3, 5], "ages": [0.5, -1.0],
             "reasons": [{"index": 5, "text": "missing"}]})
    assert v.ages == {3: 0.5, 5: math.inf} and v.reasons == {5: "missing"}
    v.apply({"type": "freshness", "tick": 2, "simTime": 0.2, "indices": [], "ages": [0.6, 0.0], "reasons": [{"index": 5, "text": ""}]})
    assert v.ages == {3: 0.6, 5: 0.0} and v.reasons == {}
    with pytest.raises(ValueError, match="3 ages for 2 entries"):
        v.apply({"type": "freshness", "tick": 3, "simTime": 0.3, "indices": [], "ages": [1.0, 2.0, 3.0], "reasons": []})


def test_the_browser_page_shows_age_and_reason_of_fed_rows(fed_bridge):
    from selenium.webdriver.common.by import By
    from test_bridge_clients import _chromium

    twin, server = fed_bridge
    driver = _chromium()
    try:
        driver.get(f"http://127.0.0.1:{server.port}/index.html?token={VIEW_SECRET}&encoding=json&prefix=/Testbed/Sensors")
        js = driver.execute_script
        assert wait_for(lambda: js("return window.twin && twin.ages.size") >= 2, 30), js("return window.twin && [twin.status, twin.errors]")
        find = "return twin.hello.attributes.find(a => a.prim === '{}' && a.attribute === '{}').index"
        idx = {k: js(find.format(*k)) for k in ((P, "pressure"), (C, "current"))}
        assert js(f"return twin.ages.get({idx[(C, 'current')]})") is None  # Infinity does not cross to Python; 'no data' below
        assert js(f"return twin.ages.get({idx[(C, 'current')]}) === Infinity") is True
        assert js(f"return twin.reasons.get({idx[(C, 'current')]})").startswith("missing")
        assert not js(f"return twin.ages.has({js('return twin.hello.attributes.length') + 5})")
        driver.find_element(By.CSS_SELECTOR, f"#prims tr[data-path='{C}']").click()  # select the current sensor
        assert wait_for(lambda: "no data" in driver.find_element(By.ID, "attrs").text, 10), driver.find_element(By.ID, "attrs").text
        rows = js("return Array.from(document.querySelectorAll('#attrs tr')).map(r => [r.textContent, r.title, r.style.color])")
        text, title, color = next(r for r in rows if "no data" in r[0])
        assert title.startswith("missing") and color == "rgb(153, 153, 153)", rows  # greyed, the reason as its tooltip
        assert driver.find_element(By.CSS_SELECTOR, f"#prims tr[data-path='{C}']").get_attribute("title").startswith("missing")
        driver.find_element(By.CSS_SELECTOR, f"#prims tr[data-path='{P}']").click()
        assert wait_for(lambda: " s ago" in driver.find_element(By.ID, "attrs").text, 10), driver.find_element(By.ID, "attrs").text
    finally:
        driver.quit()
