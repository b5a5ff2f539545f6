"""The tick loop: Twin (set/get/units, Frames, sinks, clock, models, USD change notices) and Clock."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pxr import Sdf, Usd

import twinstage
from twinstage.models import Model, ModelError
from twinstage.runtime import Clock, Twin
from twinstage.runtime import _clock as clock_module
from twinstage.state import Frame, Quality, StateError
from twinstage.units import UnitError
from twinstage.usd import StageError, create_stage, declare_asset, declare_attribute

PUMP, V1, V2 = "/Testbed/Pump", "/Testbed/Valve1", "/Testbed/Valve2"


# -- helpers ---------------------------------------------------------------------------------


def build_scene(path: Path, prims: list[tuple[str, str, list[tuple]]]) -> Path:
    """A twin scene under /W: ``prims`` is [(name, model, [(attr, type, value, {kwargs})...])]."""
    stage = create_stage(path, root="W")
    for name, model, attrs in prims:
        prim = stage.DefinePrim(f"/W/{name}", "Xform")
        declare_asset(prim, kind="thing", asset_id=name, model=model)
        for attr, type_, value, kw in attrs:
            declare_attribute(prim, attr, type_, value, **kw)
    stage.GetRootLayer().Save()
    return path


class FakeTime:
    """Stands in for the ``time`` module of the clock: sleeping advances a fake clock."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.sleeps.append(s)
        self.now += s


class Collect:
    def __init__(self):
        self.frames: list[Frame] = []

    def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)


# -- opening, set/get/unit ---------------------------------------------------------------------


def test_open_set_get_unit(pump_scene):
    with twinstage.open(pump_scene) as twin:
        assert isinstance(twin, Twin)
        assert twin.get(V1, "opening") == 1.0
        assert twin.unit(PUMP, "flowRate") == "L/min"
        assert twin.unit(PUMP, "pressure") == "bar"
        assert twin.unit(PUMP, "motorTemperature") == "degC"
        assert set(twin.models) == {"pump_loop", "sensor"}
        allp = twin.get(PUMP)
        assert allp["flowRate"] == pytest.approx(125.2) and "motorSpeed" in allp
        twin.set(V1, opening=0.4)
        assert twin.get(V1, "opening") == 1.0  # not before the next tick
        twin.run(ticks=1)
        assert twin.get(V1, "opening") == 0.4
        assert twin.get(PUMP, "flowRate") < 125.0
        assert twin.tick_count == 1 and twin.sim_time == pytest.approx(0.1)


def test_unknown_prim_and_attribute_errors_name_them(pump_scene):
    with twinstage.open(pump_scene) as twin:
        with pytest.raises(StateError, match="/Testbed/Nope"):
            twin.set("/Testbed/Nope", opening=0.5)
        with pytest.raises(StateError) as exc:
            twin.set(V1, flowRate=1.0)  # exists on the pump, not on the valve
        assert V1 in str(exc.value) and "flowRate" in str(exc.value)
        with pytest.raises(StateError) as exc:
            twin.set(V1, openning=0.5)  # no prim has it
        assert V1 in str(exc.value) and "openning" in str(exc.value)
        with pytest.raises(StateError, match="humidity"):
            twin.get(PUMP, "humidity")
        with pytest.raises(StateError, match="/Testbed/Nope"):
            twin.get("/Testbed/Nope")
        with pytest.raises(StateError, match="humidity"):
            twin.unit(PUMP, "humidity")
        with pytest.raises(StateError, match=V1):
            twin.set(V1)


@pytest.mark.parametrize(
    "values, error",
    [
        ({"motorSpeed": 0.5, "ambientTemperature": 1000.0}, StateError),  # second out of limits
        ({"motorSpeed": 0.5, "ambientTemperature": float("nan")}, StateError),
        ({"motorSpeed": 0.5, "ambientTemperature": "warm"}, StateError),
        ({"motorSpeed": 0.5, "ambientTemperature": (1.0, "bar")}, UnitError),
        ({"motorSpeed": 0.5, "humidity": 0.3}, StateError),
        ({"ambientTemperature": 20.0, "motorSpeed": 5.0}, StateError),  # first fine, last bad
    ],
)
def test_set_validates_everything_before_queueing_anything(pump_scene, values, error):
    with twinstage.open(pump_scene) as twin:
        before = twin.table.snapshot()
        with pytest.raises(error):
            twin.set(PUMP, **values)
        twin.run(ticks=1)
        assert twin.get(PUMP, "motorSpeed") == 1.0
        assert twin.get(PUMP, "ambientTemperature") == 25.0
        assert twin.get(PUMP, "flowRate") == before["flowRate"][0]
        assert list(twin.errors) == []


