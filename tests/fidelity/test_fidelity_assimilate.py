"""Assimilation inside the tick (``engine.add_stage(Assimilator())``), end to end on SKAB replay."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import twinstage
from twinstage.state import Quality

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "scenes" / "pump_testbed.usda"
GOLDEN = (math.sqrt(5) - 1) / 2  # steady-state posterior variance / r of a random walk with q = r per sample


class _Probe:
    """A stage that records what it sees and writes a NaN once: the quality stage runs after it."""

    def __init__(self):
        self.seen = []

    def start(self, ctx):
        self.ctx = ctx

    def describe(self):
        return {"stage": "probe"}

    def step(self, t, dt):
        table = self.ctx.table
        row = table.row("/Testbed/Pump", "flowRate")
        self.seen.append((t, dt, float(table["flowRate"][row])))
        if len(self.seen) == 2:
            table["flowRate"][row] = float("nan")
        if len(self.seen) == 3:
            raise RuntimeError("stage broke")


def test_engine_stage_hook_runs_after_models_before_quality():
    with twinstage.open(SCENE, headless=True) as twin:
        probe = twin.add_stage(_Probe())
        twin.set("/Testbed/Valve1", opening=0.3)
        twin.step(1)
        assert probe.seen[0][0] == 0.0 and probe.seen[0][1] == pytest.approx(0.1)
        assert probe.seen[0][2] < 125.0  # the model has already stepped with the new opening
        flow = twin.get("/Testbed/Pump", "flowRate")
        twin.step(1)  # the stage wrote NaN: the quality stage kept the previous value, flagged BAD
        assert twin.get("/Testbed/Pump", "flowRate") == flow and twin.quality("/Testbed/Pump", "flowRate") & Quality.BAD
        twin.step(2)  # a stage that raises is logged; the clock goes on
        assert twin.tick_count == 4 and any("stage _Probe failed" in e for e in twin.errors)
        assert twin.provenance()["stages"] == [{"stage": "probe"}]
        assert twin.stages == (probe,)
        twin.remove_stage(probe)
        twin.step(1)
        assert len(probe.seen) == 4


def _skab_with_bad(src: Path, dst: Path, rows: range) -> None:
    lines = src.read_text().splitlines()
    head = lines[0].split(";")
    col = head.index("Volume Flow RateRMS")
    for i in rows:
        cells = lines[1 + i].split(";")
        cells[col] = "inf"  # a non-finite reading: the replay flags it BAD
        lines[1 + i] = ";".join(cells)
    dst.write_text("\n".join(lines) + "\n")


def test_assimilation_on_skab_replay(shared_data, tmp_path):
    from twinstage.fidelity import Assimilator
    from twinstage.telemetry._attach import attach_replay

    data = tmp_path / "valve1_1_bad.csv"
    _skab_with_bad(shared_data / "skab" / "data" / "valve1" / "1.csv", data, range(200, 215))
    with twinstage.open(SCENE, headless=True) as twin:
        attach_replay(twin, data)
        assim = twin.add_stage(Assimilator(keep_trace=True))
        twin.run(ticks=3000)
        assert assim.status == "assimilating" and not twin.errors
        names = assim.names
        assert len(names) == 8 and "/Testbed/Pump.flowRate" in names
        assert sorted(g.target for g in assim.groups if g.state) == ["fluidTemperature", "motorTemperature"]
        tr = {k: np.array([t[k] for t in assim.trace]) for k in assim.trace[0]}
        used = tr["used"]
        # one measurement per 1 Hz sample, not one per 10 Hz tick
        assert 0.08 < used.mean() < 0.11
        # at every update the estimate lies between the prediction (prior) and the measurement
        lo, hi = np.minimum(tr["prior"], tr["measured"]), np.maximum(tr["prior"], tr["measured"])
        u = used
        assert ((tr["estimate"][u] >= lo[u] - 1e-9) & (tr["estimate"][u] <= hi[u] + 1e-9)).all()
        moved = u & (np.abs(tr["prior"] - tr["measured"]) > 1e-6)
        assert (np.abs(tr["estimate"] - tr["prior"])[moved] > 0).all() and (np.abs(tr["estimate"] - tr["measured"])[moved] > 0).all()
        # between samples the correction persists: the estimate is not the bare model
        f = names.index("/Testbed/Pump.flowRate")
        assert abs(tr["estimate"][-1, f] - tr["model"][-1, f]) > 50  # SKAB valve1 flows ~32 L/min, the default model 125
        # variance reaches the analytic steady state: posterior var = r (√5−1)/2 with the default q = r per 1 s sample
        meas_std = 0.01 * 300.0  # rel_std × the flow meter's declared range
        post = tr["std"][u[:, f], f]
        steady = meas_std * math.sqrt(GOLDEN)  # a gap in the file's timestamps is a transient; it settles again
        assert np.median(post[-100:]) == pytest.approx(steady, rel=1e-6) and post[-1] == pytest.approx(steady, rel=1e-4)
        # BAD samples (rows 200..214 of the file) never enter; the uncertainty grows across the gap
        import pandas as pd

        stamps = pd.to_datetime(pd.read_csv(data, sep=";")["datetime"])
        rel = (stamps - stamps[0]).dt.total_seconds().to_numpy()  # the replay's sim time of each row
        t = np.arange(1, len(used) + 1) * 0.1
        gap = (t > rel[200] - 0.05) & (t < rel[215] - 0.05)
        assert not used[gap, f].any() and used[gap, names.index("/Testbed/Pump.current")].any()
        sd_gap = tr["std"][gap, f]
        assert sd_gap[-1] > 2 * meas_std * math.sqrt(GOLDEN) and (np.diff(sd_gap) >= 0).all()
        # twin state: ESTIMATED quality and the declared companion std
        assert twin.quality("/Testbed/Pump", "flowRate") & Quality.ESTIMATED
        assert twin.get("/Testbed/Pump", "flowRateStd") == pytest.approx(assim.std("/Testbed/Pump", "flowRate"))
        assert twin.quality("/Testbed/Pump", "flowRateStd") == Quality.ESTIMATED
        assert twin.get("/Testbed/Pump", "flowRate") == pytest.approx(assim.last["/Testbed/Pump.flowRate"]["estimate"])
        prov = twin.provenance()["stages"][0]
        assert prov["stage"] == "assimilation" and prov["pairs"] == names


def test_assimilation_without_telemetry_is_the_model_with_growing_uncertainty():
    from twinstage.fidelity import Assimilator

    with twinstage.open(SCENE, headless=True) as twin, twinstage.open(SCENE, headless=True) as plain:
        assim = twin.add_stage(Assimilator(process_std={"flowRate": 1.0}, meas_std={"flowRate": 2.0}))
        for tw in (twin, plain):
            tw.set("/Testbed/Valve1", opening=0.4)
            tw.run(ticks=50)
        assert twin.get("/Testbed/Pump", "flowRate") == pytest.approx(plain.get("/Testbed/Pump", "flowRate"))
        assert assim.updates == 0  # a sensor model reading the model back is not a measurement
        # var = r + q·dt per tick: 4 + 50 × 0.1
        assert twin.get("/Testbed/Pump", "flowRateStd") == pytest.approx(math.sqrt(4.0 + 5.0))


def test_assimilation_bad_settings():
    from twinstage.fidelity import Assimilator

    with pytest.raises(ValueError, match="rel_std"):
        Assimilator(rel_std=0.0)
    with twinstage.open(SCENE, headless=True) as twin:
        twin.add_stage(Assimilator(meas_std={"flowRate": -1.0}))
        twin.step(2)  # refused at the first tick, logged, the twin runs on
        assert any("meas_std must be > 0" in e for e in twin.errors) and twin.tick_count == 2


def test_assimilation_on_a_scene_without_sensors(tmp_path):
    from twinstage.fidelity import Assimilator
    from twinstage.scenes import generate_factory

    generate_factory(3, tmp_path / "f.usda", seed=1)
    with twinstage.open(tmp_path / "f.usda", headless=True) as twin:
        a = twin.add_stage(Assimilator())
        twin.step(3)
        assert a.status.startswith("no sensor") and not twin.errors


def test_cli_run_assimilate_detect_records_estimates_and_alarm(shared_data, tmp_path):
    data = shared_data / "skab" / "data" / "valve1" / "1.csv"
    rec = tmp_path / "run.usdc"
    r = subprocess.run([sys.executable, "-m", "twinstage", "run", str(SCENE), "--replay", str(data), "--assimilate", "--detect",
                        "--record", str(rec)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "assimilation: assimilating; 8 attributes" in r.stdout and "published on /Testbed/Pump" in r.stdout
    recording = twinstage.Recording(rec)
    std = recording.series("/Testbed/Pump", "flowRateStd")
    flow = recording.series("/Testbed/Pump", "flowRate")
    assert np.nanmax(std) > 0 and np.nanmedian(flow) < 60  # the estimate follows SKAB's ~32 L/min, not the model's 125
    alarm = recording.series("/Testbed/Pump", "anomalyAlarm")
    score = recording.series("/Testbed/Pump", "anomalyScore")
    assert np.asarray(alarm, dtype=bool).any() and np.nanmax(score) > 0  # valve1/1.csv holds a labelled anomaly
    prov = recording.provenance
    assert "assimilation" in str(prov.get("stages"))


def test_a_second_sensor_on_the_same_attribute_is_not_fused_twice(tmp_path, caplog):
    from pxr import Sdf

    from twinstage.fidelity import Assimilator
    from twinstage.scenes import build_pump_testbed
    from twinstage.usd import declare_asset, declare_attribute

    stage = build_pump_testbed(tmp_path / "p.usda")
    prim = stage.DefinePrim("/Testbed/Sensors/FlowMeter2", "Xform")
    declare_asset(prim, kind="sensor", asset_id="FM2", model="sensor")
    declare_attribute(prim, "flowRate", "float", 125.2, unit="L/min", min=0.0, max=300.0, role="measured")
    prim.CreateRelationship("twin:measures", custom=False).SetTargets([Sdf.Path("/Testbed/Pump.twin:flowRate")])
    stage.GetRootLayer().Save()
    with twinstage.open(tmp_path / "p.usda", headless=True) as twin:
        a = twin.add_stage(Assimilator())
        twin.step(1)
        assert a.names.count("/Testbed/Pump.flowRate") == 1 and not twin.errors
        assert "FlowMeter2.flowRate also measures /Testbed/Pump.flowRate" in caplog.text
