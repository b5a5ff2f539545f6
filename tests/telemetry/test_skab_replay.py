"""Every SKAB file replays through the pump testbed twin: right values and units, only explained flags."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import ReplaySource, read_bindings
from twinstage.units import converter

SENSORS = "/Testbed/Sensors/"


def skab_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "skab" / "data").rglob("*.csv"))
    assert len(files) >= 20, files
    return files


def test_the_testbed_scene_binds_every_skab_column_with_a_unit_that_converts(pump_scene):
    eng = twinstage.open(pump_scene, headless=True)
    bindings = read_bindings(eng.stage, kind="csv")
    assert len(bindings) == 8
    for b in bindings:
        converter(b.unit, eng.unit(b.prim, b.attribute))  # raises on a mismatch
        assert b.prim.startswith(SENSORS) and b.period == 1.0
    accel = [b for b in bindings if b.key == "Accelerometer1RMS"][0]
    assert accel.unit == "g0"  # SKAB's "g" is standard gravity, not the gram


def test_every_skab_file_replays_with_correct_values_and_no_unexplained_flags(shared_data, pump_scene):
    eng0 = twinstage.open(pump_scene, headless=True, rate=1.0)
    bindings = read_bindings(eng0.stage, kind="csv")
    for f in skab_files(shared_data):
        eng = eng0.fork()
        src = eng.add_source(ReplaySource(f, bindings))
        raw = pd.read_csv(f, sep=";")
        t = (pd.to_datetime(raw["datetime"]) - pd.to_datetime(raw["datetime"].iloc[0])).dt.total_seconds().to_numpy()
        ticks = int(math.ceil(t[-1])) + 2
        rows = {b.key: (b.attribute, eng.table.row(b.prim, b.attribute), b) for b in bindings}
        got = {k: np.empty(ticks) for k in rows}
        qual = {k: np.empty(ticks, np.uint8) for k in rows}

        def grab(frame, rows=rows, got=got, qual=qual, eng=eng):
            i = frame.tick - 1
            for k, (attr, r, _) in rows.items():
                got[k][i] = eng.table[attr][r]
                qual[k][i] = eng.table.quality(attr)[r]

        eng.on_frame(grab)
        eng.run(ticks=ticks)
        target = np.arange(1, ticks + 1, dtype=float)
        last = np.searchsorted(t, target, side="right") - 1  # hold: the last row at or before each tick
        age = target - t[last]
        for key, (attr, r, b) in rows.items():
            ch = eng.table.channels[attr]
            expect = converter(b.unit, ch.unit)(raw[key].to_numpy(dtype=float))[last]
            assert np.array_equal(got[key], expect), f"{f.name} {key}"
            q = qual[key]
            assert not (q & Quality.BAD).any(), f"{f.name} {key}: BAD {eng.quality_reason(b.prim, attr)}"
            assert not (q & (Quality.LATE | Quality.OVERFLOW | Quality.UNCERTAIN)).any(), f"{f.name} {key}"
            stale = (q & Quality.STALE) != 0
            assert np.array_equal(stale, age > 3.0), f"{f.name} {key}: STALE only after a real gap > 3 s"
            out = (q & Quality.OUT_OF_RANGE) != 0
            assert np.array_equal(out, (got[key] < ch.lo[r]) | (got[key] > ch.hi[r])), f"{f.name} {key}"
            if q[-1]:
                assert eng.quality_reason(b.prim, attr) != "good"
        st = eng.stats()["telemetry"]["sources"][src.name]
        assert st["applied"] == 8 * len(raw) and st["bad"] == st["late"] == st["duplicates"] == 0, (f.name, st)
        assert not eng.errors, list(eng.errors)


def test_a_real_gap_shows_as_stale_with_its_reason(shared_data, pump_scene):
    f = shared_data / "skab" / "data" / "valve1" / "2.csv"  # has a 76 s gap
    raw = pd.read_csv(f, sep=";")
    t = (pd.to_datetime(raw["datetime"]) - pd.to_datetime(raw["datetime"].iloc[0])).dt.total_seconds().to_numpy()
    gap = int(np.argmax(np.diff(t)))
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(f, read_bindings(eng.stage, kind="csv")))
    eng.run(ticks=int(t[gap]) + 10)
    p = SENSORS + "PressureSensor"
    assert eng.quality(p, "pressure") & Quality.STALE
    assert eng.quality_reason(p, "pressure") == "stale: last good sample 10 s ago (period 1 s × 3)"
    assert eng.freshness(p, "pressure") == 10.0


def test_measured_and_simulated_side_by_side_and_the_same_data_gives_the_same_recording(shared_data, pump_scene, tmp_path):
    f = shared_data / "skab" / "data" / "valve1" / "0.csv"
    blobs = []
    for k in range(2):
        with twinstage.open(pump_scene, rate=2.0) as twin:
            twin.add_source(ReplaySource(f, read_bindings(twin.stage, kind="csv")))
            rec = tmp_path / f"run{k}" / "rec.usdc"  # same name and depth: the root names its chunk folder
            twin.record(rec, reproducible=True)
            twin.run(ticks=120)
        blobs.append({p.relative_to(rec.parent): p.read_bytes() for p in sorted(rec.parent.rglob("*")) if p.is_file()})
    assert blobs[0] == blobs[1]
    r = twinstage.Recording(tmp_path / "run0" / "rec.usdc")
    measured = r.series(SENSORS + "FlowMeter", "flowRate")
    simulated = r.series("/Testbed/Pump", "flowRate")
    assert measured[-1] == pytest.approx(32.0, abs=2.0) and simulated[-1] == pytest.approx(125.2, abs=0.5)
    assert "valve1/0.csv" in str(r.provenance.get("dataSources"))