def test_units_are_converted_or_rejected(pump_scene):
    with twinstage.open(pump_scene) as twin:
        twin.set(PUMP, ambientTemperature=(77.0, "degF"))
        twin.set(V2, opening=(50.0, "%"))
        twin.run(ticks=1)
        assert twin.get(PUMP, "ambientTemperature") == pytest.approx(25.0, abs=1e-9)
        assert twin.get(V2, "opening") == pytest.approx(0.5)
        from twinstage.units import _registry

        twin.set(PUMP, ambientTemperature=_registry().Quantity(293.15, "K"))  # a pint Quantity
        twin.run(ticks=1)
        assert twin.get(PUMP, "ambientTemperature") == pytest.approx(20.0, abs=1e-9)
        with pytest.raises(UnitError) as exc:
            twin.set(PUMP, ambientTemperature=(1.0, "bar"))
        assert "'bar'" in str(exc.value) and "'degC'" in str(exc.value) and "ambientTemperature" in str(exc.value)
        with pytest.raises(UnitError, match="furlongz"):
            twin.set(PUMP, ambientTemperature=(1.0, "furlongz"))
        with pytest.raises(StateError, match="limits"):
            twin.set(PUMP, ambientTemperature=(200.0, "degF"))  # 93 degC: converted, then checked
        twin.run(ticks=1)
        assert twin.get(PUMP, "ambientTemperature") == pytest.approx(20.0, abs=1e-9)


# -- Frames ---------------------------------------------------------------------------------------


def test_sets_enter_the_next_frame_and_only_then(pump_scene):
    with twinstage.open(pump_scene) as twin:
        seen = Collect()
        twin.on_frame(seen)
        twin.run(ticks=2)
        assert all("opening" not in f.changes for f in seen.frames)
        twin.set(V2, opening=0.6)
        twin.set(V2, opening=0.7)  # latest wins
        assert twin.last_frame is seen.frames[-1] and "opening" not in twin.last_frame.changes
        twin.run(ticks=1)
        f = seen.frames[-1]
        assert f.tick == 3
        c = f.changes["opening"]
        row = twin.table.row(V2, "opening")
        assert c.rows.tolist() == [row] and c.values.tolist() == [0.7]
        assert "flowRate" in f.changes  # the model saw it in the same tick
        twin.run(ticks=1)
        assert "opening" not in seen.frames[-1].changes


def test_on_frame_gets_every_frame_in_order_then_unsubscribes(pump_scene):
    with twinstage.open(pump_scene, rate=4.0) as twin:
        seen = Collect()
        unsubscribe = twin.on_frame(seen)
        t0 = time.time()
        twin.run(ticks=7)
        twin.run(duration=1.0)  # 4 more ticks
        t1 = time.time()
        ticks = [f.tick for f in seen.frames]
        assert ticks == list(range(1, 12))
        for f in seen.frames:
            assert f.sim_time == f.tick * 0.25
            assert t0 <= f.wall_time <= t1
        walls = [f.wall_time for f in seen.frames]
        assert walls == sorted(walls)
        unsubscribe()
        twin.run(ticks=3)
        assert len(seen.frames) == 11
        assert twin.tick_count == 14


def test_stop_from_a_callback_ends_run(pump_scene):
    with twinstage.open(pump_scene) as twin:
        def cb(frame: Frame) -> None:
            if frame.tick == 5:
                twin.stop()

        twin.on_frame(cb)
        last = twin.run(ticks=100)
        assert twin.tick_count == 5 and last is not None and last.tick == 5
        twin.run(ticks=3)  # a new run starts afresh
        assert twin.tick_count == 8


