"""``twinstage calibrate`` / ``twinstage detect`` end to end (subprocess), on real SKAB data and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "scenes" / "pump_testbed.usda"


def _cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "twinstage", *map(str, args)], capture_output=True, text=True, timeout=300, check=check)


def test_calibrate_on_skab_anomaly_free(shared_data, tmp_path):
    from pxr import Sdf

    data = shared_data / "skab" / "data" / "anomaly-free" / "anomaly-free.csv"
    out = tmp_path / "params.usda"
    r = _cli("calibrate", SCENE, data, "-o", out, "--rows", "0:300",
             "--params", "nominal_flow,nominal_current,shutoff_pressure,vibration1", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    table = {p["name"]: p for p in res["parameters"]}
    assert 115 < table["nominal_flow"]["value"] < 130  # the anomaly-free flow is ~122 L/min
    assert table["nominal_flow"]["identifiable"] and table["nominal_current"]["identifiable"]
    assert not table["shutoff_pressure"]["identifiable"]  # constant speed and valves: undetermined
    layer = Sdf.Layer.FindOrOpen(str(out))
    assert layer.GetPrimAtPath("/Testbed/Pump").attributes["twin:param:nominal_flow"].default == pytest.approx(table["nominal_flow"]["value"])
    prov = json.loads(layer.customLayerData["twinstage:calibration"])
    assert prov["scene"] == str(SCENE) and str(data) in prov["data_sha256"]


def test_calibrate_bad_input(tmp_path, pump_scene):
    bad = tmp_path / "bad.csv"
    bad.write_text("datetime;Pressure\n2020;1\n")
    r = _cli("calibrate", pump_scene, bad, "-o", tmp_path / "p.usda")
    assert r.returncode == 2 and "bad.csv:1: missing SKAB column" in r.stderr
    r = _cli("calibrate", tmp_path / "missing.usda", bad, "-o", tmp_path / "p.usda")
    assert r.returncode == 1 and "cannot open scene" in r.stderr and "missing.usda" in r.stderr and "Traceback" not in r.stderr


def test_detect_reports_alarm_spans(shared_data):
    f = shared_data / "skab" / "data" / "valve1" / "13.csv"
    r = _cli("detect", f, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)[0]
    # the labelled anomaly is rows 569-967: one alarm span inside/around it
    assert res["alarms"] and all(400 <= s < e for s, e in res["alarms"])
    assert any(s < 700 and e > 900 for s, e in res["alarms"])


def test_run_with_params_applies_identifiable_parameters_only(shared_data, tmp_path, pump_scene):
    import twinstage
    from twinstage.fidelity import apply_params

    data = shared_data / "skab" / "data" / "anomaly-free" / "anomaly-free.csv"
    params = tmp_path / "params.usda"
    r = _cli("calibrate", pump_scene, data, "-o", params, "--rows", "0:300", "--params", "nominal_flow,shutoff_pressure", "--json")
    assert r.returncode == 0, r.stderr
    fitted = {p["name"]: p for p in json.loads(r.stdout)["parameters"]}
    rec = tmp_path / "run.usdc"
    r = _cli("run", pump_scene, "--ticks", 3, "--params", params, "--record", rec)
    assert r.returncode == 0, r.stderr
    assert "applied /Testbed/Pump.nominal_flow" in r.stdout and "skipped (not identifiable) /Testbed/Pump.shutoff_pressure" in r.stdout
    flow = twinstage.Recording(rec).series("/Testbed/Pump", "flowRate")
    assert flow[-1] == pytest.approx(fitted["nominal_flow"]["value"])  # speed 1, valves open: flow = nominal flow
    import hashlib

    layers = json.loads(twinstage.Recording(rec).provenance["paramsLayers"])  # the run names the layer and its bytes
    assert layers == [{"path": str(params), "sha256": hashlib.sha256(params.read_bytes()).hexdigest(),
                       "applied": ["/Testbed/Pump.nominal_flow"], "skipped": ["/Testbed/Pump.shutoff_pressure"]}]
    with twinstage.open(pump_scene, headless=True) as twin:
        res = apply_params(twin, params, include_unidentifiable=True)
        assert sorted(res["applied"]) == ["/Testbed/Pump.nominal_flow", "/Testbed/Pump.shutoff_pressure"]
    r = _cli("run", pump_scene, "--ticks", 1, "--params", data)
    assert r.returncode == 2 and "calibration layer" in r.stderr
