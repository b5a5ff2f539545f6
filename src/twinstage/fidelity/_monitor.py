"""The live anomaly detector inside a running twin: a sink on the engine's Frames.

``twin.add_sink(AnomalyMonitor())`` watches every *measured* twin attribute (rows whose
role is ``measured``: the sensors telemetry feeds). The first ``train`` rows fit a
:class:`~twinstage.fidelity.WindowDetector`; from then on each row streams
through ``update`` — exactly what ``bench/skab.py`` measures. A row is a tick on
which a new telemetry sample arrived (``per_sample``; every tick when nothing is fed). Values flagged BAD (or
STALE: no fresh sample) enter as missing, never as numbers.

State for the twin's consumers: :attr:`score`, :attr:`alarm`, :attr:`degraded` (no usable
measurement this tick: the score then carries no evidence), :attr:`z` (per-channel
z-scores: which sensors drive it), and :attr:`events` — one dict per alarm raised or
cleared (tick, sim time, the prims of the top channels). Temperature channels (a
unit convertible to kelvin) are slow thermal states and are not monitored by level.
An allowance in ``settings`` (:func:`~twinstage.fidelity.learn_allowance`) may name a
channel as ``prim.attribute`` or by its sensor's ``twin:assetId`` (the pump testbed's are
SKAB's column names, so ``SKAB_ALLOWANCE`` applies as is); entries matching nothing are
ignored. With ``publish="/Testbed/Pump"`` it also sets that prim's ``twin:anomalyScore`` (float)
and ``twin:anomalyAlarm`` (bool) on each row when the scene declares them, so the state
reaches every sink through the Frames (the pump testbed authors
``twin:anomalyAlarm:alarmHigh = 1``: the viewer pulses the pump while it is set).
A monitor that cannot fit (e.g. every reading constant in training: a twin with no
telemetry) says so in :attr:`status` and stays quiet; it never breaks the tick.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from twinstage.state import Quality

from ._detect import DetectorError, DetectorSettings, WindowDetector

log = logging.getLogger(__name__)
_MISSING = int(Quality.BAD) | int(Quality.STALE)


def _is_temperature(unit: str) -> bool:
    try:
        from twinstage.units import converter

        converter(unit, "K")
        return True
    except Exception:
        return False


class AnomalyMonitor:
    writes_stage = False

    def __init__(self, *, train: int = 400, settings: DetectorSettings | None = None, slow_temperatures: bool = True,
                 publish: str | None = None, per_sample: bool = True) -> None:
        self.train = int(train)
        self.per_sample = per_sample  #: one detector row per new telemetry sample, not per tick
        self.publish = publish  #: prim whose twin:anomalyScore / twin:anomalyAlarm (when declared) get the state
        self.base_settings = settings or DetectorSettings()
        self.slow_temperatures = slow_temperatures
        self.status = "not started"
        self.score = float("nan")
        self.alarm = False
        self.events: list[dict[str, Any]] = []
        self.scores: list[float] = []  #: one per streamed row
        self.rows = 0  #: rows taken (training and streamed)
        self.detector: WindowDetector | None = None
        self.degraded = False  #: the last tick had no usable measurement at all (all BAD/STALE)

    # -- Sink protocol ---------------------------------------------------------------
    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        table = ctx.table
        self.channels: list[tuple[str, str, int]] = []  # (prim, attribute, row)
        slow = []
        for name, ch in sorted(table.channels.items()):
            for row in np.flatnonzero(ch.role == "measured").tolist():
                prim = table.prims[int(ch.prim_index[row])]
                self.channels.append((prim, name, row))
                if self.slow_temperatures and _is_temperature(ch.unit):
                    slow.append(f"{prim}.{name}")
        self.names = [f"{p}.{a}" for p, a, _ in self.channels]
        self._ids = []  # each channel's sensor twin:assetId (an allowance may name it: SKAB columns)
        for p, _, _ in self.channels:
            prim = ctx.stage.GetPrimAtPath(p) if getattr(ctx, "stage", None) is not None else None
            attr = prim.GetAttribute("twin:assetId") if prim else None
            self._ids.append(attr.Get() if attr and attr.HasAuthoredValue() else None)
        self._targets = {}
        if self.publish:
            for attr in ("anomalyScore", "anomalyAlarm"):
                if attr in table.channels and self.publish in table.prim_index:
                    try:
                        table.row(self.publish, attr)
                        self._targets[attr] = True
                    except Exception:
                        pass
            if not self._targets:
                log.warning("anomaly monitor: %s declares neither twin:anomalyScore nor twin:anomalyAlarm: nothing published", self.publish)
        self._slow = tuple(slow)
        self._buf: list[np.ndarray] = []
        self.status = "collecting" if self.channels else "no measured channels in the scene"

    def _row(self) -> np.ndarray:
        table = self.ctx.table
        x = np.empty(len(self.channels))
        for i, (_, name, row) in enumerate(self.channels):
            q = int(table.quality(name)[row])
            x[i] = np.nan if q & _MISSING else float(table[name][row])
        return x

    def _new_sample(self) -> bool:
        """True when a monitored channel got a new telemetry sample this tick (good or bad: a
        bad one enters as missing), or none is fed. A 1 Hz sensor held over ten 10 Hz ticks
        is one row for the detector, as in bench/skab.py."""
        times = self.ctx.sample_times()
        seen = np.array([times[name][row] if name in times else np.nan for _, name, row in self.channels])
        fed = ~np.isnan(seen)
        if not fed.any():
            return True
        last = getattr(self, "_seen", None)
        new = bool((seen[fed] > last[fed]).any()) if last is not None else bool(np.isfinite(seen[fed]).any())
        self._seen = seen
        return new

    def consume(self, frame: Any) -> None:
        if not self.channels or self.status.startswith("cannot"):
            return
        if self.per_sample and not self._new_sample():
            return
        self.rows += 1
        x = self._row()
        self.degraded = not np.isfinite(x).any()
        if self.detector is None:
            if np.isfinite(x).all():
                self._buf.append(x)
            if len(self._buf) >= self.train:
                self._fit()
            return
        score, alarm = self.detector.update(x)
        self.score = score
        self.scores.append(score)
        if alarm != self.alarm:
            mon = self.detector.monitored
            top = mon[np.argsort(-np.abs(self.detector.z[mon]))[:2]]  # the monitored channels driving the score
            self.events.append({
                "tick": int(frame.tick), "sim_time": float(frame.sim_time), "event": "raised" if alarm else "cleared",
                "score": score, "channels": [self.names[int(i)] for i in top],
            })
            log.info("anomaly alarm %s at tick %d (score %.1f)", self.events[-1]["event"], frame.tick, score)
        self.alarm = alarm
        if self._targets:  # enters the next Frame like any other set: the bridge and viewer see it
            values: dict[str, Any] = {}
            if "anomalyScore" in self._targets:
                values["anomalyScore"] = score
            if "anomalyAlarm" in self._targets:
                values["anomalyAlarm"] = bool(alarm)
            self.ctx.set(self.publish, **values)

    def _fit(self) -> None:
        s = self.base_settings
        allow: dict[str, float] = {}  # entries name a channel (prim.attribute) or its sensor's twin:assetId
        for name, v in s.allowance:
            for n, i in zip(self.names, self._ids):
                if name in (n, i):
                    allow[n] = v
        settings = DetectorSettings(window=s.window, on=s.on, off=s.off, confirm=s.confirm, release=s.release,
                                    relative_off=s.relative_off, slow=tuple(s.slow) + self._slow, allowance=tuple(allow.items()))
        try:
            self.detector = WindowDetector(settings, channels=self.names).fit(np.array(self._buf))
            self.status = "monitoring"
        except DetectorError as exc:
            self.status = f"cannot fit: {exc}"
            log.warning("anomaly monitor: %s", self.status)
        self._buf = []

    def close(self) -> None:
        pass

    @property
    def z(self) -> dict[str, float]:
        if self.detector is None:
            return {}
        return {self.names[i]: float(self.detector.z[i]) for i in self.detector.monitored.tolist()}
