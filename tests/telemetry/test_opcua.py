"""OpcUaSource against a real asyncua server (a subprocess on a loopback port) serving
SKAB values with source timestamps and Good/Uncertain/Bad status codes; a server that
disappears and comes back; binding errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from services import OpcUaServer, _skab_rows, binder, drain_until

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Inbox, TelemetryError
from twinstage.telemetry._opcua import OpcUaSource

PS, TS, FM = "/Testbed/Sensors/PressureSensor", "/Testbed/Sensors/MotorTemperatureSensor", "/Testbed/Sensors/FlowMeter"


ua = binder("opcua")


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
    return drain_until(inbox, until, timeout, every=0.02)


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


MAP_OPCUA = """version = 1
description = "the test server's nodes"
[defaults]
kind = "opcua"
period = 0.2
align = "hold"
staleAfter = 10.0
[[bindings]]
prim = "/Testbed/Sensors/PressureSensor"
attribute = "pressure"
key = "ns=2;s=Pressure"
unit = "bar"
name = "ua_pressure"
[[bindings]]
prim = "/Testbed/Sensors/FlowMeter"
attribute = "flowRate"
key = "ns=2;s=Flow"
unit = "L/min"
name = "ua_flow"
"""


def test_cli_run_opcua_records_source_values_with_status_mapped_quality(tmp_path, pump_scene, skab_csv):
    """``twinstage run SCENE --opcua opc.tcp://…`` against the real asyncua server: the recording holds
    the served values and the Uncertain/Bad status codes as quality flags."""
    import subprocess
    import sys

    srv = OpcUaServer(skab_csv, rate=5.0).start()  # 5 updates/s: every 7th Uncertain, every 11th Bad
    try:
        cli = [sys.executable, "-m", "twinstage"]
        (tmp_path / "ua.toml").write_text(MAP_OPCUA)
        layer = tmp_path / "ua.usda"
        bind = subprocess.run([*cli, "bind", str(pump_scene), "--map", str(tmp_path / "ua.toml"), "-o", str(layer)],
                              capture_output=True, text=True, timeout=120)
        assert bind.returncode == 0, bind.stderr
        proc = subprocess.run([*cli, "run", str(layer), "--opcua", srv.url, "--duration", "6", "--realtime", "--rate", "10",
                               "--record", str(tmp_path / "rec.usdc")], capture_output=True, text=True, timeout=180)
    finally:
        srv.kill()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "samples applied" in proc.stdout, proc.stdout
    rec = twinstage.Recording(tmp_path / "rec.usdc")
    col = list(rec.channels["pressure"]).index(rec.prims.index(PS))
    values = rec.channel("pressure")[:, col]
    quality = rec.channel("pressure", quality=True)[:, col]
    assert rec.units["pressure"] == "bar"  # the map says bar: no conversion, the served numbers as they are
    known = set(np.round(_skab_rows(str(skab_csv or ""))["Pressure"], 6))
    good = values[quality == 0]
    assert len(good) >= 10 and all(round(float(v), 6) in known for v in good)  # the served values
    flags = set(int(q) for q in quality)
    assert Quality.UNCERTAIN in flags or any(q & Quality.UNCERTAIN for q in flags)  # UncertainLastUsableValue
    assert any(q & Quality.BAD for q in flags)  # BadSensorFailure: previous good value held, flagged
    held = [i for i in range(1, len(values)) if quality[i] & Quality.BAD and not quality[i - 1] & Quality.BAD]
    assert held and all(values[i] == values[i - 1] for i in held)
    fcol = list(rec.channels["flowRate"]).index(rec.prims.index(FM))
    assert (rec.channel("flowRate", quality=True)[:, fcol] == 0).sum() >= 10  # the flow node is always Good


def test_back_off_bounds_are_checked(table):
    for lo, hi in ((0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)):
        with pytest.raises(TelemetryError, match=r"opcua:opc.tcp://127.0.0.1:1/: reconnect back-off needs 0 < reconnect_min <= reconnect_max"):
            OpcUaSource("opc.tcp://127.0.0.1:1/", [ua(PS, "pressure", "ns=2;s=P")], reconnect_min=lo, reconnect_max=hi)
    with pytest.raises(TelemetryError, match=r"mqtt:127.0.0.1:1: reconnect back-off"):
        from twinstage.telemetry._mqtt import MqttSource

        MqttSource("127.0.0.1", 1, [binder("mqtt")(PS, "pressure", "p")], reconnect_min=3.0, reconnect_max=1.0)
    src = OpcUaSource("opc.tcp://127.0.0.1:1/", [ua(PS, "pressure", "ns=2;s=P")])
    with pytest.raises(TelemetryError, match="bind\\(table\\) before start"):
        src.start(Inbox())
