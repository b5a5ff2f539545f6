"""``twinstage report``: rendered from a real recording (SKAB replayed through the pump testbed)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import twinstage
from twinstage.telemetry import ReplaySource, read_bindings


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "twinstage", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def skab_recording(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    scene = d / "pump_testbed.usda"
    from twinstage.scenes import build_pump_testbed

    build_pump_testbed(scene)
    eng = twinstage.open(scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(shared_data / "skab" / "data" / "valve1" / "13.csv", read_bindings(eng.stage, kind="csv")))
    rec = d / "run.usdc"
    eng.record(rec)
    eng.run(ticks=1140)
    eng.close()
    return rec


def test_report_is_self_contained_with_plots_metrics_alarms_and_calibration(skab_recording, tmp_path):
    from twinstage.fidelity import calibrate, write_params_layer
    import numpy as np

    n = 300
    inputs = {"motorSpeed": np.ones(n), "inletOpening": np.ones(n), "outletOpening": np.ones(n), "ambientTemperature": np.full(n, 22.0)}
    rng = np.random.default_rng(0)
    res = calibrate(inputs, {"flowRate": 120 + rng.normal(0, 0.5, n)}, ["nominal_flow", "valve_resistance"])
    params = write_params_layer(res, tmp_path / "params.usda")
    out = tmp_path / "report.html"
    r = _cli("report", skab_recording, "-o", out, "--params", params)
    assert r.returncode == 0, r.stderr
    doc = out.read_text()
    assert doc.count('src="data:image/png;base64,') == 8 + 1  # one per sensor + the residual timeline
    assert not re.search(r'(src|href)="(https?:|file:|/)', doc)  # nothing external
    for sensor in ("FlowMeter", "PressureSensor", "CurrentSensor", "VoltageSensor", "Thermocouple"):
        assert f"/Testbed/Sensors/{sensor}" in doc
    assert "95 % block-bootstrap" in doc and "MAPE" in doc
    spans = re.search(r"Alarm spans: ([^<]*)\.", doc).group(1)
    first = float(spans.split("–")[0])
    assert 569 <= first <= 700, spans  # the labelled valve closing starts at row 569
    assert "valve_resistance" in doc and "<b>NO</b>" in doc  # the non-identifiable parameter is shown as such
    assert "sceneSha256" in doc and "recordingSha256" in doc


def test_report_bad_input(tmp_path):
    r = _cli("report", tmp_path / "missing.usdc", "-o", tmp_path / "r.html")
    assert r.returncode == 2 and "missing.usdc" in r.stderr and "Traceback" not in r.stderr
    scene = tmp_path / "factory.usda"
    assert _cli("scene", "generate", "--assets", "3", "-o", scene).returncode == 0
    rec = tmp_path / "f.usdc"
    assert _cli("run", scene, "--ticks", "5", "--record", rec).returncode == 0
    r = _cli("report", rec, "-o", tmp_path / "r.html")
    assert r.returncode == 2 and "no measured channels" in r.stderr, r.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_says_when_the_twin_needs_recalibration():
    import numpy as np

    from twinstage.fidelity._report import Pair, _drift_note

    rng = np.random.default_rng(4)
    n = 6000
    t = np.arange(n, dtype=float)
    sim = np.full(n, 100.0)

    def pair(name, meas):
        return Pair(f"/S/{name}", "flowRate", "/P", "flowRate", "L/min", t, meas, sim, np.zeros(n, np.uint8))

    steady = pair("A", 100 + rng.normal(0, 1, n))
    drifting_meas = 100 + rng.normal(0, 1, n)
    drifting_meas[4000:] += np.linspace(0, 2.0, 2000)  # the plant walks away from the model
    note = _drift_note([steady, pair("B", drifting_meas)], t)
    assert note.startswith("<b>NEEDS RECALIBRATION</b>") and "/S/B.twin:flowRate" in note and "/S/A" not in note
    first = float(note.split("drift from t = ")[1].split(" s")[0])
    assert 4000 < first < 6000
    calm = _drift_note([steady], t)
    assert "no drift" in calm and "NEEDS" not in calm
    short = Pair("/S/C", "flowRate", "/P", "flowRate", "L/min", t[:100], np.full(100, 100.0), sim[:100], np.zeros(100, np.uint8))
    assert "not run" in _drift_note([short], t[:100])  # too short to fit: said, not guessed
