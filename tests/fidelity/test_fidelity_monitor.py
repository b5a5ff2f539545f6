"""The detector inside a running twin: SKAB replayed through the pump testbed, alarm on the labelled event."""

from __future__ import annotations

import numpy as np
import pytest

import twinstage
from twinstage.fidelity import AnomalyMonitor, WindowDetector, read_skab
from twinstage.telemetry import ReplaySource, read_bindings


def test_monitor_in_the_twin_alarms_on_skab_event_like_the_offline_detector(shared_data, pump_scene):
    f = shared_data / "skab" / "data" / "valve1" / "13.csv"
    x, label, _ = read_skab(f)
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(AnomalyMonitor())
    rows = []
    eng.on_frame(lambda frame: rows.append(mon._row()) if mon.rows > len(rows) else None)  # the rows it took
    eng.run(ticks=len(x))
    assert mon.status == "monitoring", mon.status
    assert len(mon.channels) == 8 and len(mon.detector.monitored) == 6  # two temperatures are slow
    raised = [e for e in mon.events if e["event"] == "raised"]
    start, end = np.flatnonzero(np.diff(np.r_[0, label, 0])).reshape(-1, 2)[0]
    assert raised and start <= raised[0]["tick"] <= start + 120, (start, mon.events)
    assert any("FlowRate" in c or "flow" in c.lower() for c in raised[0]["channels"]), raised[0]
    # the same rows streamed offline give the same scores: the twin runs the benchmarked detector
    det = WindowDetector(mon.detector.settings, channels=mon.names).fit(np.array(rows[:400]))
    scores, _ = det.run(np.array(rows[400:]))
    np.testing.assert_array_equal(scores, np.array(mon.scores))


def test_monitor_without_telemetry_reports_and_stays_quiet(pump_scene):
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    mon = eng.add_sink(AnomalyMonitor(train=100))
    eng.run(ticks=150)
    assert mon.status.startswith("cannot fit") and "no channel left" in mon.status
    assert not mon.alarm and not mon.events and not eng.errors


def test_all_sensors_bad_is_flagged_degraded_not_a_number(shared_data, pump_scene, tmp_path):
    src = shared_data / "skab" / "data" / "valve1" / "13.csv"
    lines = src.read_text().splitlines()
    head, rows = lines[0], lines[1:501]
    bad = []
    for line in lines[501:521]:  # 20 rows whose every reading is garbage
        cells = line.split(";")
        bad.append(";".join([cells[0]] + ["x"] * 8 + cells[9:]))
    f = tmp_path / "bad.csv"
    f.write_text("\n".join([head, *rows, *bad]) + "\n")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(AnomalyMonitor())
    from datetime import datetime

    t = [datetime.fromisoformat(ln.split(";")[0]) for ln in lines[1:521]]
    in_bad = int((t[510] - t[0]).total_seconds())  # sim time of a garbage row
    eng.run(ticks=in_bad)
    assert mon.status == "monitoring" and mon.degraded
    assert all(int(eng.table.quality(name)[row]) & 16 for _, name, row in mon.channels)  # BAD, not just stale
    assert np.isfinite(mon.score) and mon.detector.missing >= 8


def test_residual_monitor_rolling_metrics_and_drift_in_the_twin(shared_data, pump_scene):
    from twinstage.fidelity import ResidualMonitor

    f = shared_data / "skab" / "data" / "valve1" / "13.csv"
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(ResidualMonitor(window=100, fit_ticks=480))
    flow = "/Testbed/Sensors/FlowMeter.flowRate"
    seen, drift_at = [], []
    j = None

    def grab(frame):
        nonlocal j
        j = mon.names.index(flow)
        seen.append(mon.residual()[j])
        if mon.needs_recalibration and not drift_at:
            drift_at.append(frame.tick)

    eng.on_frame(grab)
    eng.run(ticks=700)
    assert len(mon.pairs) == 8 and mon.status == "monitoring"
    m = mon.metrics()[flow]
    last = np.array(seen[-100:])
    # rolling metrics = the same numbers computed offline from the per-tick residuals
    assert m["n"] == 100 and m["bias"] == pytest.approx(last.mean()) and m["mae"] == pytest.approx(np.abs(last).mean())
    # the default model (flow 125 L/min) is far from this experiment (32 L/min): simulated - measured > 0
    assert m["bias"] > 50 and m["unit"] == "L/min"
    # the valve closes at row 569: the flow residual's level changes and the drift monitor says so
    assert drift_at and 569 < drift_at[0] < 700, drift_at
    assert mon.drifting[flow]


def test_monitor_publishes_score_and_alarm_as_twin_state(shared_data, pump_scene, tmp_path):
    from pxr import Usd

    from twinstage.usd import declare_attribute

    stage = Usd.Stage.Open(str(pump_scene))
    pump = stage.GetPrimAtPath("/Testbed/Pump")
    declare_attribute(pump, "anomalyScore", "float", 0.0, unit="1", description="live anomaly score")
    declare_attribute(pump, "anomalyAlarm", "bool", False, unit="1", description="live anomaly alarm")
    stage.GetRootLayer().Save()
    f = shared_data / "skab" / "data" / "valve1" / "13.csv"
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(AnomalyMonitor(publish="/Testbed/Pump"))
    seen = []
    eng.on_frame(lambda fr: seen.append((fr.tick, eng.get("/Testbed/Pump", "anomalyAlarm"), eng.get("/Testbed/Pump", "anomalyScore"))))
    eng.run(ticks=900)
    raised = [e["tick"] for e in mon.events if e["event"] == "raised"][0]
    on = [t for t, a, _ in seen if a]
    assert on and on[0] == raised + 1  # the set enters the next tick's Frame
    assert max(s for _, _, s in seen) > 6.0


def test_monitor_applies_an_allowance_named_by_sensor_asset_id_like_the_bench(shared_data, pump_scene):
    from twinstage.fidelity import SKAB_ALLOWANCE, SKAB_SLOW, DetectorSettings

    f = shared_data / "skab" / "data" / "valve1" / "13.csv"
    x, _, names = read_skab(f)
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(AnomalyMonitor(settings=DetectorSettings(allowance=SKAB_ALLOWANCE + (("NoSuchSensor", 5.0),))))
    rows = []
    eng.on_frame(lambda frame: rows.append(mon._row()) if mon.rows > len(rows) else None)
    eng.run(ticks=len(x))
    allow = dict(zip(mon.names, mon.detector.allow.tolist()))
    assert allow["/Testbed/Sensors/Accelerometer2.vibration2"] == 1.93 and allow["/Testbed/Sensors/FlowMeter.flowRate"] == 1.03
    assert sorted(v for v in allow.values() if v != 1.0) == [1.03, 1.49, 1.93]  # the unknown entry matched nothing
    # the twin's scores are the bench's: the same detector on the SKAB file, channel for channel
    order = [mon._ids.index(c) for c in names]  # the monitor's channels in SKAB column order
    r = np.array(rows)[:, order]
    bench = WindowDetector(DetectorSettings(slow=SKAB_SLOW, allowance=SKAB_ALLOWANCE), channels=names).fit(r[:400])
    scores, _ = bench.run(r[400:])
    np.testing.assert_allclose(scores, np.array(mon.scores), rtol=1e-12)
