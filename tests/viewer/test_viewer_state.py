"""The viewer's state mirror and overlay logic (no GPU): Frames in, per-object colours/alarms/quality out."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from twinstage.state import Declaration, Quality, StateTable
from twinstage.viewer import _colormap as cm
from twinstage.viewer._overlays import AlarmLimits, Overlays
from twinstage.viewer._state import TwinState


class FakeGpu:
    """Records what the overlays push (the GpuScene interface)."""

    def __init__(self, n: int):
        self.rgb = np.zeros((n, 3))
        self.mix = np.zeros(n)
        self.alarm = np.zeros(n)
        self.quality = np.zeros(n)
        self.calls: list[tuple[str, np.ndarray]] = []

    def set_overlay(self, objs, rgb, mix):
        self.rgb[objs], self.mix[objs] = rgb, mix
        self.calls.append(("overlay", np.asarray(objs)))

    def set_state(self, objs, alarm=None, quality=None, selected=None, hidden=None):
        if alarm is not None:
            self.alarm[objs] = alarm
        if quality is not None:
            self.quality[objs] = quality
        self.calls.append(("state", np.asarray(objs)))

    def set_matrices(self, objs, mats):
        self.calls.append(("matrices", np.asarray(objs)))


def _table(n: int = 4) -> StateTable:
    prims = [f"/W/A{i}" for i in range(n)]
    decls = [Declaration(p, "temperature", "float", 20.0 + i, "degC", 0.0, 100.0) for i, p in enumerate(prims)]
    decls += [Declaration(p, "flow", "float", 10.0, "L/min", 0.0, 300.0, "measured") for p in prims[:2]]
    return StateTable(prims, decls)


def test_alarm_specs_parse():
    assert AlarmLimits.parse(95).alarm_high == 95
    a = AlarmLimits.parse((5, 95))
    assert (a.alarm_low, a.alarm_high) == (5, 95)
    b = AlarmLimits.parse({"warn": 90, "alarm": 95, "warn_low": 10})
    assert (b.warn_high, b.alarm_high, b.warn_low, b.alarm_low) == (90, 95, 10, -math.inf)
    with pytest.raises(ValueError):
        AlarmLimits.parse("hot")


def test_frames_mirror_into_state_and_mark_dirty_rows():
    table = _table()
    st = TwinState.from_table(table)
    st.take_dirty()
    table["temperature"][2] = 55.0
    table.quality("flow")[1] = np.uint8(Quality.STALE)
    frame = table.diff(1, 0.1, 0.0)
    st.apply(frame)
    dirty = st.take_dirty()
    assert dirty["temperature"].tolist() == [2] and dirty["flow"].tolist() == [1]
    assert st.values["temperature"][2] == 55.0 and st.quality["flow"][1] == Quality.STALE
    assert st.tick == 1 and st.take_dirty() == {}
    assert table["temperature"][2] == 55.0  # the twin's table is not shared
    st.values["temperature"][2] = 0
    assert table["temperature"][2] == 55.0


def test_overlays_levels_quality_and_colours():
    table = _table()
    st = TwinState.from_table(table)
    ov = Overlays(st, 4, alarms={"temperature": {"warn": 60, "alarm": 80}})
    ov.set_color_by("temperature", "viridis", 0.0, 100.0)
    gpu = FakeGpu(4)
    ov.update(gpu, st.take_dirty(), recolor=True)
    assert gpu.alarm.tolist() == [0, 0, 0, 0]
    want = cm.srgb_lut_to_linear(cm.apply(np.array([20.0, 21.0, 22.0, 23.0]), cm.colormap("viridis"), 0, 100))
    np.testing.assert_allclose(gpu.rgb, want)
    assert (gpu.mix == 1).all()

    table["temperature"][:] = [65.0, 85.0, 30.0, 30.0]
    table.quality("temperature")[2] = np.uint8(Quality.BAD)
    table.quality("temperature")[3] = np.uint8(Quality.LATE)
    table.quality("flow")[0] = np.uint8(Quality.OUT_OF_RANGE)
    st.apply(table.diff(1, 0.1, 0.0))
    gpu.calls.clear()
    ov.update(gpu, st.take_dirty())
    assert gpu.alarm.tolist() == [2, 2, 0, 0]  # A0: warn on temperature but flow out of range → alarm
    assert gpu.quality.tolist() == [0, 0, 2, 1]  # bad → hatched, late → greyed
    assert ov.channel_level("temperature", 0) == 1 and ov.channel_level("flow", 0) == 2
    assert ov.alarm_objects().tolist() == [0, 1]

    # only the changed object is touched by the next frame
    table["temperature"][3] = 31.0
    st.apply(table.diff(2, 0.2, 0.0))
    gpu.calls.clear()
    ov.update(gpu, st.take_dirty())
    assert all(objs.tolist() == [3] for _, objs in gpu.calls)

    ov.set_external(2, 2, "residual drift")
    ov.refresh_external(gpu, [2])
    assert gpu.alarm[2] == 2 and ov.object_level(2) == 2


def test_auto_range_uses_limits_or_data_and_widens_to_keep_new_values_visible():
    table = _table()
    st = TwinState.from_table(table)
    ov = Overlays(st, 4)
    ov.set_color_by("temperature")  # data 20..23 spans a fair part of its limits 0..100: the limits
    assert (ov.color_by.vmin, ov.color_by.vmax) == (0.0, 100.0)
    ov.set_color_by("flow")  # all 10.0 within 0..300: the data's range, padded
    lo, hi = ov.color_by.vmin, ov.color_by.vmax
    assert 9 < lo < 10 < hi < 11
    table["flow"][0] = 70.0
    st.apply(table.diff(1, 0.1, 0.0))
    gpu = FakeGpu(4)
    ov.update(gpu, st.take_dirty())
    assert ov.color_by.vmax >= 70.0 and ov.color_by.vmin == lo
    assert gpu.mix[:2].tolist() == [1.0, 1.0] and gpu.mix[2:].tolist() == [0.0, 0.0]  # assets without flow keep their colour
    with pytest.raises(ValueError, match="no such twin attribute"):
        ov.set_color_by("nope")


def test_usd_authored_alarm_thresholds(tmp_path):
    from _scenes import boxes

    from twinstage.viewer._state import state_from_stage

    stage = boxes(values=(10.0, 50.0, 90.0))
    stage.GetPrimAtPath("/World/Box2").CreateAttribute("twin:temperature:alarmHigh", __import__("pxr").Sdf.ValueTypeNames.Double).Set(85.0)
    st = state_from_stage(stage)
    ov = Overlays(st, 3, stage=stage)
    gpu = FakeGpu(3)
    ov.update(gpu, st.take_dirty())
    assert gpu.alarm.tolist() == [0, 0, 2]


def test_colormap_and_labels():
    lut = cm.colormap("viridis")
    assert lut.shape == (256, 3)
    np.testing.assert_allclose(lut[0], [0.267, 0.005, 0.329], atol=1e-3)
    np.testing.assert_allclose(lut[-1], [0.993, 0.906, 0.144], atol=1e-3)
    assert cm.unit_label("degC") == "°C" and cm.unit_label("1") == ""
    assert cm.fmt_value(89.4567, "degC") == "89.46 °C" and cm.fmt_value(125.23, "L/min") == "125.2 L/min"
    assert cm.nice_ticks(0, 150, 5) == [0.0, 50.0, 100.0, 150.0]
    with pytest.raises(ValueError):
        cm.colormap("rainbow")


def test_importing_does_not_load_gpu_code():
    code = ("import sys, twinstage, twinstage.viewer; twinstage.viewer.__dir__(); "
            "from twinstage.cli import build_parser; build_parser().parse_args(['view', 'x.usda', '--screenshot', 'y.png']); "
            "from twinstage.viewer import _state, _colormap, _cli; import twinstage.geometry, twinstage.export; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pygfx', 'wgpu', 'rendercanvas', 'glfw')]; "
            "print(bad); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shaders_ship_in_the_package():
    import importlib.resources

    files = importlib.resources.files("twinstage.viewer") / "shaders"
    names = sorted(p.name for p in files.iterdir() if p.name.endswith(".wgsl"))
    assert names == ["twin_fx.wgsl", "twin_mesh.wgsl"]
    mesh = (files / "twin_mesh.wgsl").read_text()
    assert "fn vs_main" in mesh and "fn fs_main" in mesh and "//@twin_fx@" in mesh
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "shaders" / "README.md"
    assert readme.is_file() and "src/twinstage/viewer/shaders" in readme.read_text()
