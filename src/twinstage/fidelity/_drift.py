"""Slow drift monitor on calibrated-model residuals: says when the twin needs recalibration.

Residuals (measured − simulated, per channel) are averaged over blocks of ``block``
rows (1 Hz plant noise and its short autocorrelation average out), each block mean is
standardised by the spread of block means seen while fitting (right after a
calibration), and a two-sided CUSUM (Page 1954) with slack ``k`` accumulates
persistent departures: ``S⁺ ← max(0, S⁺ + z − k')``, ``S⁻ ← max(0, S⁻ − z − k')`` with
``k' = k + 2/sqrt(blocks fitted)`` (the fitted level is uncertain too: a CUSUM started
from a level off by 2 standard errors would otherwise drift into an alarm). A
channel whose ``S⁺`` or ``S⁻`` exceeds ``h`` is *drifting*; :attr:`DriftMonitor.needs_recalibration`
is true while any channel drifts. With the defaults (``k`` = 0.5, ``h`` = 8) the
in-control average run length is several hundred blocks (Siegmund's approximation),
and a shift of one block-sd is flagged after ~10 blocks.

A fast anomaly (valve closing, leak) also trips it; the detector
(:class:`~twinstage.fidelity.WindowDetector`) is the one that says *anomaly*, this one
says *the model no longer matches the plant* — read it while no anomaly alarm is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DriftError(ValueError):
    """Bad drift-monitor input (shape, too little fitting data)."""


@dataclass
class DriftMonitor:
    block: int = 60  #: rows averaged per CUSUM step
    k: float = 0.5  #: slack, in block-mean standard deviations
    h: float = 8.0  #: decision threshold

    def fit(self, residuals) -> "DriftMonitor":
        """Learn the residuals' level and block-mean spread from an in-control stretch (rows × channels)."""
        r = np.asarray(residuals, dtype=np.float64)
        if r.ndim == 1:
            r = r[:, None]
        if r.ndim != 2:
            raise DriftError(f"residuals must be (rows, channels), got shape {r.shape}")
        r = r[np.isfinite(r).all(axis=1)]
        nb = r.shape[0] // self.block
        if nb < 4:
            raise DriftError(f"need at least 4 blocks of {self.block} finite rows to fit, got {r.shape[0]} rows")
        self.mean = r.mean(axis=0)
        bm = r[: nb * self.block].reshape(nb, self.block, -1).mean(axis=1)
        iid = r.std(axis=0) / np.sqrt(self.block)
        self.sd = np.maximum(bm.std(axis=0, ddof=1), iid)
        self.sd = np.where(self.sd > 0, self.sd, 1.0)
        # the fitted level is itself uncertain (standard error 1/sqrt(blocks) in block-sd
        # units); a CUSUM started from a wrong level drifts, so the slack covers 2 SE of it
        self.k_eff = self.k + 2.0 / np.sqrt(nb)
        self.reset()
        return self

    def reset(self) -> None:
        d = self.mean.shape[0]
        self.s_pos = np.zeros(d)
        self.s_neg = np.zeros(d)
        self._acc = np.zeros(d)
        self._cnt = np.zeros(d, dtype=np.int64)
        self._rows = 0
        self.drifting = np.zeros(d, dtype=bool)  #: per channel

    @property
    def needs_recalibration(self) -> bool:
        return bool(self.drifting.any())

    def update(self, residual) -> bool:
        """Feed one row of residuals (NaN = missing); returns :attr:`needs_recalibration`."""
        x = np.asarray(residual, dtype=np.float64).reshape(-1)
        if x.shape != self.mean.shape:
            raise DriftError(f"row has {x.shape[0]} residuals, monitor has {self.mean.shape[0]} channels")
        ok = np.isfinite(x)
        self._acc = self._acc + np.where(ok, x, 0.0)
        self._cnt = self._cnt + ok
        self._rows += 1
        if self._rows == self.block:
            have = self._cnt > 0
            z = np.where(have, (self._acc / np.maximum(self._cnt, 1) - self.mean) / self.sd, 0.0)
            self.s_pos = np.maximum(0.0, self.s_pos + z - self.k_eff)
            self.s_neg = np.maximum(0.0, self.s_neg - z - self.k_eff)
            self.drifting = (self.s_pos > self.h) | (self.s_neg > self.h)
            self._acc[:] = 0.0
            self._cnt[:] = 0
            self._rows = 0
        return self.needs_recalibration

    def run(self, residuals) -> np.ndarray:
        """Feed many rows; returns ``needs_recalibration`` after each row (bool array)."""
        r = np.asarray(residuals, dtype=np.float64)
        if r.ndim == 1:
            r = r[:, None]
        return np.fromiter((self.update(row) for row in r), dtype=bool, count=r.shape[0])
