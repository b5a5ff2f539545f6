"""Fidelity: how well the twin matches the plant, and alarms when it departs.

* live anomaly detection — :class:`WindowDetector` (causal, ``update(row) -> (score, alarm)``);
  inside a running twin — :class:`AnomalyMonitor` (a sink); slow drift (needs
  recalibration) — :class:`DriftMonitor`
* metrics with uncertainty — :func:`error_metrics` (block-bootstrap CIs), :func:`alignment`;
  live in a twin — :class:`ResidualMonitor` (rolling metrics + drift monitor, a sink)
* assimilation — :class:`KalmanBank` (batched linear Kalman filter), :class:`AssimilationStage`;
  inside a running twin — :class:`Assimilator` (an engine stage: ``twin.add_stage(...)``)
* calibration — :func:`calibrate` (bounded least squares, covariance, identifiability),
  :func:`write_params_layer`, :func:`apply_params` (``twinstage run --params``)

* validation report — ``twinstage report RUN.usdc -o report.html`` (``_report``)

CLI: ``twinstage calibrate``, ``twinstage detect``, ``twinstage report`` (``_cli``).
Importing this package is cheap; scipy, matplotlib and pxr are imported where used.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "DetectorError": "._detect",
    "DetectorSettings": "._detect",
    "WindowDetector": "._detect",
    "SKAB_SLOW": "._detect",
    "SKAB_ALLOWANCE": "._detect",
    "learn_allowance": "._detect",
    "SKAB_CHANNELS": "._skab",
    "read_skab": "._skab",
    "Estimate": "._metrics",
    "MetricsError": "._metrics",
    "alignment": "._metrics",
    "block_length": "._metrics",
    "error_metrics": "._metrics",
    "time_skew": "._metrics",
    "AssimilationStage": "._kalman",
    "Assimilator": "._assimilate",
    "KalmanBank": "._kalman",
    "KalmanError": "._kalman",
    "AnomalyMonitor": "._monitor",
    "ResidualMonitor": "._residuals",
    "DriftError": "._drift",
    "DriftMonitor": "._drift",
    "CalibrationError": "._calibrate",
    "CalibrationResult": "._calibrate",
    "PumpLoopSimulator": "._calibrate",
    "calibrate": "._calibrate",
    "apply_params": "._params",
    "read_params_layer": "._params",
    "write_params_layer": "._calibrate",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
