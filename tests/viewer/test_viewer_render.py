"""Offscreen rendering on lavapipe, checked by pixels: colours, legend, alarm pulse, quality, labels,
selection, transforms, playback, remote, the usd-wg files, bad input, large scenes, no GPU."""

from __future__ import annotations

import os
import sys
import subprocess
import threading

import numpy as np
import pytest
from _scenes import bad_stage, boxes, usd_wg_files

import twinstage
from twinstage.state import Quality
from twinstage.viewer import Viewer
from twinstage.viewer import _colormap as cm

pytestmark = pytest.mark.usefixtures("gpu")


def patch(img: np.ndarray, xy: tuple[float, float], r: int = 2) -> np.ndarray:
    x, y = int(round(xy[0])), int(round(xy[1]))
    return img[y - r:y + r + 1, x - r:x + r + 1, :3].reshape(-1, 3).astype(float)


def expected_srgb8(value: float, vmin: float, vmax: float, cmap: str = "viridis") -> np.ndarray:
    return cm.apply(np.array([value]), cm.colormap(cmap), vmin, vmax)[0] * 255.0


def test_colors_where_the_assets_are():
    v = Viewer(boxes(values=(10.0, 50.0, 90.0)), color_by="temperature", vmin=0, vmax=100, quality="flat", size=(480, 240))
    v.hud_visible = False
    img = v.screenshot()
    assert img.shape == (240, 480, 4)
    for i, val in enumerate((10.0, 50.0, 90.0)):
        got = patch(img, v.object_screen_position(f"/World/Box{i}")).mean(axis=0)
        np.testing.assert_allclose(got, expected_srgb8(val, 0, 100), atol=6, err_msg=f"Box{i}")
    bg = img[3, 3, :3].astype(float)
    assert np.abs(bg - expected_srgb8(10, 0, 100)).sum() > 60  # the background is not an asset colour


def test_lit_view_keeps_hue_order_and_legend_is_drawn():
    v = Viewer(boxes(values=(0.0, 100.0)), color_by="temperature", cmap="coolwarm", vmin=0, vmax=100, size=(480, 300))
    img = v.screenshot()
    cold = patch(img, v.object_screen_position("/World/Box0")).mean(axis=0)
    hot = patch(img, v.object_screen_position("/World/Box1")).mean(axis=0)
    assert cold[2] > cold[0] + 30 and hot[0] > hot[2] + 30  # blue vs red under lighting
    # legend: a vertical colour bar at the right edge, bottom = vmin colour, top = vmax colour
    w, h = 480, 300
    x = w - 14 - 8 - 7
    bar_h = min(180.0, h * 0.45)
    y_bottom = int(h - (h / 2 - bar_h / 2) - 3)
    y_top = int(h - (h / 2 + bar_h / 2) + 3)
    np.testing.assert_allclose(img[y_bottom, x, :3], expected_srgb8(0, 0, 100, "coolwarm"), atol=14)
    np.testing.assert_allclose(img[y_top, x, :3], expected_srgb8(100, 0, 100, "coolwarm"), atol=14)
    column = img[y_top:y_bottom, x, :3].astype(float)
    assert (np.abs(np.diff(column, axis=0)).sum(axis=1) < 40).all()  # a smooth gradient, no gaps
    # its title carries the unit
    no_legend = Viewer(boxes(values=(0.0, 100.0)), size=(480, 300)).screenshot()
    title_area = (slice(int(h / 2 - bar_h / 2) - 30, int(h / 2 - bar_h / 2) - 8), slice(w - 160, w - 10))
    assert np.abs(img[title_area][..., :3].astype(int) - no_legend[title_area][..., :3].astype(int)).max() > 100


def test_alarm_shader_changes_pixels_over_time():
    v = Viewer(boxes(values=(10.0, 95.0)), alarms={"temperature": 90}, size=(400, 240), labels=False)
    v.hud_visible = False
    a = v.screenshot(time=3.0 / (4 * 1.5))  # the 1.5 Hz alarm pulse at its low ...
    b = v.screenshot(time=1.0 / (4 * 1.5))  # ... and at its high
    c = v.screenshot(time=3.0 / (4 * 1.5))
    hot = patch(a, v.object_screen_position("/World/Box1"), 3), patch(b, v.object_screen_position("/World/Box1"), 3)
    calm = patch(a, v.object_screen_position("/World/Box0"), 3), patch(b, v.object_screen_position("/World/Box0"), 3)
    assert np.abs(hot[0] - hot[1]).mean() > 15  # the alarmed asset pulses
    np.testing.assert_array_equal(calm[0], calm[1])  # the other does not
    np.testing.assert_array_equal(a, c)  # same effect time, same image
    assert hot[1].mean(axis=0)[0] > hot[1].mean(axis=0)[2] + 40  # it is red
    # and outlined: a red rim where, without the alarm, there is background
    quiet = Viewer(boxes(values=(10.0, 95.0)), size=(400, 240), labels=False)
    quiet.hud_visible = False
    base = quiet.screenshot().astype(int)
    bright = b.astype(int)
    bg_like = np.abs(base[..., :3] - base[:, :4, :3].mean(axis=1, keepdims=True)).sum(axis=2) < 20
    rim = bg_like & (bright[..., 0] > 150) & (bright[..., 0] > bright[..., 2] + 80)
    assert rim.sum() > 100


