"""Calibration of the pump loop: recover known parameters, flag non-identifiable ones, USD layer, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from twinstage.fidelity import CalibrationError, PumpLoopSimulator, calibrate, write_params_layer
from twinstage.models._builtin import PumpParams

N = 400
T = np.arange(N)
NAMES = ["nominal_flow", "shutoff_pressure", "nominal_current", "motor_tau"]
TRUE = np.array([118.0, 0.45, 2.55, 700.0])
NOISE = {"flowRate": 0.5, "pressure": 0.005, "current": 0.02, "motorTemperature": 0.1}
INIT = {"motorTemperature": 40.0, "fluidTemperature": 25.0}


def _inputs(valves_move=True):
    return {
        "motorSpeed": np.where(T < 150, 0.7, np.where(T < 300, 1.0, 0.85)),
        "inletOpening": np.where((T // 50) % 2 == 0, 1.0, 0.5) if valves_move else np.ones(N),
        "outletOpening": np.ones(N),
        "ambientTemperature": np.full(N, 22.0),
    }


def _measure(inputs, seed):
    truth = replace(PumpParams(), **dict(zip(NAMES, TRUE)))
    out = PumpLoopSimulator(1).simulate(truth, inputs, 1.0, INIT)
    rng = np.random.default_rng(seed)
    return {c: out[c][:, 0] + rng.normal(scale=s, size=N) for c, s in NOISE.items()}


def test_simulator_copies_are_independent_and_vectorised():
    inputs = _inputs()
    sim = PumpLoopSimulator(3)
    p = replace(PumpParams(), nominal_flow=np.array([100.0, 125.2, 150.0]))
    out = sim.simulate(p, inputs, 1.0, INIT)
    single = PumpLoopSimulator(1).simulate(replace(PumpParams(), nominal_flow=150.0), inputs, 1.0, INIT)
    np.testing.assert_allclose(out["flowRate"][:, 2], single["flowRate"][:, 0], rtol=1e-12)
    assert (out["flowRate"][:, 0] < out["flowRate"][:, 1]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_known_parameters_within_reported_uncertainty(seed):
    r = calibrate(_inputs(), _measure(_inputs(), seed), NAMES, initial=INIT, windows=2)
    assert r.success and r.identifiable.all()
    z = (r.values - TRUE) / r.std
    assert (np.abs(z) < 3.5).all(), dict(zip(NAMES, z))
    assert (r.std / TRUE < 0.02).all()
    assert np.isfinite(r.window_spread).all()
    assert 0.8 < r.rms_weighted_residual < 1.2  # residuals at the noise level


def test_non_identifiable_parameter_is_reported():
    """With both valves always open, the valve resistance has no effect on any output."""
    inputs = _inputs(valves_move=False)
    r = calibrate(inputs, _measure(inputs, 3), ["nominal_flow", "valve_resistance"], initial=INIT)
    table = {row["name"]: row for row in r.table()}
    assert table["nominal_flow"]["identifiable"]
    assert not table["valve_resistance"]["identifiable"]
    assert not np.isfinite(table["valve_resistance"]["std"]) or table["valve_resistance"]["std"] > 0.5 * 0.05


def test_params_layer_has_overs_and_provenance(tmp_path):
    from pxr import Sdf

    src = tmp_path / "data.csv"
    src.write_text("x\n1\n")
    r = calibrate(_inputs(), _measure(_inputs(), 0), NAMES[:2], initial=INIT, sources=[src])
    out = write_params_layer(r, tmp_path / "params.usda")
    layer = Sdf.Layer.FindOrOpen(str(out))
    spec = layer.GetPrimAtPath("/Testbed/Pump")
    assert spec.specifier == Sdf.SpecifierOver
    assert spec.attributes["twin:param:nominal_flow"].default == pytest.approx(r.values[0])
    prov = json.loads(layer.customLayerData["twinstage:calibration"])
    assert prov["data_sha256"][str(src)] == __import__("hashlib").sha256(b"x\n1\n").hexdigest()
    assert len(prov["covariance"]) == 2 and prov["method"].startswith("scipy")
    assert layer.defaultPrim == "Testbed" and layer.customLayerData["twinstage:tool"].startswith("twinstage ")
    write_params_layer(r, out)  # rewriting an open layer works
    assert Sdf.Layer.FindOrOpen(str(out)).GetPrimAtPath("/Testbed/Pump") is not None


def test_bad_input():
    inputs = _inputs()
    meas = _measure(inputs, 0)
    with pytest.raises(CalibrationError, match="unknown parameter"):
        calibrate(inputs, meas, ["nope"])
    with pytest.raises(CalibrationError, match="too few"):
        calibrate({k: v[:2] for k, v in inputs.items()}, {"flowRate": meas["flowRate"][:2]}, NAMES)
    with pytest.raises(CalibrationError, match="no measured channels"):
        calibrate(inputs, {}, NAMES)
    with pytest.raises(CalibrationError, match="'flowRate' has shape"):
        calibrate(inputs, {"flowRate": meas["flowRate"][:10]}, NAMES)
    with pytest.raises(CalibrationError, match="fewer than 2 finite"):
        calibrate(inputs, {"flowRate": np.full(N, np.nan)}, NAMES)
    with pytest.raises(CalibrationError, match="not produced"):
        calibrate(inputs, {"torque": meas["flowRate"]}, NAMES)
    with pytest.raises(CalibrationError, match="diverged"):  # zero nominal flow: the pump curve is 0/0
        calibrate(inputs, meas, ["nominal_flow"], bounds={"nominal_flow": (0.0, 1e-300)})
    with pytest.raises(CalibrationError, match="empty bounds"):
        calibrate(inputs, meas, ["nominal_flow"], bounds={"nominal_flow": (5.0, 1.0)})
