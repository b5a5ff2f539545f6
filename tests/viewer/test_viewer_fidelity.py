"""The viewer shows fidelity state: the anomaly alarm pulses the pump, replay gaps grey the sensor
(real STALE flags), estimates carry a light hatch and ± σ, the inspect panel gives each reading's age."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import twinstage
from twinstage.state import Quality
from twinstage.viewer import Viewer

pytestmark = pytest.mark.usefixtures("gpu")
SENSOR = "/Testbed/Sensors/FlowMeter"


def patch(img: np.ndarray, xy: tuple[float, float], r: int = 2) -> np.ndarray:
    x, y = int(round(xy[0])), int(round(xy[1]))
    return img[y - r:y + r + 1, x - r:x + r + 1, :3].reshape(-1, 3).astype(float)


def _skab_rows(src: Path, dst: Path, keep) -> Path:
    lines = src.read_text().splitlines()
    dst.write_text("\n".join([lines[0]] + [lines[1 + i] for i in keep]) + "\n")
    return dst


def test_anomaly_alarm_pulses_the_pump(pump_scene):
    with twinstage.open(pump_scene, headless=True) as twin:
        v = Viewer(size=(480, 300), labels=False, quality="flat")
        twin.add_sink(v)
        v.hud_visible = False
        twin.step(1)
        pos = v.object_screen_position("/Testbed/Pump")
        calm = [patch(v.screenshot(time=t / (4 * 1.5)), pos, 3) for t in (3.0, 1.0)]
        np.testing.assert_array_equal(calm[0], calm[1])  # no alarm: no pulse
        twin.set("/Testbed/Pump", anomalyAlarm=True)  # what the live AnomalyMonitor publishes
        twin.step(1)
        low, high = (patch(v.screenshot(time=t / (4 * 1.5)), pos, 3) for t in (3.0, 1.0))
        assert np.abs(low - high).mean() > 15  # the pump pulses
        assert high.mean(axis=0)[0] > high.mean(axis=0)[2] + 40  # red
        obj = v.state.prims.index("/Testbed/Pump")
        assert v.overlays.channel_level("anomalyAlarm", obj) == 2
        twin.set("/Testbed/Pump", anomalyAlarm=False)
        twin.step(1)
        v.screenshot()  # overlays update at draw time
        assert v.overlays.channel_level("anomalyAlarm", obj) == 0


def test_replay_gap_greys_the_sensor(shared_data, tmp_path, pump_scene):
    from twinstage.telemetry._attach import attach_replay

    csv = _skab_rows(shared_data / "skab" / "data" / "valve1" / "1.csv", tmp_path / "gap.csv", [*range(0, 20), *range(45, 60)])
    with twinstage.open(pump_scene, headless=True) as twin:
        attach_replay(twin, csv)
        v = Viewer(size=(640, 400), labels=False, quality="flat", color_by="flowRate", vmin=0, vmax=150)
        twin.add_sink(v)
        v.hud_visible = False
        twin.run(ticks=150)  # 15 s: fresh 1 Hz samples
        assert not twin.quality(SENSOR, "flowRate") & Quality.STALE
        pos = v.object_screen_position(SENSOR)
        fresh = patch(v.screenshot(), pos, 1)
        panel = [s for s, _ in v._selection_lines(v.state.prims.index(SENSOR))]
        assert any(s.startswith("flowRate = ") and " age " in s for s in panel)
        twin.run(ticks=150)  # 30 s: no sample for ~10 s (the rows removed): STALE
        assert twin.quality(SENSOR, "flowRate") & Quality.STALE
        stale = patch(v.screenshot(), pos, 1)

        def sat(p):
            return (p.max(axis=1) - p.min(axis=1)).mean()

        assert sat(fresh) > 50 and sat(stale) < 25, (sat(fresh), sat(stale))
        age = twin.freshness(SENSOR, "flowRate")
        line = next(s for s in (t for t, _ in v._selection_lines(v.state.prims.index(SENSOR))) if s.startswith("flowRate = "))
        assert "stale" in line and f"age {age:.1f} s" in line


def test_estimates_are_hatched_and_carry_their_std(shared_data, tmp_path, pump_scene):
    from twinstage.fidelity import Assimilator
    from twinstage.telemetry._attach import attach_replay

    csv = _skab_rows(shared_data / "skab" / "data" / "valve1" / "1.csv", tmp_path / "short.csv", range(0, 60))
    imgs = {}
    for assimilate in (False, True):
        with twinstage.open(pump_scene, headless=True) as twin:
            attach_replay(twin, csv)
            if assimilate:
                twin.add_stage(Assimilator())
            v = Viewer(size=(640, 400), labels=False, quality="flat", color_by="flowRate", vmin=0, vmax=150)
            twin.add_sink(v)
            v.hud_visible = False
            twin.run(ticks=100)
            pump = v.state.prims.index("/Testbed/Pump")
            imgs[assimilate] = patch(v.screenshot(), v.object_screen_position("/Testbed/Pump"), 6)
            lines = [s for s, _ in v._selection_lines(pump)]
            flow = next(s for s in lines if s.startswith("flowRate = "))
            if assimilate:
                std = twin.get("/Testbed/Pump", "flowRateStd")
                assert std > 0 and " ± " in flow and "L/min" in flow and "estimated" in flow
                assert not any(s.startswith("flowRateStd") for s in lines)  # folded into the ± of flowRate
                assert v._gpu.state()[pump][1] == 3  # shader code: estimated with an uncertainty
            else:
                assert " ± " not in flow
    lum = {k: p.mean(axis=1) for k, p in imgs.items()}
    def light(lv):  # share of pixels much lighter than the body
        return (lv > np.median(lv) + 60).mean()

    assert light(lum[False]) < 0.05  # a plain model value: one flat colour
    assert 0.08 < light(lum[True]) < 0.45  # light stripes across the estimate
