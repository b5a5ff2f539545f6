"""The scenario library (scenes/scenarios/) runs as regression tests: every expectation holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twinstage.scenarios import load_spec, run_scenario

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = sorted(p for p in (ROOT / "scenes" / "scenarios").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))


def test_library_covers_both_scenes():
    scenes = {str(load_spec(p).scene) for p in LIBRARY}
    assert any("pump_testbed" in s for s in scenes) and any("factory" in s for s in scenes)
    assert len(LIBRARY) >= 4


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_scenario_meets_its_expectations(path, tmp_path):
    res = run_scenario(path, cache_dir=tmp_path)
    assert res.status == "ok", res.error
    assert res.expectations, "a library scenario must expect something"
    assert res.passed, res.report()


def test_expectations_can_fail(tmp_path):
    """The same run with a throttle too weak to raise pressure fails its expectation (the check is real)."""
    res = run_scenario(ROOT / "scenes/scenarios/valve2_throttle.toml", overrides={"events.throttle.value": 0.95})
    failed = [e for e in res.expectations if not e["passed"]]
    assert res.status == "ok" and failed and "Pump.pressure exceeds" in failed[0]["text"]
    assert not res.passed


def test_events_take_effect_at_their_time():
    res = run_scenario(ROOT / "scenes/scenarios/valve2_throttle.toml")
    p = res.series["/Testbed/Pump.pressure"]
    t = res.times
    assert np.allclose(p[t <= 120.0 + 1e-9], p[0])  # before the throttle: nominal
    assert p[np.searchsorted(t, 120.1 - 1e-9)] > 0.2  # the tick after t = 120 s sees it
    assert res.units["/Testbed/Pump.pressure"] == "bar"


def test_sensor_fault_holds_value_and_flags_bad():
    res = run_scenario(ROOT / "scenes/scenarios/sensor_faults.toml")
    key = "/Testbed/Sensors/PressureSensor.pressure"
    a, t, v = res.alarms[key], res.times, res.series[key]
    assert not a[t < 60 - 1e-9].any() and a[(t > 60) & (t < 120)].all() and not a[t > 121].any()
    assert np.allclose(v[(t > 60) & (t < 120)], v[np.searchsorted(t, 60.0 - 1e-9) - 1])  # last good value held
    assert not res.errors  # deliberate failures are not run errors


def test_same_seed_same_result(tmp_path):
    a = run_scenario(ROOT / "scenes/scenarios/inlet_cavitation.toml", record=tmp_path / "a" / "rec.usdc")
    b = run_scenario(ROOT / "scenes/scenarios/inlet_cavitation.toml", record=tmp_path / "b" / "rec.usdc")
    assert a.metrics == b.metrics
    # same name, same depth: the root (which names its chunk folder) and every chunk are byte-identical
    files = {d: {p.relative_to(tmp_path / d): p.read_bytes() for p in sorted((tmp_path / d).rglob("*")) if p.is_file()} for d in "ab"}
    assert files["a"] == files["b"] and len(files["a"]) >= 2


def test_cli_run_scenario(tmp_path, pump_scene):
    spec = ROOT / "scenes/scenarios/sensor_faults.toml"
    out = tmp_path / "run.usdc"
    p = subprocess.run([sys.executable, "-m", "twinstage", "run", str(pump_scene), "--scenario", str(spec), "--record", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("[PASS]") == 4
    from twinstage import Recording

    rec = Recording(out)
    assert len(rec.times) == 1800
    assert "sensor_faults" in rec.root.customLayerData["twinstage:scenario"]
    # a --duration that cuts the run before what the spec expects is a spec error, before anything runs
    p = subprocess.run([sys.executable, "-m", "twinstage", "run", str(pump_scene), "--scenario", str(spec), "--duration", "100"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "after the end of the run" in p.stderr


def test_replay_event_feeds_sensor_readings(shared_data):
    from twinstage.scenarios import parse_spec

    csv = shared_data / "skab" / "data" / "valve1" / "0.csv"
    spec = parse_spec({"name": "replay", "scene": str(ROOT / "scenes/pump_testbed.usda"), "duration": 20.0, "rate": 10.0,
                       "events": [{"at": 5.0, "replay": str(csv)}],
                       "expect": [{"attribute": "FlowMeter.flowRate", "below": 60.0, "after": 6.0},
                                  {"attribute": "Pump.flowRate", "final_between": [124.0, 126.0]}]})
    res = run_scenario(spec)
    assert res.passed, res.report()
    meter = res.series["/Testbed/Sensors/FlowMeter.flowRate"]
    assert np.allclose(meter[res.times < 5.0 - 1e-9], 125.2, atol=0.1)  # simulated until the replay starts


def test_params_layer_and_model_overrides(tmp_path):
    """A calibration layer (as `twinstage calibrate -o` writes it) applies first; inline model overrides win over it."""
    from pxr import Sdf

    from twinstage.scenarios import parse_spec

    layer = Sdf.Layer.CreateNew(str(tmp_path / "params.usda"))
    layer.customLayerData = {"twinstage:calibration": "{}"}
    ps = Sdf.CreatePrimInLayer(layer, "/Testbed/Pump")
    ps.specifier = Sdf.SpecifierOver
    for name, value in (("nominal_flow", 100.0), ("fluid_rise", 7.0)):
        a = Sdf.AttributeSpec(ps, f"twin:param:{name}", Sdf.ValueTypeNames.Double)
        a.default = value
        a.customData = {"identifiable": True, "std": 0.1}
    layer.Save()
    base = {"name": "p", "scene": str(ROOT / "scenes/pump_testbed.usda"), "duration": 2.0, "params": str(tmp_path / "params.usda")}
    res = run_scenario(parse_spec(base))
    assert res.series["/Testbed/Pump.flowRate"][-1] == pytest.approx(100.0)
    assert res.provenance["models"]["pump_loop"]["parameters"]["fluid_rise"] == 7.0
    res = run_scenario(parse_spec({**base, "models": {"pump_loop": {"nominal_flow": 90.0}}}))
    assert res.series["/Testbed/Pump.flowRate"][-1] == pytest.approx(90.0)
    assert res.provenance["models"]["pump_loop"]["parameters"]["fluid_rise"] == 7.0