class RaisingSink:
    writes_stage = False

    def __init__(self):
        self.calls = 0

    def start(self, twin: Any) -> None:
        pass

    def consume(self, frame: Frame) -> None:
        self.calls += 1
        raise RuntimeError("sink exploded")

    def close(self) -> None:
        pass


def test_a_raising_sink_does_not_stop_others_or_the_clock(pump_scene):
    with twinstage.open(pump_scene) as twin:
        bad = twin.add_sink(RaisingSink())
        seen = Collect()
        twin.on_frame(seen)
        twin.set(V1, opening=0.5)
        twin.run(ticks=4)
        assert bad.calls == 4
        assert [f.tick for f in seen.frames] == [1, 2, 3, 4]
        assert twin.tick_count == 4 and twin.get(V1, "opening") == 0.5
        assert len(twin.errors) == 4
        assert all("RaisingSink" in e and "sink exploded" in e for e in twin.errors)
        # the live writer still ran: the stage shows the new value
        assert twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Get() == 0.5
        twin.remove_sink(bad)
        twin.run(ticks=1)
        assert len(twin.errors) == 4


# -- clock -------------------------------------------------------------------------------------------


def test_pause_run_returns_at_once_and_step_lets_n_ticks_through(pump_scene):
    with twinstage.open(pump_scene) as twin:
        seen = Collect()
        twin.on_frame(seen)
        twin.pause()
        assert twin.run(ticks=10) is None
        assert twin.tick_count == 0 and seen.frames == []
        twin.clock.step(3)
        twin.run(ticks=10)
        assert twin.tick_count == 3 and [f.tick for f in seen.frames] == [1, 2, 3]
        twin.run(ticks=10)
        assert twin.tick_count == 3
        twin.clock.step(5)
        twin.run(ticks=2)  # ticks= still bounds the run; the rest of the steps stay
        assert twin.tick_count == 5
        twin.run(ticks=10)
        assert twin.tick_count == 8
        twin.resume()
        twin.run(ticks=4)
        assert twin.tick_count == 12


def test_wait_when_paused_lets_another_thread_step(pump_scene):
    with twinstage.open(pump_scene) as twin:
        twin.pause()
        th = threading.Thread(target=twin.run, kwargs={"ticks": 3, "wait_when_paused": True}, daemon=True)
        th.start()
        for _ in range(3):
            twin.clock.step(1)
        th.join(timeout=30)
        assert not th.is_alive()
        assert twin.tick_count == 3


def test_twin_step_ticks_when_idle_and_releases_a_waiting_run(pump_scene):
    with twinstage.open(pump_scene) as twin:
        twin.pause()
        twin.step(2)  # no run loop: ticks here, paused or not
        assert twin.tick_count == 2
        th = threading.Thread(target=twin.run, kwargs={"ticks": 3, "wait_when_paused": True}, daemon=True)
        th.start()
        deadline = time.monotonic() + 30
        while not twin._running and time.monotonic() < deadline:
            time.sleep(0.001)
        twin.step(3)  # a run loop is waiting: the steps go through it
        th.join(timeout=30)
        assert not th.is_alive()
        assert twin.tick_count == 5
        with pytest.raises(ValueError):
            twin.step(-1)


