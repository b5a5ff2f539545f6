"""Batched Kalman filter: steady-state gain vs the DARE, agreement with filterpy, quality, PD repair."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_discrete_are

from twinstage.fidelity import AssimilationStage, KalmanBank, KalmanError
from twinstage.state import Quality

DT = 0.1
F = np.array([[1.0, DT], [0.0, 1.0]])  # constant velocity
H = np.array([[1.0, 0.0]])
Q = 0.05 * np.array([[DT**3 / 3, DT**2 / 2], [DT**2 / 2, DT]])
R = np.array([[0.4]])


def _truth(rng, n):
    x = np.zeros(2)
    xs, zs = [], []
    for _ in range(n):
        x = F @ x + rng.multivariate_normal(np.zeros(2), Q)
        xs.append(x)
        zs.append(H @ x + rng.normal(scale=np.sqrt(R[0, 0]), size=1))
    return np.array(xs), np.array(zs)


def test_steady_state_gain_matches_riccati():
    P = solve_discrete_are(F.T, H.T, Q, R)  # steady-state *predicted* covariance
    K_ss = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    bank = KalmanBank(np.zeros((3, 2)), np.stack([np.eye(2) * s for s in (0.1, 1.0, 100.0)]))
    rng = np.random.default_rng(0)
    for _ in range(400):
        bank.predict(F, Q)
        bank.update(rng.normal(size=(3, 1)), H, R)
    for a in range(3):  # every asset converges to the same gain from any start
        np.testing.assert_allclose(bank.K[a], K_ss, rtol=1e-6)
    assert not bank.degraded.any()


def test_agrees_with_filterpy():
    from filterpy.kalman import KalmanFilter

    rng = np.random.default_rng(42)
    _, zs = _truth(rng, 200)
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.x = np.array([[0.5], [0.0]])
    kf.P = np.eye(2) * 2.0
    kf.F, kf.H, kf.Q, kf.R = F, H, Q, R
    bank = KalmanBank(np.array([[0.5, 0.0]] * 4), np.eye(2) * 2.0)
    for z in zs:
        kf.predict()
        kf.update(z.reshape(1, 1))
        bank.predict(F, Q)
        bank.update(np.tile(z, (4, 1)), H, R)
        np.testing.assert_allclose(bank.x[2], kf.x[:, 0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bank.P[3], kf.P, rtol=1e-9, atol=1e-14)


def test_quality_bad_never_enters_uncertain_downweighted():
    bank = KalmanBank(np.zeros((3, 2)), np.eye(2))
    bank.predict(F, Q)
    q = np.array([[0], [int(Quality.BAD)], [int(Quality.UNCERTAIN)]], dtype=np.uint8)
    P_before = bank.P.copy()
    bank.update(np.array([[10.0], [1e9], [10.0]]), H, R, quality=q)
    assert bank.x[1, 0] == 0.0 and np.array_equal(bank.P[1], P_before[1])  # untouched
    assert 0 < bank.x[2, 0] < bank.x[0, 0]  # uncertain pulls less than good
    # an uncertain measurement acts exactly like one with R × factor
    ref = KalmanBank(np.zeros((1, 2)), np.eye(2))
    ref.predict(F, Q)
    ref.update(np.array([[10.0]]), H, R * 10.0)
    np.testing.assert_allclose(bank.x[2], ref.x[0])
    # NaN measurement is treated like Bad
    bank.update(np.array([[np.nan], [0.0], [0.0]]), H, R)
    assert np.isfinite(bank.x).all()


def test_lost_positive_definiteness_is_repaired_and_flagged():
    bank = KalmanBank(np.zeros((2, 2)), np.eye(2))
    bank.predict(F, np.array([[[-50.0, 0.0], [0.0, -50.0]], [[0.0, 0.0], [0.0, 0.0]]]))  # a broken Q on asset 0
    assert bank.degraded.tolist() == [True, False]
    assert (np.linalg.eigvalsh(bank.P[0]) > 0).all()
    bank.P[1, 0, 0] = np.nan
    bank.update(np.zeros((2, 1)), H, R)
    assert bank.degraded.tolist() == [True, True] and np.isfinite(bank.P).all()


def test_shapes_are_checked():
    with pytest.raises(KalmanError, match="x0"):
        KalmanBank(np.zeros(2), np.eye(2))
    bank = KalmanBank(np.zeros((2, 2)), np.eye(2))
    with pytest.raises(KalmanError, match="F must have shape"):
        bank.predict(np.eye(3), Q)
    with pytest.raises(KalmanError, match="quality shape"):
        bank.update(np.zeros((2, 1)), H, R, quality=np.zeros((2, 2)))


def test_assimilation_stage_matches_scalar_filter_and_flags():
    n = 4
    stage = AssimilationStage(n, process_var=0.01, meas_var=0.25, initial_var=1.0)
    bank = KalmanBank(np.zeros((n, 1)), np.eye(1))
    rng = np.random.default_rng(3)
    pred = np.zeros(n)
    q = np.array([0, int(Quality.UNCERTAIN), int(Quality.BAD), 0], dtype=np.uint8)
    for _ in range(50):
        z = 1.0 + rng.normal(scale=0.5, size=n)
        x, var, flags = stage.step(pred, z, q)
        bank.predict(np.eye(1), 0.01 * np.eye(1), u=(pred - bank.x[:, 0])[:, None])  # model carries the value
        bank.update(z[:, None], np.eye(1), 0.25 * np.eye(1), quality=q[:, None])
        np.testing.assert_allclose(x, bank.x[:, 0], rtol=1e-12)
        np.testing.assert_allclose(var, bank.P[:, 0, 0], rtol=1e-12)
        pred = x
    assert (flags == int(Quality.ESTIMATED)).all()
    assert x[2] == 0.0 and var[2] > var[0]  # Bad: the prediction, growing variance
    assert abs(x[0] - 1.0) < 0.3
    x, _, flags = stage.step(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.uint8))
    assert (flags & int(Quality.BAD)).all()
