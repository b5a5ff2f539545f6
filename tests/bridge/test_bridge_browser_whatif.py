"""The browser client's what-if panel (examples/browser/whatif.js) in headless Chromium against a real
bridge on 127.0.0.1: an operator predicts the pump pressure under three valve settings and the chart
draws the returned band, ghosted after the live trace, exactly where the forecast's numbers put it; a
viewer token sees the control disabled with the reason, and the server refuses it too."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from _bridgeutil import OP_SECRET, VIEW_SECRET, wait_for
from test_bridge_clients import _chromium

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "examples" / "browser"
KEY = "/Testbed/Pump.pressure"


def _points(d: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", d)]).reshape(-1, 2)


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)


def test_operator_predicts_and_the_band_is_drawn_after_the_live_trace(bridge, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    b = bridge(http_dir=PAGE, rate=20)
    b.twin.set("/Testbed/Valve2", opening=0.6)
    driver = _chromium()
    js = driver.execute_script
    try:
        driver.get(f"http://127.0.0.1:{b.port}/index.html?token={OP_SECRET}&encoding=binary&glb=0")
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.deltas") >= 5, 30), js(
            "return window.twin && [twin.status, twin.errors.map(String)]")
        assert js("return document.getElementById('wfRun').disabled") is False
        assert js("return twin.whatif.reason") == "" and not driver.find_element(By.ID, "wfReason").is_displayed()
        # clicking an asset charts the attribute it is coloured by
        driver.find_element(By.CSS_SELECTOR, "#prims tr[data-path='/Testbed/Pump']").click()
        assert wait_for(lambda: js("return twin.whatif.key").startswith("/Testbed/Pump."), 5)
        Select(driver.find_element(By.ID, "wfAttr")).select_by_value(KEY)
        assert js("return twin.whatif.key") == KEY
        assert wait_for(lambda: js("return twin.whatif.trace.length") >= 10, 20)  # the live trace grows from deltas
        Select(driver.find_element(By.ID, "wfSet")).select_by_value("/Testbed/Valve2.opening")
        for field, text in (("wfValues", "0.2, 0.5, 0.9"), ("wfAt", "1"), ("wfHorizon", "8")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(text)
        driver.find_element(By.ID, "wfRun").click()
        assert wait_for(lambda: js("return twin.whatif.status") in ("done", "error"), 60)
        assert js("return twin.whatif.status") == "done", js("return twin.whatif.error")
        assert "3/3 predictions of 8 s" in driver.find_element(By.ID, "wfResult").text
        f = js("return twin.whatif.forecast")
        assert f["prim"] == "/Testbed/Pump" and f["attribute"] == "pressure" and f["runs"] == 3
        t = np.array(f["times"])
        lo, p10, mean, p90, hi = (np.array(f[k]) for k in ("min", "p10", "mean", "p90", "max"))
        assert len(t) == 160 and (lo <= hi).all()
        assert (hi[t > 2.5] - lo[t > 2.5] > 0.01).all()  # three futures after the valve moves at +1 s

        # the live trace runs on into the band's time span
        start = f["startSimTime"]
        assert wait_for(lambda: js("return twin.whatif.trace.at(-1)[0]") > start + 2.0, 30)
        # what is drawn, read in one go (the chart is redrawn as live samples arrive)
        g = js("""twin.whatif.draw(); const a = (id, k) => document.getElementById(id).getAttribute(k);
                  return {scale: twin.whatif.scale, range: a('wf-range', 'd'), spread: a('wf-spread', 'd'), mean: a('wf-mean', 'd'),
                          trace: a('wf-trace', 'points'), opacity: a('wf-range', 'fill-opacity')}""")
        s = g["scale"]

        def px(tt, v):
            x = s["x0"] + (tt - s["t0"]) / (s["t1"] - s["t0"]) * (s["x1"] - s["x0"])
            y = s["y0"] + (v - s["v0"]) / (s["v1"] - s["v0"]) * (s["y1"] - s["y0"])
            return np.stack([x, y], axis=-1)

        # the band drawn is the forecast: top edge = max, bottom edge = min (reversed), mean dashed, p10–p90 inside
        rng = _points(g["range"])
        n = len(t)
        assert len(rng) == 2 * n
        np.testing.assert_allclose(rng[:n], px(start + t, hi), atol=0.01)
        np.testing.assert_allclose(rng[n:], px(start + t, lo)[::-1], atol=0.01)
        spread = _points(g["spread"])
        np.testing.assert_allclose(spread[:n], px(start + t, p90), atol=0.01)
        np.testing.assert_allclose(spread[n:], px(start + t, p10)[::-1], atol=0.01)
        np.testing.assert_allclose(_points(g["mean"]), px(start + t, mean), atol=0.01)
        assert float(g["opacity"]) < 0.5  # ghosted
        trace = _points(g["trace"].replace(" ", ","))
        x_start = px(np.array([start]), np.array([0.0]))[0, 0]
        assert (trace[:, 0] < x_start).sum() >= 5 and (trace[:, 0] > x_start + 5).sum() >= 5  # before and after "now" of the request
        # every live sample lies on the chart (the y range covers trace and band)
        assert (trace[:, 1] >= s["y1"] - 0.01).all() and (trace[:, 1] <= s["y0"] + 0.01).all()

        # and it is on screen: band-coloured pixels right of the start line, none left of it
        js("document.getElementById('wfChart').scrollIntoView()")
        chart = driver.find_element(By.ID, "wfChart")
        img = _rgb(chart.screenshot_as_png)
        bluish = (img[:, :, 2] - img[:, :, 0] > 25) & (img[:, :, 2] > 60)
        xs = int(round(x_start))
        inner = bluish[int(s["y1"]) + 2:int(s["y0"]) - 2]
        assert inner[:, xs + 3:].sum() > 200, inner[:, xs + 3:].sum()
        assert inner[:, int(s["x0"]) + 2:xs - 3].sum() < 20
        driver.save_screenshot(str(tmp_path / "browser-whatif.png"))
        chart_png = tmp_path / "browser-whatif-chart.png"
        chart_png.write_bytes(chart.screenshot_as_png)

        # bad input comes back as the server's error, in the panel
        js("twin.whatif.run({key: arguments[0], set: '/Testbed/Valve2.opening', values: [0.2, 0.5], unit: '', at: 1, horizon: 86400})", KEY)
        assert wait_for(lambda: js("return twin.whatif.status") == "error", 30)
        assert "invalid_value" in js("return twin.whatif.error") and "ticks" in driver.find_element(By.ID, "wfResult").text
    finally:
        driver.quit()


def test_viewer_sees_the_control_disabled_with_the_reason(bridge):
    from selenium.webdriver.common.by import By

    b = bridge(http_dir=PAGE, rate=20)
    driver = _chromium()
    js = driver.execute_script
    try:
        driver.get(f"http://127.0.0.1:{b.port}/index.html?token={VIEW_SECRET}&encoding=binary&glb=0")
        assert wait_for(lambda: js("return window.twin && twin.status") == "live", 30)
        assert js("return twin.role") == "viewer"
        run = driver.find_element(By.ID, "wfRun")
        assert run.get_attribute("disabled") is not None
        reason = driver.find_element(By.ID, "wfReason")
        js("arguments[0].scrollIntoView()", reason)
        assert reason.is_displayed() and "operator" in reason.text and "viewer" in reason.text
        assert run.get_attribute("title") == reason.text
        # the server agrees: a request sent anyway is refused
        js("twin.whatif.run({key: '/Testbed/Pump.pressure', set: '', values: [], unit: '', at: 0, horizon: 5})")
        assert wait_for(lambda: js("return twin.whatif.status") == "error", 30)
        assert js("return twin.whatif.error").startswith("forbidden")
        assert js("return twin.whatif.forecast") is None
    finally:
        driver.quit()

