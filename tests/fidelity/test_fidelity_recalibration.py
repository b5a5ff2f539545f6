"""``twin:needsRecalibration`` as live twin state: the drift monitor's verdict published on the pump.

A synthetic SKAB-format recording (stationary AR(1) noise around the pump model's own
levels, so the calibrated model matches the plant) is replayed through the pump testbed
twice: as is (the verdict must stay false) and with a slow bias injected into the
pressure sensor (the verdict must turn true after the bias starts, name the pressure
sensor, and reach the twin's state on the next Frame).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

import twinstage
from twinstage.fidelity import ResidualMonitor
from twinstage.fidelity._cli import attach_live, live_summary
from twinstage.fidelity._skab import SKAB_CHANNELS
from twinstage.telemetry import ReplaySource, read_bindings

ROWS, FIT, BIAS_AT = 2400, 600, 1500
#: the pump model's steady levels, in SKAB column order (pressure in bar, flow in L/min …)
LEVEL = np.array([0.213, 0.268, 2.4, 0.111, 89.5, 28.5, 228.62, 125.2])
NOISE = np.array([0.005, 0.005, 0.05, 0.02, 0.3, 0.1, 1.0, 1.0])


def _recording(path, *, bias: float, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(ROWS, 8)) * np.sqrt(1 - 0.7**2)
    x = np.zeros((ROWS, 8))
    for i in range(1, ROWS):
        x[i] = 0.7 * x[i - 1] + e[i]
    x = LEVEL + NOISE * x
    x[BIAS_AT:, 3] += np.linspace(0.0, bias, ROWS - BIAS_AT)  # the pressure sensor slowly reads high
    t0 = datetime(2020, 3, 9, 10, 0, 0)
    lines = ["datetime;" + ";".join(SKAB_CHANNELS) + ";anomaly;changepoint"]
    for i, row in enumerate(x):
        lines.append(f"{(t0 + timedelta(seconds=i)).isoformat(sep=' ')};" + ";".join(f"{v:.6g}" for v in row) + ";0.0;0.0")
    path.write_text("\n".join(lines) + "\n")


def _replay(scene, csv):
    eng = twinstage.open(scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(csv, read_bindings(eng.stage, kind="csv")))
    mon = eng.add_sink(ResidualMonitor(fit_ticks=FIT, publish="/Testbed/Pump"))
    seen = []
    eng.on_frame(lambda fr: seen.append((fr.tick, bool(eng.get("/Testbed/Pump", "needsRecalibration")))))
    eng.run(ticks=ROWS - 5)
    return eng, mon, seen


def test_slow_bias_sets_needs_recalibration_on_the_pump(pump_scene, tmp_path):
    clean, biased = tmp_path / "clean.csv", tmp_path / "biased.csv"
    _recording(clean, bias=0.0)
    _recording(biased, bias=0.15)  # 7.5 noise-sd over 900 s: slow, never a jump
    eng, mon, seen = _replay(pump_scene, clean)
    assert mon.status == "monitoring" and mon.published and not eng.errors
    assert not mon.needs_recalibration and not mon.events
    assert not any(v for _, v in seen)  # the model matches the plant: the twin never says recalibrate

    eng, mon, seen = _replay(pump_scene, biased)
    assert mon.needs_recalibration and not eng.errors
    raised = [e for e in mon.events if e["event"] == "raised"]
    assert raised and BIAS_AT < raised[0]["tick"] < ROWS, mon.events
    assert raised[0]["sensors"] == ["/Testbed/Sensors/PressureSensor.pressure"], raised[0]
    on = [t for t, v in seen if v]
    assert on and on[0] == raised[0]["tick"] + 1  # the set enters the next tick's Frame
    assert all(v for t, v in seen if t > on[0])  # and stays while the drift lasts


def test_without_the_declared_attribute_nothing_is_published(pump_scene):
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    mon = eng.add_sink(ResidualMonitor(fit_ticks=FIT, publish="/Testbed/Tank"))  # the tank declares no verdict
    eng.run(ticks=3)
    assert not mon.published and mon.pairs and not eng.errors


def test_run_detect_attaches_the_drift_monitor_where_the_scene_declares_it(pump_scene):
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    added = attach_live(eng, detect=True)
    assert added["residuals"].publish == "/Testbed/Pump"
    eng.run(ticks=3)
    assert any(line.startswith("drift monitor: collecting") for line in live_summary(added))
