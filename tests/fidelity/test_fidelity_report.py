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
