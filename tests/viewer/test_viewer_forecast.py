"""A what-if band in the HUD (Viewer.show_forecast): drawn ghosted above the timeline, on lavapipe."""

from __future__ import annotations

import numpy as np
import pytest

import twinstage
from twinstage.scenarios import whatif
from twinstage.viewer import Viewer
from twinstage.viewer._forecast import Forecast

KEY = "/Testbed/Pump.pressure"
EVENTS = [{"name": "close", "at": 3.0, "set": "Valve2.opening", "value": 0.3}]


def _px(img: np.ndarray, area: dict, t: float, v: float) -> np.ndarray:
    h = img.shape[0]
    x = area["x0"] + (area["x1"] - area["x0"]) * t / area["tmax"]
    y = area["y0"] + (area["y1"] - area["y0"]) * (v - area["vmin"]) / (area["vmax"] - area["vmin"])
    return img[int(round(h - y)), int(round(x)), :3].astype(float)


@pytest.mark.usefixtures("gpu")
def test_forecast_band_is_drawn_above_the_timeline(pump_scene):
    with twinstage.open(pump_scene, headless=True) as twin:
        twin.set("/Testbed/Valve2", opening=0.6)
        twin.run(ticks=30)
        w = whatif(twin, EVENTS, horizon=10.0, grid={"events.close.value": [0.1, 0.5, 0.9]})
        v = Viewer(size=(480, 320), labels=False, quality="flat")
        twin.add_sink(v)
        twin.step(1)
        before = v.screenshot()
        v.show_forecast(w, KEY)
        img = v.screenshot()
        area = v.forecast_area
        assert area is not None and area["y0"] >= 40  # above the timeline strip (0..40 px)
        assert img.shape[1] == 480 and img.shape[0] == 320
        band = w.band(KEY)
        k = int(np.searchsorted(w.times, 8.0))
        t = float(w.times[k])
        mean = _px(img, area, t, float(band["mean"][k]))
        assert mean[0] > 180 and mean[2] < 90 and mean[0] - mean[2] > 120, mean  # the mean line: orange
        assert not (_px(before, area, t, float(band["mean"][k]))[0] - _px(before, area, t, float(band["mean"][k]))[2] > 120)  # not before
        lo, hi = float(band["min"][k]), float(band["max"][k])
        assert hi - lo > 0.1 * (area["vmax"] - area["vmin"])  # a wide band at t = 8 s: three futures
        inside = _px(img, area, t, lo + 0.05 * (hi - lo))
        above = _px(img, area, t, area["vmax"] - 0.02 * (area["vmax"] - area["vmin"]))
        # the ghosted band vs. the empty plot above it
        assert inside[0] - inside[2] > 40 and inside[0] - inside[2] > (above[0] - above[2]) + 30, (inside, above)
        early = _px(img, area, 0.5, float(band["mean"][int(np.searchsorted(w.times, 0.5))]))
        assert early[0] > 180 and early[2] < 90  # before the event all futures agree: the mean line is there too
        v.show_forecast(None)
        again = v.screenshot()
        np.testing.assert_array_equal(_px(again, area, t, float(band["mean"][k])), _px(before, area, t, float(band["mean"][k])))
        v.close()


def test_forecast_from_a_bridge_message_and_bad_input():
    msg = {"type": "forecast", "id": "w1", "prim": "/Testbed/Pump", "attribute": "pressure", "unit": "bar", "startTick": 5,
           "startSimTime": 0.5,
           "runs": 2, "times": [0.1, 0.2], "min": [1.0, 1.0], "p10": [1.0, 1.1], "mean": [1.1, 1.2], "p90": [1.2, 1.3], "max": [1.2, 1.4]}
    fc = Forecast.of(msg)
    assert fc.key == "/Testbed/Pump.pressure" and fc.unit == "bar" and fc.runs == 2 and fc.band["max"][1] == 1.4
    with pytest.raises(ValueError, match="which attribute"):
        Forecast.of(object())