def test_stale_is_greyed_and_bad_is_hatched():
    stage = boxes(values=(50.0, 50.0, 50.0))
    v = Viewer(stage, color_by="temperature", cmap="coolwarm", vmin=0, vmax=60, quality="flat", size=(480, 240), labels=False)
    v.hud_visible = False
    q = v.state.quality["temperature"]
    q[1] = np.uint8(Quality.STALE)
    q[2] = np.uint8(Quality.BAD)
    v.state.mark_all_dirty()
    img = v.screenshot()
    good = patch(img, v.object_screen_position("/World/Box0"), 4)
    stale = patch(img, v.object_screen_position("/World/Box1"), 4)
    bad = patch(img, v.object_screen_position("/World/Box2"), 6)
    def sat(p):
        return (p.max(axis=1) - p.min(axis=1)).mean()

    assert sat(good) > 60 and sat(stale) < 25  # greyed out
    lum = bad.mean(axis=1)
    assert lum.min() < 50 and lum.max() > 120 and (lum < 50).mean() > 0.2  # dark stripes across a grey body: hatched


def test_labels_show_value_and_unit_and_selection_panel():
    v = Viewer(boxes(values=(12.5, 50.0)), color_by="temperature", size=(640, 360))
    no_labels = Viewer(boxes(values=(12.5, 50.0)), color_by="temperature", size=(640, 360), labels=False).screenshot()
    img = v.screenshot()
    x, y = v.object_screen_position("/World/Box0")
    above = (slice(max(0, int(y) - 90), int(y) - 10), slice(int(x) - 60, int(x) + 60))
    assert np.abs(img[above][..., :3].astype(int) - no_labels[above][..., :3].astype(int)).max() > 100
    badge_texts = [t for t in v._badges(640, 360)]
    assert any(b.text == "Box0  12.50 °C" for b in badge_texts)
    # click the asset: it is selected, outlined, and the panel lists its attributes with units
    assert v.pick_at(x, y) == "/World/Box0"
    lines = [s for s, _ in v._selection_lines(v.selected)]
    assert lines[0] == "/World/Box0" and any(s.startswith("temperature = 12.50 °C") for s in lines)
    assert any("defined in" in s for s in lines) and any("authored values" in s for s in lines)
    sel = v.screenshot()
    panel = (slice(40, 120), slice(12, 200))
    assert np.abs(sel[panel][..., :3].astype(int) - img[panel][..., :3].astype(int)).max() > 100
    assert v.pick_at(2, 2) is None and v.selected is None  # empty space clears the selection


def test_live_frames_recolor_and_move_assets(tmp_path):
    scene = tmp_path / "boxes.usda"
    boxes(scene, values=(10.0, 20.0), drives=True)
    twin = twinstage.open(scene)
    v = Viewer(color_by="temperature", vmin=0, vmax=100, quality="flat", size=(480, 240), labels=False)
    twin.add_sink(v)
    v.hud_visible = False
    v.screenshot()
    x0, y0 = v.object_screen_position("/World/Box1")
    twin.set("/World/Box1", temperature=95.0, position=(3.0, 0.0, 0.8))
    twin.run(ticks=1)
    img = v.screenshot()
    x1, y1 = v.object_screen_position("/World/Box1")
    assert 5 < y1 < y0 - 10  # moved up on screen (z is up)
    np.testing.assert_allclose(patch(img, (x1, y1)).mean(axis=0), expected_srgb8(95, 0, 100), atol=6)
    twin.close()


