"""Drift monitor: silent on stationary autocorrelated residuals, flags a slow ramp after it starts."""

from __future__ import annotations

import numpy as np
import pytest

from twinstage.fidelity import DriftError, DriftMonitor


def _ar1(rng, n, rho, d=2):
    x = np.zeros((n, d))
    e = rng.normal(size=(n, d)) * np.sqrt(1 - rho * rho)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return x


def test_no_drift_on_stationary_residuals():
    rng = np.random.default_rng(0)
    r = _ar1(rng, 3000 + 6000, 0.8) + [0.2, -1.0]
    mon = DriftMonitor().fit(r[:3000])
    flags = mon.run(r[3000:])
    assert not flags.any()


def test_flags_a_slow_ramp_after_it_starts_and_names_the_channel():
    rng = np.random.default_rng(1)
    r = _ar1(rng, 9000, 0.8)
    ramp_start = 6000
    r[ramp_start:, 1] += np.linspace(0, 1.5, 3000)  # the model slowly stops matching channel 1
    mon = DriftMonitor().fit(r[:3000])
    flags = mon.run(r[3000:])
    first = int(np.argmax(flags)) + 3000
    assert flags.any() and ramp_start < first < ramp_start + 2000
    assert mon.drifting.tolist() == [False, True]


def test_nan_rows_and_bad_input():
    rng = np.random.default_rng(2)
    r = _ar1(rng, 1000, 0.5)
    mon = DriftMonitor().fit(r)
    row = np.array([np.nan, 0.0])
    assert mon.update(row) is False
    with pytest.raises(DriftError, match="4 blocks"):
        DriftMonitor().fit(r[:100])
    with pytest.raises(DriftError, match="2 channels"):
        mon.update([1.0, 2.0, 3.0])