def test_clock_paces_ticks_by_sleeping(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(10.0, realtime=True)
    starts = []
    for _ in range(6):
        c.wait()
        starts.append(fake.now)
        fake.now += 0.03  # the tick's work
        c.advance()
    np.testing.assert_allclose(np.diff(starts), 0.1, atol=1e-9)
    assert len(fake.sleeps) == 5 and all(s == pytest.approx(0.07) for s in fake.sleeps)
    assert c.overruns == 0
    assert c.sim_time == c.tick * c.dt == pytest.approx(0.6)


def test_clock_speed_scales_pacing(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(10.0, realtime=True, speed=4.0)
    starts = []
    for _ in range(5):
        c.wait()
        starts.append(fake.now)
        c.advance()
    np.testing.assert_allclose(np.diff(starts), 0.025, atol=1e-9)
    assert c.sim_time == pytest.approx(0.5)


def test_clock_not_realtime_never_sleeps(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(1000.0)
    for _ in range(50):
        c.wait()
        c.advance()
    assert fake.sleeps == [] and c.tick == 50 and c.overruns == 0


def test_clock_overrun_reanchors_without_bursting(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(10.0, realtime=True)
    starts = []
    work = [0.01, 0.01, 0.35, 0.01, 0.01, 0.01]  # the third tick takes 3.5 periods
    for w in work:
        c.wait()
        starts.append(fake.now)
        fake.now += w
        c.advance()
    assert c.overruns == 1
    gaps = np.diff(starts)
    np.testing.assert_allclose(gaps[:2], 0.1, atol=1e-9)
    assert gaps[2] == pytest.approx(0.35)  # the late tick starts at once ...
    np.testing.assert_allclose(gaps[3:], 0.1, atol=1e-9)  # ... and then no burst: one period apart again


def test_clock_slightly_late_tick_catches_up_without_overrun(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(10.0, realtime=True)
    starts = []
    for w in [0.01, 0.15, 0.01, 0.01]:  # 0.05 s late: less than one period
        c.wait()
        starts.append(fake.now)
        fake.now += w
        c.advance()
    assert c.overruns == 0
    np.testing.assert_allclose(np.array(starts) - starts[0], [0.0, 0.1, 0.25, 0.3], atol=1e-9)


def test_clock_pause_resume(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    c = Clock(10.0, realtime=True)
    for _ in range(3):
        c.wait()
        c.advance()
    c.pause()
    assert not c.may_tick()
    c.wait()  # paused: returns without sleeping
    n_sleeps = len(fake.sleeps)
    fake.now += 60.0  # a long pause is not an overrun
    c.step(2)
    assert c.may_tick() and c.may_tick() and not c.may_tick()
    c.resume()
    assert c.may_tick()
    starts = []
    for _ in range(3):
        c.wait()
        starts.append(fake.now)
        c.advance()
    assert c.overruns == 0 and len(fake.sleeps) == n_sleeps + 2
    np.testing.assert_allclose(np.diff(starts), 0.1, atol=1e-9)


@pytest.mark.parametrize("kw", [{"rate": 0}, {"rate": -1.0}, {"rate": float("nan")}, {"rate": 10, "speed": 0}])
def test_clock_rejects_bad_rates(kw):
    with pytest.raises(ValueError):
        Clock(**kw)


def test_twin_realtime_run_is_paced_by_the_clock(pump_scene, monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    with twinstage.open(pump_scene, rate=20.0, realtime=True) as twin:
        twin.run(ticks=5)
        assert twin.tick_count == 5
        assert sum(fake.sleeps) == pytest.approx(4 * 0.05)  # the first tick anchors, four waits of one period
        assert twin.stats()["overruns"] == 0


def test_run_argument_errors(pump_scene):
    with twinstage.open(pump_scene) as twin:
        with pytest.raises(ValueError):
            twin.run()
        with pytest.raises(ValueError):
            twin.run(ticks=-1)
        assert twin.run(ticks=0) is None and twin.tick_count == 0


# -- models in the loop --------------------------------------------------------------------------------


class Filler:
    """A user model: tanks fill at their inflow rate (vectorised over its prims)."""

    name: ClassVar[str] = "filler"

    def bind(self, table, prims, stage) -> None:
        self.level = table.rows("level", prims)
        self.inflow = table.rows("inflow", prims)
        self.bound = [table.prims[i] for i in prims]

    def step(self, table, t, dt, rng) -> None:
        table["level"][self.level] += table["inflow"][self.inflow] * dt

    def parameters(self) -> dict[str, Any]:
        return {"kind": "filler"}


def _tank(name: str, model: str, level: float, inflow: float) -> tuple:
    return (
        name,
        model,
        [
            ("level", "float", level, {"unit": "m", "min": 0.0, "max": 100.0}),
            ("inflow", "float", inflow, {"unit": "m/s", "role": "input"}),
        ],
    )


def test_user_model_drives_its_prims(tmp_path):
    scene = build_scene(tmp_path / "tanks.usda", [_tank("T1", "filler", 1.0, 0.5), _tank("T2", "", 2.0, 3.0), _tank("T3", "filler", 0.0, 2.0)])
    model = Filler()
    assert isinstance(model, Model)
    with twinstage.open(scene, models=[model], rate=10.0) as twin:
        assert model.bound == ["/W/T1", "/W/T3"]
        assert twin.models["filler"] is model
        twin.run(ticks=20)
        assert twin.get("/W/T1", "level") == pytest.approx(1.0 + 0.5 * 2.0)
        assert twin.get("/W/T3", "level") == pytest.approx(0.0 + 2.0 * 2.0)
        assert twin.get("/W/T2", "level") == 2.0  # no model: untouched
        twin.set("/W/T3", inflow=0.0)
        twin.run(ticks=5)
        assert twin.get("/W/T3", "level") == pytest.approx(4.0)
        assert twin.provenance()["models"]["filler"]["parameters"] == {"kind": "filler"}


def test_unknown_model_is_a_model_error_naming_the_prim(tmp_path):
    scene = build_scene(tmp_path / "t.usda", [_tank("T1", "", 1.0, 0.5), _tank("T2", "warp_drive", 1.0, 0.5)])
    with pytest.raises(ModelError) as exc:
        twinstage.open(scene)
    assert "/W/T2" in str(exc.value) and "warp_drive" in str(exc.value)


def test_scene_without_twin_prims_is_a_stage_error(tmp_path, shared_data):
    p = tmp_path / "plain.usda"
    stage = create_stage(p, root="W")
    stage.DefinePrim("/W/Box", "Cube")
    stage.GetRootLayer().Save()
    with pytest.raises(StageError, match="no twin prims"):
        twinstage.open(p)
    with pytest.raises(StageError, match="no twin prims"):
        twinstage.open(shared_data / "usd-wg" / "full_assets" / "Teapot" / "Teapot.usd")
    with pytest.raises(StageError, match="no such file"):
        twinstage.open(tmp_path / "missing.usda")


class Glitch:
    """Writes ``value`` into ``x`` every tick; NaN where ``nan_rows`` says so."""

    name: ClassVar[str] = "glitch"

    def __init__(self):
        self.value = 0.5
        self.nan_rows: list[int] = []

    def bind(self, table, prims, stage) -> None:
        self.rows = table.rows("x", prims)

    def step(self, table, t, dt, rng) -> None:
        out = np.full(len(self.rows), self.value)
        out[self.nan_rows] = np.nan
        table["x"][self.rows] = out

    def parameters(self) -> dict[str, Any]:
        return {}


def _glitch_scene(tmp_path: Path) -> Path:
    attrs = [("x", "float", 0.25, {"unit": "m", "min": 0.0, "max": 1.0})]
    return build_scene(tmp_path / "g.usda", [("G1", "glitch", list(attrs)), ("G2", "glitch", list(attrs))])


def test_model_nan_keeps_values_flags_bad_logs_and_continues(tmp_path, caplog):
    model = Glitch()
    with twinstage.open(_glitch_scene(tmp_path), models=[model]) as twin:
        seen = Collect()
        twin.on_frame(seen)
        twin.run(ticks=2)
        assert twin.get("/W/G1", "x") == 0.5
        model.value, model.nan_rows = 0.75, [1]
        twin.run(ticks=3)
        assert twin.tick_count == 5  # the run went on
        assert twin.get("/W/G1", "x") == 0.75
        assert twin.get("/W/G2", "x") == 0.5  # previous value kept
        q = twin.table.quality("x")
        assert q[twin.table.row("/W/G2", "x")] & Quality.BAD
        assert q[twin.table.row("/W/G1", "x")] == Quality.GOOD
        assert len(twin.errors) == 3 and all("twin:x" in e and "non-finite" in e for e in twin.errors)
        assert "non-finite" in caplog.text
        f3 = seen.frames[2]
        c = f3.changes["x"]
        assert c.quality.tolist() == [0, int(Quality.BAD)] and c.values.tolist() == [0.75, 0.5]
        assert not any(np.isnan(f.changes["x"].values).any() for f in seen.frames if "x" in f.changes)
        # the model recovers: the fresh value is good again
        model.nan_rows = []
        twin.run(ticks=1)
        assert twin.get("/W/G2", "x") == 0.75
        assert q[twin.table.row("/W/G2", "x")] == Quality.GOOD
        assert seen.frames[-1].changes["x"].quality.tolist() == [0]


def test_out_of_range_flag_set_when_leaving_limits_and_cleared_when_back(tmp_path):
    model = Glitch()
    with twinstage.open(_glitch_scene(tmp_path), models=[model]) as twin:
        seen = Collect()
        twin.on_frame(seen)
        twin.run(ticks=1)
        q = twin.table.quality("x")
        assert not q.any()
        model.value = 1.5  # a model output may leave the limits: kept, flagged
        twin.run(ticks=1)
        assert twin.get("/W/G1", "x") == 1.5
        assert (q == Quality.OUT_OF_RANGE).all()
        assert seen.frames[-1].changes["x"].quality.tolist() == [int(Quality.OUT_OF_RANGE)] * 2
        twin.run(ticks=1)  # same value, same flag: no change
        assert "x" not in seen.frames[-1].changes
        model.value = -0.1
        twin.run(ticks=1)
        assert (q == Quality.OUT_OF_RANGE).all()
        model.value = 0.9
        twin.run(ticks=1)
        assert not q.any()
        assert seen.frames[-1].changes["x"].quality.tolist() == [0, 0]
        assert list(twin.errors) == []


# -- USD change notices ----------------------------------------------------------------------------------


def test_pxr_edit_enters_the_next_frame_and_the_table(pump_scene):
    with twinstage.open(pump_scene) as twin:
        seen = Collect()
        twin.on_frame(seen)
        twin.run(ticks=2)
        twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Set(0.3)
        assert twin.get(V1, "opening") == 1.0  # not before the next tick
        twin.run(ticks=1)
        f = seen.frames[-1]
        assert f.changes["opening"].values.tolist() == [0.3]
        assert f.changes["opening"].rows.tolist() == [twin.table.row(V1, "opening")]
        assert twin.get(V1, "opening") == 0.3
        assert twin.get(PUMP, "flowRate") < 125.0  # the model used it
        assert list(twin.errors) == []
        twin.run(ticks=2)
        assert twin.get(V1, "opening") == 0.3
        assert twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Get() == 0.3


def test_pxr_edits_in_a_change_block_and_other_layers(pump_scene):
    with twinstage.open(pump_scene) as twin:
        stage = twin.stage
        with Sdf.ChangeBlock():
            stage.GetRootLayer().GetAttributeAtPath(f"{V1}.twin:opening").default = 0.6
            stage.GetRootLayer().GetAttributeAtPath(f"{PUMP}.twin:motorSpeed").default = 0.8
        with Usd.EditContext(stage, stage.GetSessionLayer()):
            stage.GetPrimAtPath(V2).GetAttribute("twin:opening").Set(0.9)
        twin.run(ticks=1)
        assert twin.get(V1, "opening") == 0.6
        assert twin.get(PUMP, "motorSpeed") == 0.8
        assert twin.get(V2, "opening") == 0.9
        # non-state properties are not twin inputs
        stage.GetPrimAtPath(V1).GetAttribute("twin:opening:description").Set("changed")
        stage.GetPrimAtPath(V1).GetAttribute("xformOp:translate").Set((0.0, 0.0, 0.0))
        twin.run(ticks=1)
        assert list(twin.errors) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1.5, -0.2])
def test_invalid_pxr_edit_is_rejected_and_the_run_continues(pump_scene, bad):
    with twinstage.open(pump_scene) as twin:
        twin.run(ticks=1)
        twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Set(bad)
        assert len(twin.errors) == 1
        assert f"{V1}.twin:opening" in twin.errors[0] and "rejected" in twin.errors[0]
        twin.run(ticks=3)
        assert twin.tick_count == 4
        assert twin.get(V1, "opening") == 1.0
        assert math.isfinite(twin.get(PUMP, "flowRate"))
        twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Set(0.5)  # a good edit afterwards still works
        twin.run(ticks=1)
        assert twin.get(V1, "opening") == 0.5


def test_own_writes_are_not_echoed_as_user_edits(pump_scene):
    with twinstage.open(pump_scene) as twin:
        calls = []
        real_set = twin.set

        def spy(path, **values):
            calls.append((path, values))
            return real_set(path, **values)

        twin.set = spy  # the notice handler queues user edits through set()
        real_set(V1, opening=0.5)
        real_set(PUMP, motorSpeed=0.7)
        twin.run(ticks=5)
        # every tick the writers changed the live layer (valves, pump outputs, sensors, columns)
        assert twin.writer.stats["committed"] > 0
        layer = twin.live_layer
        assert layer.GetAttributeAtPath(f"{V1}.twin:opening").default == 0.5
        assert calls == []
        # had they been echoed, the root layer's 1.0 would have come back
        assert twin.get(V1, "opening") == 0.5 and twin.get(PUMP, "motorSpeed") == 0.7
        assert list(twin.errors) == []
        # a user's edit after that is still seen
        twin.stage.GetPrimAtPath(V2).GetAttribute("twin:opening").Set(0.4)
        assert calls == [(V2, {"opening": 0.4})]


def test_edits_after_close_are_ignored(pump_scene):
    twin = twinstage.open(pump_scene)
    twin.run(ticks=1)
    twin.close()
    twin.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Set(0.2)
    assert twin.get(V1, "opening") == 1.0 and list(twin.errors) == []
    twin.close()  # idempotent


# -- property: random set sequences never corrupt accepted state ---------------------------------------

_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-0.5, max_value=1.5),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.tuples(st.floats(-5, 5), st.sampled_from(["m", "cm", "degC", "1", "%", "nope"])),
    st.lists(st.floats(-5, 5), max_size=4),
)


@pytest.fixture(scope="module")
def mixed_twin(tmp_path_factory):
    scene = build_scene(
        tmp_path_factory.mktemp("mixed") / "mixed.usda",
        [
            (
                "P",
                "",
                [
                    ("frac", "float", 0.5, {"unit": "1", "min": 0.0, "max": 1.0}),
                    ("length", "float", 2.0, {"unit": "m", "min": 0.0, "max": 10.0}),
                    ("count", "int", 3, {"unit": "1", "min": 0, "max": 1000}),
                    ("big", "int", 0, {"unit": "1"}),
                    ("on", "bool", False, {"unit": "1"}),
                    ("pos", "vec3", (0.0, 0.0, 0.0), {"unit": "m"}),
                ],
            )
        ],
    )
    twin = twinstage.open(scene)
    yield twin
    twin.close()


def _stored(twin: Twin, name: str, value: Any) -> Any:
    """What an accepted ``value`` of ``twin:<name>`` must read back as."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        from twinstage.units import convert

        value = convert(value[0], value[1], twin.table.channels[name].unit)
    kind = twin.table.channels[name].type
    if kind == "vec3":
        return tuple(float(c) for c in value)
    return {"float": float, "int": int, "bool": bool}[kind](value)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.lists(st.tuples(st.sampled_from(["frac", "length", "count", "big", "on", "pos", "nope"]), _values), min_size=1, max_size=3), st.booleans()),
        max_size=12,
    )
)
def test_random_sets_never_corrupt_accepted_state(mixed_twin, ops):
    twin = mixed_twin
    expected = twin.get("/W/P")
    for assignments, do_tick in ops:
        values = dict(assignments)
        try:
            twin.set("/W/P", **values)
        except (StateError, UnitError) as exc:
            assert "/W/P" in str(exc)  # every rejection says where
        else:
            for k, v in values.items():  # accepted: all of them, at the next tick
                expected[k] = _stored(twin, k, v)
            twin.run(ticks=1)
        if do_tick:
            twin.run(ticks=1)
        got = twin.get("/W/P")
        assert got.keys() == expected.keys()
        for k in got:
            assert got[k] == pytest.approx(expected[k], rel=1e-12, abs=1e-12), k
    assert list(twin.errors) == []
    for name in ("frac", "length"):
        v = twin.get("/W/P", name)
        ch = twin.table.channels[name]
        assert math.isfinite(v) and ch.lo[0] <= v <= ch.hi[0]
    assert np.isfinite(twin.table["pos"]).all()
    assert not any(twin.table.quality(n).any() for n in twin.table.channels)