def test_large_scene_is_batched_and_updates_in_place():
    from twinstage.runtime import Twin
    from twinstage.scenes import generate_factory

    twin = Twin(generate_factory(2000), columnar=False)
    v = Viewer(color_by="temperature", vmin=0, vmax=100, size=(320, 240))  # a fixed range: no recolouring of all
    twin.add_sink(v)
    v.screenshot()
    gpu = v._gpu
    assert len(gpu.batches) <= 2  # one instanced draw for 2000 machines, never one object per asset
    touched: list[np.ndarray] = []
    orig = gpu.objects.update_indices
    gpu.objects.update_indices = lambda idx: (touched.append(np.asarray(idx)), orig(idx))[1]
    rows = np.arange(0, 2000, 97)
    twin.table["heatInput"][:] = 0.0  # keep the model quiet; change a few temperatures by hand
    twin.tick()
    v.state.take_dirty()
    twin.table["temperature"][rows] += 30.0
    twin.tick()
    v.screenshot()
    written = np.unique(np.concatenate(touched)) // 2
    assert set(written.tolist()) == set(rows.tolist())  # exactly the changed assets' records, nothing else
    twin.close()


def test_playback_scrubs_a_recording(tmp_path, pump_scene):
    rec = tmp_path / "run.usdc"
    twin = twinstage.open(pump_scene)
    twin.record(rec)
    with twin:
        twin.run(ticks=10)
        twin.set("/Testbed/Valve1", opening=0.05)
        twin.run(ticks=30)
    v = Viewer(color_by="flowRate", vmin=0, vmax=150, alarms={"vibration1": {"warn": 0.3, "alarm": 0.4}}, size=(640, 400))
    pb = v.open_recording(rec, pump_scene)
    assert v.mode == "playback" and len(pb) == 40
    recorded = twinstage.Recording(rec)
    flow = recorded.series("/Testbed/Pump", "flowRate")
    pump = v.state.prim_index["/Testbed/Pump"]
    for i in (0, 12, 39):
        pb.seek(i)
        assert v.state.value(pump, "flowRate")[0] == pytest.approx(flow[i])
    pb.seek(0)
    early = v.screenshot()
    pb.seek(39)
    late = v.screenshot(tmp_path / "late.png")
    xy = v.object_screen_position("/Testbed/Pump")
    assert np.abs(patch(early, xy, 3).mean(axis=0) - patch(late, xy, 3).mean(axis=0)).sum() > 30  # recorded colours
    assert v.overlays.object_level(v.state.prim_index["/Testbed/Sensors/Accelerometer1"]) == 2  # recorded alarm
    markers = pb.markers(v.overlays)
    assert len(markers) == 1 and 0.2 < markers[0] < 0.35  # the alarm starts at tick ~11 of 40
    # the timeline: a bar across the bottom whose filled part follows the position
    bottom_late = late[-17, 60:-30, :3].astype(int)
    pb.seek(0)
    bottom_early = v.screenshot()[-17, 60:-30, :3].astype(int)
    def blue(row):
        return int(((row[:, 2] > 150) & (row[:, 0] < 120)).sum())

    assert blue(bottom_late) > 5 * max(blue(bottom_early), 1)
    # keys: step and play
    v._on_key("ArrowRight")
    assert pb.index == 1
    v._on_key(" ")
    assert pb.playing
    pb.advance(0.5)  # 0.5 s at 10 ticks/s
    assert pb.index >= 5


def test_remote_viewer_follows_a_bridge(tmp_path, pump_scene):
    from twinstage.bridge import Server

    twin = twinstage.open(pump_scene, rate=50, realtime=True)
    server = Server("127.0.0.1", 0)
    twin.add_sink(server)
    th = threading.Thread(target=twin.run, kwargs={"ticks": 10**9, "wait_when_paused": True}, daemon=True)
    th.start()
    try:
        twin.set("/Testbed/Valve1", opening=0.05)
        v = Viewer(color_by="flowRate", size=(480, 300))
        feed = v.connect(server.url, str(pump_scene))
        assert v.mode == "remote"
        assert feed.wait_for_tick(v.state.tick + 20, timeout=20)
        twin.pause()
        import time

        time.sleep(0.5)
        pump = v.state.prim_index["/Testbed/Pump"]
        assert v.state.value(pump, "flowRate")[0] == pytest.approx(twin.get("/Testbed/Pump", "flowRate"), rel=1e-6)
        img = v.screenshot()
        assert img[..., :3].std() > 10
        # without the scene file: stand-in boxes from the server's prim records
        v2 = Viewer(size=(320, 200))
        v2.connect(server.url)
        assert v2.state is not None and v2.geo.stats()["triangles"] > 0
        assert v2.state.value(v2.state.prim_index["/Testbed/Pump"], "flowRate")[0] == pytest.approx(twin.get("/Testbed/Pump", "flowRate"))
        v2.close()
        v.close()
    finally:
        twin.stop()
        th.join(10)
        twin.close()


