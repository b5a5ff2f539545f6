"""OpcUaSource against a real asyncua server (a subprocess on a loopback port) serving
SKAB values with source timestamps and Good/Uncertain/Bad status codes; a server that
disappears and comes back; binding errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from services import OpcUaServer, _skab_rows

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Binding, Inbox, TelemetryError
from twinstage.telemetry._opcua import OpcUaSource

PS, TS, FM = "/Testbed/Sensors/PressureSensor", "/Testbed/Sensors/MotorTemperatureSensor", "/Testbed/Sensors/FlowMeter"


def ua(prim: str, attr: str, node: str, **kw) -> Binding:
    return Binding(prim, attr, "opcua", node, **kw)


@pytest.fixture
def table(pump_scene):
    twin = twinstage.open(pump_scene)
    yield twin.table
    twin.close()


@pytest.fixture(scope="module")
def skab_csv(request):
    """SKAB valve1/0.csv when the real data is there; else None: the server serves synthetic SKAB-like values."""
    try:
        data = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return None
    return data / "skab" / "data" / "valve1" / "0.csv"


@pytest.fixture
def server(skab_csv):
    s = OpcUaServer(skab_csv).start()
    yield s
    s.kill()


def collect(inbox: Inbox, until, timeout: float = 20.0) -> list:
    got, end = [], time.monotonic() + timeout
    while not until(got) and time.monotonic() < end:
        got += inbox.drain()[0]
        time.sleep(0.02)
    return got


def per_row(got, channel, row):
    xs = [(float(t), float(v), int(q), s.reason) for s in got if s.channel == channel for r, v, t, q in zip(s.rows, s.values, s.event_time, s.quality) if r == row]
    return xs


def test_skab_values_with_source_timestamps_and_status_codes(server, table, skab_csv):
    bs = [ua(PS, "pressure", "ns=2;s=Pressure", unit="kPa", scale=100.0), ua(TS, "motorTemperature", "ns=2;s=Temperature", unit="degC"),
          ua(FM, "flowRate", "ns=2;s=Flow", unit="L/min"), ua("/Testbed/Pump", "motorSpeed", "ns=2;s=Status"),
          ua("/Testbed/Pump", "voltage", "ns=2;s=NoSuchNode")]
    src = OpcUaSource(server.url, bs)
    src.bind(table)
    inbox = Inbox()
    t_start = time.time()
    src.start(inbox)
    try:
        assert src.wait_connected(30), src.last_error
        prow = table.row(PS, "pressure")
        got = collect(inbox, lambda g: {q for _, _, q, _ in per_row(g, "pressure", prow)} >= {0, Quality.UNCERTAIN, Quality.BAD})
        p = per_row(got, "pressure", prow)
        known = set(np.round(_skab_rows(str(skab_csv or ""))["Pressure"], 9))
        assert all(round(v, 9) in known for _, v, q, _ in p if q == 0)  # 100 × value kPa = value bar
        times = [t for t, *_ in p]
        assert times == sorted(times) and t_start - 5 < times[0] <= times[-1] < time.time() + 5  # SourceTimestamp, UNIX s
        unc = next(x for x in p if x[2] == Quality.UNCERTAIN)
        bad = next(x for x in p if x[2] == Quality.BAD)
        assert unc[3] == "opcua status UncertainLastUsableValue (ns=2;s=Pressure)"
        assert bad[3] == "opcua status BadSensorFailure (ns=2;s=Pressure)"
        flows = per_row(got, "flowRate", table.row(FM, "flowRate"))
        assert flows and all(q == 0 for _, _, q, _ in flows)
        st = per_row(got, "motorSpeed", table.row("/Testbed/Pump", "motorSpeed"))
        assert {(int(v) % 3, q) for _, v, q, _ in st if q != Quality.BAD} <= {(0, 0), (1, Quality.UNCERTAIN)} and len(st) >= 3
        assert {q for *_, q, _ in st} >= {0, Quality.UNCERTAIN}
        assert ("ns=2;s=NoSuchNode", "cannot subscribe: BadNodeIdUnknown") in list(src.rejects)
        s = src.stats()
        assert s["connected"] == 1 and s["unknown_nodes"] == 1 and s["bad_samples"] >= 1 and s["uncertain_samples"] >= 1
    finally:
        src.close()
    assert src.stats()["connected"] == 0


def test_server_disappears_and_comes_back(server, table):
    src = OpcUaSource(server.url, [ua(TS, "motorTemperature", "ns=2;s=Temperature")], reconnect_min=0.1, reconnect_max=0.5, watchdog=0.3)
    src.bind(table)
    inbox = Inbox()
    src.start(inbox)
    try:
        assert src.wait_connected(30), src.last_error
        assert collect(inbox, lambda g: len(g) >= 3)
        server.kill()
        end = time.monotonic() + 20
        while src.stats()["connected"] and time.monotonic() < end:
            time.sleep(0.05)
        assert src.stats()["connected"] == 0 and src.last_error
        inbox.drain()
        time.sleep(0.5)  # retries against a closed port, backing off
        assert not inbox.drain()[0]
        t_back = time.time()
        server.start()
        assert src.wait_connected(30), src.last_error
        got = collect(inbox, lambda g: len(g) >= 3)
        assert len(got) >= 3 and got[-1].event_time[0] >= t_back - 1
        assert src.stats()["reconnects"] >= 1 and src.stats()["disconnects"] >= 1
    finally:
        src.close()


def test_binding_errors_name_the_binding(table):
    with pytest.raises(TelemetryError, match=r"opcua:ns=2;x=Nope → .*not a NodeId"):
        OpcUaSource("opc.tcp://127.0.0.1:1/", [ua(PS, "pressure", "ns=2;x=Nope")])
    with pytest.raises(TelemetryError, match=r"opcua:ns=2;s=P → /Testbed/Sensors/PressureSensor.twin:pressure.*"):
        OpcUaSource("opc.tcp://127.0.0.1:1/", [ua(PS, "pressure", "ns=2;s=P", unit="kg")]).bind(table)
    with pytest.raises(TelemetryError, match=r"unknown target"):
        OpcUaSource("opc.tcp://127.0.0.1:1/", [ua("/Testbed/Nope", "pressure", "ns=2;s=P")]).bind(table)


def test_unreachable_server_never_blocks_and_keeps_retrying(table):
    from services import free_port

    src = OpcUaSource(f"opc.tcp://127.0.0.1:{free_port()}/", [ua(PS, "pressure", "ns=2;s=Pressure")], reconnect_min=0.05, reconnect_max=0.2)
    src.bind(table)

    src.start(Inbox())
    time.sleep(1.0)
    assert src.stats()["connected"] == 0 and src.last_error
    src.close()


def test_end_to_end_through_a_twin(server, pump_scene):
    twin = twinstage.open(pump_scene, headless=True)
    try:
        src = twin.add_source(OpcUaSource(server.url, [ua(PS, "pressure", "ns=2;s=Pressure", period=0.05)], name="plc"))
        assert src.wait_connected(30), src.last_error
        seen: set[int] = set()
        held = []
        for _ in range(3000):
            twin.tick()
            q = int(twin.quality(PS, "pressure"))
            seen.add(q & (Quality.BAD | Quality.UNCERTAIN))
            if q & Quality.BAD:
                held.append((twin.get(PS, "pressure"), twin.quality_reason(PS, "pressure")))
            if {0, Quality.UNCERTAIN, Quality.BAD} <= seen and held:
                break
            time.sleep(0.005)
        assert {0, Quality.UNCERTAIN, Quality.BAD} <= seen
        value, reason = held[0]
        assert np.isfinite(value) and "BadSensorFailure" in reason  # the previous good value is held, flagged
        assert twin.feeds.stats()["sources"]["plc"]["source_notifications"] > 0
    finally:
        twin.close()
