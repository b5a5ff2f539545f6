"""What-if from now: predictions start from the running twin's current state and leave it alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import twinstage
from twinstage.scenarios import whatif

ROOT = Path(__file__).resolve().parents[2]


def test_whatif_forks_current_state():
    twin = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True)
    twin.set("/Testbed/Pump", ambientTemperature=40.0)
    twin.set("/Testbed/Valve2", opening=0.5)
    twin.run(ticks=600)  # 60 s: the motor warms towards its new equilibrium
    before = {n: twin.get("/Testbed/Pump", n) for n in ("motorTemperature", "pressure")}
    tick = twin.tick_count
    w = whatif(twin, [{"name": "close", "at": 10.0, "set": "Valve2.opening", "value": 0.3}], horizon=30.0,
               grid={"events.close.value": "0.2:1.0:3"})
    assert twin.tick_count == tick and {n: twin.get("/Testbed/Pump", n) for n in before} == before  # the twin is untouched
    assert len(w.runs) == 3 and all(r.status == "ok" for r in w.runs)
    assert w.start_sim_time == pytest.approx(60.0) and len(w.times) == 300 and w.times[0] == pytest.approx(0.1)
    mt = w.band("/Testbed/Pump.motorTemperature")
    # starts from the twin's warm motor, not the scene's default 89.5 °C
    assert mt["mean"][0] == pytest.approx(before["motorTemperature"], abs=0.05) and abs(mt["mean"][0] - 89.5) > 0.5
    p = w.band("/Testbed/Pump.pressure")
    t = w.times
    assert np.allclose(p["min"][t < 10], p["max"][t < 10])  # same until the event (valve still at the twin's 0.5)
    assert p["mean"][t < 10][0] == pytest.approx(before["pressure"])
    assert (p["max"][t > 11] - p["min"][t > 11] > 0.05).all()  # then the predictions spread
    assert (p["p10"] <= p["mean"]).all() and (p["mean"] <= p["p90"]).all()


def test_whatif_keeps_calibrated_params():
    twin = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True)
    from dataclasses import replace

    m = twin.models["pump_loop"]
    m.params = replace(m.params, nominal_flow=100.0)
    twin.run(ticks=2)
    w = whatif(twin, [], horizon=1.0)
    assert w.band("/Testbed/Pump.flowRate")["mean"][-1] == pytest.approx(100.0)