def _content_box(img: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
    """Fraction of pixels that differ from the background gradient, and their bounding box."""
    rgb = img[..., :3].astype(int)
    bg = np.repeat(np.median(rgb[:, :8], axis=1, keepdims=True), rgb.shape[1], axis=1)  # the left edge: background rows
    diff = np.abs(rgb - bg).sum(axis=2) > 24
    ys, xs = np.nonzero(diff)
    if not len(xs):
        return 0.0, (0, 0, 0, 0)
    return float(diff.mean()), (xs.min(), ys.min(), xs.max(), ys.max())


def test_every_usd_wg_file_renders_recognisably(usd_wg, tmp_path):
    problems = []
    for f in usd_wg_files(usd_wg):
        v = Viewer(f, size=(320, 240))
        v.hud_visible = False
        img = v.screenshot(tmp_path / (f.stem + ".png"))
        frac, (x0, y0, x1, y1) = _content_box(img)
        if f.name == "ball_variants.usda":
            v.hud_visible = True
            frac, _ = _content_box(v.screenshot())
            if not (0.002 < frac < 0.2):  # its explanation is written in the view
                problems.append(f"{f.name}: note not shown ({frac:.3f})")
            continue
        if frac < 0.01:
            problems.append(f"{f.relative_to(usd_wg)}: empty ({frac:.4f})")
        elif (x1 - x0) < 320 * 0.2 and (y1 - y0) < 240 * 0.2:
            problems.append(f"{f.relative_to(usd_wg)}: too small ({x1 - x0}x{y1 - y0} px)")
        elif x0 <= 0 and x1 >= 319 and y0 <= 0 and y1 >= 239:
            problems.append(f"{f.relative_to(usd_wg)}: not framed (fills the whole view)")
    assert not problems, "\n".join(problems)


def test_bad_input_renders_the_good_parts():
    v = Viewer(bad_stage(), size=(320, 240))
    img = v.screenshot()
    assert np.isfinite(v._gpu.world_bounds()).all()
    frac, _ = _content_box(img)
    assert frac > 0.01
    xy = v.object_screen_position("/W/Good")
    assert xy is not None and 0 < xy[0] < 320 and 0 < xy[1] < 240


def test_huge_coordinates_keep_precision():
    stage = boxes(values=(10.0, 90.0), spacing=3.0)
    from pxr import Gf, UsdGeom

    root = UsdGeom.Xformable(stage.GetPrimAtPath("/World"))
    root.AddTranslateOp().Set(Gf.Vec3d(6.4e6, -3.1e6, 1.2e5))  # far from the origin (a georeferenced site)
    v = Viewer(stage, color_by="temperature", vmin=0, vmax=100, quality="flat", size=(480, 240))
    v.hud_visible = False
    img = v.screenshot()
    for i, val in enumerate((10.0, 90.0)):
        np.testing.assert_allclose(patch(img, v.object_screen_position(f"/World/Box{i}")).mean(axis=0), expected_srgb8(val, 0, 100), atol=6)


def _cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    # the interpreter the tests run under, never a twinstage found on PATH
    return subprocess.run([sys.executable, "-m", "twinstage", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_view_screenshot_and_video(tmp_path, pump_scene, usd_wg):
    from twinstage.cli import main

    png = tmp_path / "pump.png"
    assert main(["view", str(pump_scene), "--screenshot", str(png), "--color-by", "flowRate", "--ticks", "5", "--size", "400x260",
                 "--select", "/Testbed/Pump", "--alarm", "vibration1=warn:0.3,alarm:0.4"]) == 0
    import imageio.v3 as iio

    img = iio.imread(png)
    assert img.shape == (260, 400, 3) and img.std() > 10
    gif = tmp_path / "teapot.gif"
    assert main(["view", str(usd_wg / "full_assets/Teapot/Teapot.usd"), "--video", str(gif), "--frames", "4", "--size", "160x120"]) == 0
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 4 and np.abs(frames[0].astype(int) - frames[2].astype(int)).max() > 50  # the camera turns
    import imageio_ffmpeg  # noqa: F401  (a dev dependency: mp4 must work where the tests run)

    mp4 = tmp_path / "pump.mp4"
    assert main(["view", str(pump_scene), "--video", str(mp4), "--frames", "6", "--size", "320x240"]) == 0
    assert mp4.stat().st_size > 1000
    assert main(["view", str(pump_scene), "--screenshot", str(png), "--color-by", "nope"]) == 2  # a clear error, not a crash


def test_demo_writes_a_screenshot_of_its_final_state(tmp_path):
    from twinstage.cli import main

    png = tmp_path / "demo.png"
    assert main(["demo", "--out", str(tmp_path / "demo"), "--screenshot", str(png)]) == 0
    import imageio.v3 as iio

    img = iio.imread(png).astype(int)
    h, w = img.shape[:2]
    # the legend bar (flowRate, viridis 0..150) at the right edge
    x = w - 14 - 8 - 7
    bar_h = min(180.0, h * 0.45)
    np.testing.assert_allclose(img[int(h / 2 + bar_h / 2) - 3, x], expected_srgb8(0, 0, 150), atol=14)
    # the final state has a low-flow warning: amber text in the alarm list at the top right
    top_right = img[10:60, w - 330:w - 10].reshape(-1, 3)
    amber = (top_right[:, 0] > 200) & (top_right[:, 1] > 120) & (top_right[:, 1] < 215) & (top_right[:, 2] < 120)
    assert amber.sum() > 30
    # and the pump's selection panel at the top left
    assert (np.abs(img[45:200, 15:250] - img[45:200, 15:250].mean(axis=(0, 1))).sum(axis=2) > 200).sum() > 200
    # the run's recording plays back from the command line, at any recorded tick
    demo = tmp_path / "demo"
    shot = tmp_path / "t450.png"
    assert main(["view", str(demo / "pump_testbed.usda"), "--record", str(demo / "pump_testbed.rec.usdc"), "--tick", "450",
                 "--screenshot", str(shot), "--color-by", "vibration1", "--alarm", "vibration1=warn:0.3,alarm:0.4"]) == 0
    t450 = iio.imread(shot).astype(int)
    top_right = t450[10:60, w - 330:w - 10].reshape(-1, 3)
    assert ((top_right[:, 0] > 200) & (top_right[:, 1] < 150) & (top_right[:, 2] < 150)).sum() > 30  # cavitation alarm (red) at t=45 s


def test_demo_view_without_a_display_writes_a_screenshot(tmp_path, monkeypatch):
    from twinstage.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo", "--out", str(tmp_path), "--ticks", "100", "--view"]) == 0
    shot = tmp_path / "pump_testbed.png"
    import imageio.v3 as iio

    assert shot.is_file() and iio.imread(shot).std() > 10


@pytest.mark.parametrize("where", ["view", "demo"])
def test_no_gpu_adapter_is_a_clear_error_and_the_twin_still_runs(tmp_path, pump_scene, where):
    env = {"WGPU_BACKEND_TYPE": "Vulkan", "VK_ICD_FILENAMES": str(tmp_path / "no-such-icd.json")}
    if where == "view":
        r = _cli("view", str(pump_scene), "--screenshot", str(tmp_path / "x.png"), env=env)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "no GPU adapter" in r.stderr and "Traceback" not in r.stderr
    else:
        r = _cli("demo", "--out", str(tmp_path / "demo"), "--ticks", "50", "--screenshot", str(tmp_path / "x.png"), env=env)
        assert r.returncode == 1 and "no GPU adapter" in r.stderr and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert (tmp_path / "demo" / "pump_testbed.rec.usdc").stat().st_size > 0  # the twin ran and recorded
        assert twinstage.Recording(tmp_path / "demo" / "pump_testbed.rec.usdc").ticks[-1] == 50
    assert not (tmp_path / "x.png").exists()


def test_jupyter_frontend_sends_frames():
    import asyncio

    import jupyter_rfb  # noqa: F401  (a dev dependency: the notebook front end is tested, not skipped)

    async def run() -> np.ndarray | None:
        v = Viewer(boxes(values=(10.0, 90.0)), color_by="temperature", frontend="jupyter", size=(320, 200))
        widget = v.show()
        assert type(widget).__name__ == "JupyterRenderCanvas"
        widget.handle_event({"event_type": "resize", "width": 320, "height": 200, "pixel_ratio": 1.0})  # as the notebook does
        frame = None
        for _ in range(100):
            await asyncio.sleep(0.05)
            widget.get_frame()
            if widget._rfb_last_frame is not None:
                frame = widget._rfb_last_frame
                break
        await asyncio.sleep(0.3)  # let the last frame's download finish before the loop closes
        v.close_window()
        return frame

    frame = asyncio.run(asyncio.wait_for(run(), 60))
    assert frame is not None and frame.shape[:2] == (200, 320) and frame[..., :3].std() > 10
