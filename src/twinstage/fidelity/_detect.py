"""Live (causal) anomaly detection on multichannel telemetry, with an alarm state.

:class:`WindowDetector` is fitted on a stretch of normal operation (SKAB's protocol:
the first 400 rows of an experiment) and then streamed row by row
(:meth:`WindowDetector.update`), using only data up to the current row. Per row it
returns an anomaly *score* and an *alarm* state with hysteresis.

Method (chosen by measurement on SKAB valve1 files 0-7 only; see ``docs/fidelity.md``
and ``bench/skab.py`` for the held-out figures):

* each channel is standardised with the training mean and standard deviation;
* a causal moving average over the last ``window`` rows (the window is pre-filled
  with the tail of the training data, so the first streamed row already has a full
  window) turns 1 Hz noise into a level estimate;
* that level is divided by the *long-run* variability of a ``window``-mean seen in
  training (the spread of non-overlapping block means — it includes the
  autocorrelation and slow wander of each channel, floored at the i.i.d. value
  ``1/sqrt(window)``), giving one z-score per channel;
* each z-score is divided by the channel's *allowance* (``allowance``, >= 1; default
  1): how much further than the 400 training rows show that channel's level wanders
  in normal operation, learned from a normal recording of the plant
  (:func:`~twinstage.fidelity.learn_allowance`: the 0.8-quantile of |z| over
  experiment-sized pieces of normal operation, divided by 3, floored at 1 — on SKAB's
  anomaly-free run the two vibration channels get 1.49 and 1.93, flow 1.03, the rest 1);
* the score is the largest allowed |z| over the monitored channels; channels listed in
  ``slow`` (thermal states whose level follows ambient and load, not the fault) are
  not monitored by level;
* the alarm rises after ``confirm`` consecutive rows with score > ``on`` and clears
  after ``release`` consecutive rows with score below ``off`` or below
  ``relative_off`` × the alarm's peak score (hysteresis; the relative part lets an
  alarm clear when the plant has come most of the way back to its trained level even
  if it settles slightly off it — measured: it removes post-event false alarms).

The defaults (with the allowance learned from SKAB's anomaly-free run) are the setting
with the best F1 on the tuning files (valve1 0-7) pooled with the anomaly-free rows (all
normal) among those meeting FAR <= 15 % and MAR <= 25 % on that pool, from a grid over
window, clear window, on/off, confirm, release, relative_off and the allowance's
quantile and divisor; the held-out files were not used to choose.

Measured alternatives (single flow channel, RMS instead of max, thermal *rates*,
training-sd instead of long-run scaling, drift allowances from the anomaly-free
recording) are listed with their figures in ``docs/fidelity.md``.

The batch path (:meth:`WindowDetector.run`) computes the same numbers: both use the
same running (cumulative) sums, in the same order, so streamed and batch results are
bit-identical (``tests/fidelity/test_fidelity_detect.py`` checks it). The running sums
grow with the stream; their rounding error is ~1e-16 × |sum|, which at 1 Hz and |z| ~ 10
takes more than 10⁹ rows (decades) to reach 1e-6 of a window mean.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


class DetectorError(ValueError):
    """Bad detector input: too little training data, wrong shape, unknown channel."""


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Settings shared by every stream (the SKAB benchmark uses these defaults for all files)."""

    window: int = 30  #: rows in the causal moving average
    on: float = 6.0  #: score above which a row counts towards raising the alarm
    off: float = 4.8  #: score below which a row counts towards clearing it
    confirm: int = 3  #: consecutive rows above ``on`` that raise the alarm
    release: int = 30  #: consecutive rows below ``off`` that clear it
    relative_off: float = 0.2  #: also clear below this fraction of the alarm's peak score (0 = off)
    slow: tuple[str, ...] = ()  #: channel names not monitored by level (slow thermal states)
    #: (channel name, divisor >= 1) pairs: normal wander beyond training (:func:`learn_allowance`)
    allowance: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if int(self.window) != self.window or self.window < 2:
            raise DetectorError(f"window must be an integer >= 2, got {self.window!r}")
        if not (np.isfinite(self.on) and np.isfinite(self.off) and 0 <= self.off <= self.on):
            raise DetectorError(f"need finite 0 <= off <= on, got on={self.on!r} off={self.off!r}")
        if not (np.isfinite(self.relative_off) and 0 <= self.relative_off < 1):
            raise DetectorError(f"relative_off must be in [0, 1), got {self.relative_off!r}")
        for item in self.allowance:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], (int, float, np.number)) and np.isfinite(item[1]) and item[1] >= 1):
                raise DetectorError(f"allowance entries must be (channel name, finite divisor >= 1), got {item!r}")
        for name in ("confirm", "release"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise DetectorError(f"{name} must be an integer >= 1, got {v!r}")


#: SKAB's thermal channels (motor body and fluid temperature): slow states.
SKAB_SLOW = ("Temperature", "Thermocouple")
#: SKAB's allowance: ``learn_allowance`` on SKAB's anomaly-free run (8 pieces of 1150
#: rows, window 30), rounded; ``bench/skab.py`` learns it afresh from the data folder's
#: normal file and uses this only when the folder has none.
SKAB_ALLOWANCE = (("Accelerometer1RMS", 1.49), ("Accelerometer2RMS", 1.93), ("Volume Flow RateRMS", 1.03))


@dataclass
class _Hysteresis:
    on: float
    off: float
    confirm: int
    release: int
    relative_off: float = 0.0
    alarm: bool = False
    count: int = 0
    peak: float = 0.0

    def step(self, score: float) -> bool:
        if not self.alarm:
            self.count = self.count + 1 if score > self.on else 0
            if self.count >= self.confirm:
                self.alarm, self.count, self.peak = True, 0, score
        else:
            self.peak = max(self.peak, score)
            self.count = self.count + 1 if score < max(self.off, self.relative_off * self.peak) else 0
            if self.count >= self.release:
                self.alarm, self.count, self.peak = False, 0, 0.0
        return self.alarm


@dataclass
class WindowDetector:
    """Causal moving-window z-score detector with an alarm state (see the module docstring)."""

    settings: DetectorSettings = field(default_factory=DetectorSettings)
    channels: Sequence[str] | None = None  #: channel names (columns); default c0, c1, …

    def __post_init__(self) -> None:
        self._fitted = False

    # -- fitting -------------------------------------------------------------------
    def fit(self, train) -> "WindowDetector":
        """Learn per-channel location and scales from normal operation ``train`` (rows × channels)."""
        x = np.asarray(train, dtype=np.float64)
        if x.ndim != 2:
            raise DetectorError(f"training data must be 2-D (rows × channels), got shape {x.shape}")
        w = int(self.settings.window)
        if x.shape[0] < 2 * w:
            raise DetectorError(f"need at least 2 × window = {2 * w} training rows, got {x.shape[0]}")
        names = list(self.channels) if self.channels is not None else [f"c{j}" for j in range(x.shape[1])]
        if len(names) != x.shape[1]:
            raise DetectorError(f"{len(names)} channel names for {x.shape[1]} columns")
        unknown = [s for s in self.settings.slow if s not in names]
        if unknown:
            raise DetectorError(f"slow channel(s) {unknown} not among channels {names}")
        unknown = [a for a, _ in self.settings.allowance if a not in names]
        if unknown:
            raise DetectorError(f"allowance channel(s) {unknown} not among channels {names}")
        self.allow = np.ones(len(names))  #: per-channel divisor of the z-score (>= 1)
        for a, v in self.settings.allowance:
            self.allow[names.index(a)] = float(v)
        finite = np.isfinite(x)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DetectorError(f"training data has a non-finite value at row {bad[0]}, channel {names[bad[1]]!r}")
        self.channels = tuple(names)
        self.mean = x.mean(axis=0)
        sd = x.std(axis=0)
        constant = sd <= 1e-12 * np.maximum(1.0, np.abs(self.mean))
        self.sd = np.where(constant, 1.0, sd)
        z = (x - self.mean) / self.sd
        nb = x.shape[0] // w
        blocks = z[: nb * w].reshape(nb, w, -1).mean(axis=1)
        self.scale = np.maximum(np.sqrt((blocks**2).mean(axis=0)), 1.0 / np.sqrt(w))
        monitored = ~constant & ~np.isin(np.array(names), np.array(self.settings.slow, dtype=object))
        self.monitored = np.flatnonzero(monitored)
        self.ignored = tuple(n for n, c in zip(names, constant) if c)  #: constant in training: not monitored
        if self.monitored.size == 0:
            raise DetectorError("no channel left to monitor (all constant in training or slow)")
        self._tail = z[-(w - 1) :] if w > 1 else z[:0]
        self.reset()
        self._fitted = True
        return self

    def reset(self) -> None:
        """Back to the state right after :meth:`fit` (window pre-filled with the training tail)."""
        w = int(self.settings.window)
        d = self._tail.shape[1]
        self._csum = np.zeros(d)
        self._ring: collections.deque[np.ndarray] = collections.deque(maxlen=w)
        self._ring.append(self._csum.copy())
        for row in self._tail:
            self._csum = self._csum + row
            self._ring.append(self._csum.copy())
        s = self.settings
        self._hyst = _Hysteresis(s.on, s.off, s.confirm, s.release, s.relative_off)
        self.missing = 0  #: non-finite values seen while streaming (counted, treated as no evidence)
        self.z = np.zeros(d)  #: last per-channel z-scores (which channels drive the alarm)

    # -- streaming -----------------------------------------------------------------
    def _standardise(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.sd
        bad = ~np.isfinite(z)
        if bad.any():
            self.missing += int(bad.sum())
            z = np.where(bad, 0.0, z)
        return z

    def update(self, row) -> tuple[float, bool]:
        """Feed one row (one value per channel); returns ``(score, alarm)``."""
        if not self._fitted:
            raise DetectorError("fit() the detector before streaming")
        x = np.asarray(row, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.mean.shape[0]:
            raise DetectorError(f"row has {x.shape[0]} values, detector has {self.mean.shape[0]} channels")
        z = self._standardise(x)
        self._csum = self._csum + z
        w = int(self.settings.window)
        oldest = self._ring[0]
        self._ring.append(self._csum.copy())
        self.z = (self._csum - oldest) / w / self.scale
        score = float((np.abs(self.z[self.monitored]) / self.allow[self.monitored]).max())
        return score, self._hyst.step(score)

    def run(self, rows, *, levels: bool = False) -> tuple[np.ndarray, ...]:
        """Stream many rows at once (vectorised scores); same results as calling :meth:`update` per row.

        Returns ``(scores, alarms)``, plus the per-row, per-channel z-scores (before the
        allowance) with ``levels=True``."""
        if not self._fitted:
            raise DetectorError("fit() the detector before streaming")
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise DetectorError(f"rows must be (n, {self.mean.shape[0]}), got shape {x.shape}")
        if x.shape[0] == 0:
            return (np.zeros(0), np.zeros(0, dtype=bool)) + ((np.zeros((0, x.shape[1])),) if levels else ())
        w = int(self.settings.window)
        z = self._standardise(x)
        # the same sequential additions as update(): row 0 of ``c`` continues the running sum
        c = np.cumsum(np.vstack([self._csum[None, :], z]), axis=0)[1:]
        past = np.vstack([np.array(self._ring), c])  # running sums, oldest first
        n = x.shape[0]  # the ring always holds exactly ``w`` running sums
        oldest = past[np.arange(n)]
        zz = (c - oldest) / w / self.scale
        scores = (np.abs(zz[:, self.monitored]) / self.allow[self.monitored]).max(axis=1)
        alarms = np.fromiter((self._hyst.step(float(s)) for s in scores), dtype=bool, count=n)
        self._csum = c[-1].copy()
        for r in past[-w:]:
            self._ring.append(r.copy())
        self.z = zz[-1]
        return (scores, alarms, zz) if levels else (scores, alarms)


def learn_allowance(normal, settings: DetectorSettings | None = None, channels: Sequence[str] | None = None, *,
                    piece: int = 1150, train: int = 400, quantile: float = 0.8, divisor: float = 3.0
                    ) -> tuple[tuple[str, float], ...]:
    """Per-channel allowance from normal operation (what a plant owner has): the
    ``quantile`` of |z| over each experiment-sized ``piece`` (fit on its first ``train``
    rows, the rest streamed), divided by ``divisor`` and floored at 1.

    ``normal`` is one recording (rows × channels) or a list of them; pieces never span
    two recordings. The result goes into :attr:`DetectorSettings.allowance`.
    """
    s = settings or DetectorSettings()
    s = DetectorSettings(window=s.window, on=s.on, off=s.off, confirm=s.confirm, release=s.release,
                         relative_off=s.relative_off, slow=s.slow)  # no allowance while learning one
    if not (0 < quantile < 1 and np.isfinite(divisor) and divisor > 0 and train < piece):
        raise DetectorError(f"need 0 < quantile < 1, divisor > 0 and train < piece, got {quantile}, {divisor}, {train}, {piece}")
    recordings = [normal] if isinstance(normal, np.ndarray) and np.ndim(normal) == 2 else list(normal)
    levels, names, mon = [], None, None
    for rec in recordings:
        x = np.asarray(rec, dtype=np.float64)
        for start in range(0, x.shape[0] - piece + 1, piece):
            det = WindowDetector(s, channels=channels).fit(x[start : start + train])
            levels.append(np.abs(det.run(x[start + train : start + piece], levels=True)[2]))
            names, mon = det.channels, det.monitored
    if not levels:
        raise DetectorError(f"normal recording too short: need at least one piece of {piece} rows")
    q = np.quantile(np.vstack(levels), quantile, axis=0)
    return tuple((names[j], float(max(1.0, q[j] / divisor))) for j in mon.tolist())
