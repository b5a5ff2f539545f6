"""The recorder: a separate USD file of time samples, provenance, decimation, temp files, export."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from pxr import Sdf, Usd, UsdGeom

import twinstage
from twinstage import __version__
from twinstage.models import parameters_hash
from twinstage.scenes import generate_factory
from twinstage.usd import StageError
from twinstage.usd._recorder import Recorder, chunk_dir, clean_stale_temp_files
from twinstage.usd._validate import validate
from twinstage.usd._writer import COLUMN_NS

from _recordutil import Tape, scripted_run as _scripted_run


def test_recording_layer_metadata_and_provenance(pump_scene, tmp_path):
    out = tmp_path / "runs" / "rec.usdc"
    twin = twinstage.open(pump_scene, rate=20.0, seed=7)
    twin.record(out)
    _scripted_run(twin, 30)
    twin.close()

    layer = Sdf.Layer.FindOrOpen(str(out))
    assert layer is not None
    assert list(layer.subLayerPaths) == ["../pump_testbed.usda"]
    assert layer.timeCodesPerSecond == 20.0
    assert layer.HasTimeCodesPerSecond()
    assert (layer.startTimeCode, layer.endTimeCode) == (1.0, 30.0)
    assert layer.defaultPrim == "Testbed"
    assert layer.pseudoRoot.GetInfo("upAxis") == "Z"
    assert layer.pseudoRoot.GetInfo("metersPerUnit") == 1.0

    stage = Usd.Stage.Open(str(out))  # composes with the scene through the relative sublayer
    assert stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:flowRate")
    assert stage.GetPrimAtPath("/Testbed/TwinState")
    assert stage.GetTimeCodesPerSecond() == 20.0
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (1.0, 30.0)
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0

    prov = dict(layer.customLayerData["twinstage"])
    assert prov["tool"] == f"twinstage {__version__}"
    assert prov["scene"] == str(pump_scene.resolve())
    assert prov["seed"] == 7
    assert prov["rate"] == 20.0
    assert json.loads(prov["recordedTicks"]) == [1, 30]
    assert prov["start"] <= prov["end"]
    assert len(prov["sceneSha256"]) == 64
    models = prov["models"]
    assert set(models) == set(twin.models) == {"pump_loop", "sensor"}
    for name, m in models.items():
        params = dict(m["parameters"])
        assert params == twin.models[name].parameters()
        assert m["hash"] == parameters_hash(twin.models[name].parameters())
    assert "nominal_flow" in models["pump_loop"]["parameters"]


def test_recording_beside_the_scene_uses_dot_slash(pump_scene):
    out = pump_scene.with_name("rec.usda")
    twin = twinstage.open(pump_scene)
    twin.record(out)
    twin.run(ticks=3)
    twin.close()
    assert list(Sdf.Layer.FindOrOpen(str(out)).subLayerPaths) == ["./pump_testbed.usda"]
    assert out.read_text().startswith("#usda 1.0")


def test_recording_reads_back_what_the_run_produced(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene, rate=10.0)
    twin.record(out)
    tape = Tape(twin)
    initial = twin.table.snapshot()
    _scripted_run(twin, 40)
    twin.close()

    rec = twinstage.Recording(out)
    assert rec.ticks.tolist() == tape.ticks == list(range(1, 41))
    assert rec.rate == 10.0
    assert rec.time_range == (1.0, 40.0)
    np.testing.assert_array_equal(rec.sim_times(), tape.sim_times)
    assert rec.prims == twin.table.prims
    assert set(rec.channels) == set(twin.table.channels)
    for name, ch in twin.table.channels.items():
        np.testing.assert_array_equal(rec.channels[name], ch.prim_index)
        assert rec.units[name] == ch.unit
        np.testing.assert_array_equal(rec.channel(name), np.stack([v[name] for v in tape.values]), err_msg=name)
        np.testing.assert_array_equal(rec.channel(name, quality=True), np.stack([q[name] for q in tape.quality]), err_msg=name)
    # the frames (deltas) replayed on the initial state give the same series
    state = {k: v.copy() for k, v in initial.items()}
    for i, frame in enumerate(tape.frames):
        for name, change in frame.changes.items():
            state[name][change.rows] = change.values
        for name in state:
            np.testing.assert_array_equal(rec.channel(name)[i], state[name])
    flow = rec.series("/Testbed/Pump", "flowRate")
    assert flow.shape == (40,)
    assert flow[-1] != flow[0]  # the script changed the flow
    r = twin.table.row("/Testbed/Valve1", "opening")
    np.testing.assert_array_equal(rec.series("/Testbed/Valve1", "opening"), [v["opening"][r] for v in tape.values])
    with pytest.raises(StageError, match="nope"):
        rec.channel("nope")
    with pytest.raises(StageError, match="/Testbed/Nope"):
        rec.series("/Testbed/Nope", "flowRate")


def test_vec3_channels_record(tmp_path):
    scene = tmp_path / "factory.usda"
    generate_factory(12, scene, items=6)
    twin = twinstage.open(scene)
    twin.record(tmp_path / "rec.usdc")
    tape = Tape(twin)
    twin.run(ticks=8)
    twin.close()
    rec = twinstage.Recording(tmp_path / "rec.usdc")
    pos = rec.channel("position")
    assert pos.shape == (8, 6, 3)
    np.testing.assert_array_equal(pos, np.stack([v["position"] for v in tape.values]))


def test_every_n_decimation(pump_scene, tmp_path):
    out = tmp_path / "rec.usda"
    twin = twinstage.open(pump_scene)
    twin.record(out, every=3)
    tape = Tape(twin)
    _scripted_run(twin, 20)
    twin.close()
    rec = twinstage.Recording(out)
    assert rec.ticks.tolist() == [3, 6, 9, 12, 15, 18]
    assert rec.time_range == (3.0, 18.0)
    for name in twin.table.channels:
        np.testing.assert_array_equal(rec.channel(name), np.stack([tape.values[tape.at(t)][name] for t in rec.ticks]))
    # any USD tool sees the same samples: the chunks compose through value clips
    stage = Usd.Stage.Open(str(out))
    attr = stage.GetPrimAtPath("/Testbed/TwinState").GetAttribute(f"{COLUMN_NS}:flowRate")
    assert attr.GetTimeSamples() == [3.0, 6.0, 9.0, 12.0, 15.0, 18.0]
    np.testing.assert_array_equal(np.asarray(attr.Get(9.0)), rec.channel("flowRate")[2])
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.usdc", every=0)


def test_live_values_never_hide_recorded_samples(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene, write_budget_s=None)
    rec = twin.record(out, save_every_s=0.0)
    tape = Tape(twin)
    _scripted_run(twin, 30)
    rec.save()  # a chunked recording's last chunk is written in the background: wait for it
    # the twin is still live: its stage holds live (default) values for every changed attribute
    live_temp = twin.get("/Testbed/Pump", "motorTemperature")
    assert twin.stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature").Get() == live_temp
    rec = twinstage.Recording(out)
    anim = rec.export_per_prim(tmp_path / "anim.usda")
    stage = Usd.Stage.Open(str(anim))
    r = twin.table.row("/Testbed/Pump", "motorTemperature")
    attr = stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature")
    assert attr.GetResolveInfo(Usd.TimeCode(5)).GetSource() == Usd.ResolveInfoSourceTimeSamples
    seen = set()
    for t in (1, 5, 12, 20, 30):
        expected = tape.values[tape.at(t)]["motorTemperature"][r]
        assert attr.Get(t) == expected
        seen.add(expected)
    assert len(seen) > 1, "motorTemperature did not change: the check proves nothing"
    # the recording itself, opened as a stage, shows its samples, not the running twin's values
    rstage = Usd.Stage.Open(str(out))
    col = rstage.GetPrimAtPath("/Testbed/TwinState").GetAttribute(f"{COLUMN_NS}:motorTemperature")
    from twinstage.usd import _recorder

    source = Usd.ResolveInfoSourceValueClips if _recorder.CHUNKED else Usd.ResolveInfoSourceTimeSamples
    assert col.GetResolveInfo(Usd.TimeCode(3)).GetSource() == source
    np.testing.assert_array_equal(np.asarray(col.Get(3)), tape.values[tape.at(3)]["motorTemperature"])
    # and the twin's own stage is not affected by reading
    assert twin.stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:motorTemperature").Get() == live_temp
    twin.close()


def test_stale_temp_files_removed_on_start(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    # what interrupted saves leave: Layer.Save (<name>.XXXXXX, <stem>.XXXXXX for usda) and ours
    stale = [
        tmp_path / n for n in ("rec.usdc.a1B2c3", "rec.usdc.ZZZZZZ", "rec.Q7fK2p", ".rec.usdc.tmp-0a1b2c.usdc", ".rec.usdc.tmp-0a1b2c.X1y2Z3")
    ]
    keep = [
        tmp_path / n
        for n in ("rec.usdc.bak", "rec.usdc.abcdefg", "other.usdc.abcdef", "rec.usdc.abcdef.keep", "rec.usda.abcdef", ".other.usdc.tmp-0a1b2c.usdc")
    ]
    for p in stale + keep:
        p.write_bytes(b"PXR-USDC partial")
    (tmp_path / "rec.usdc.x_9y_0").write_bytes(b"")  # killed before it wrote a byte
    stale.append(tmp_path / "rec.usdc.x_9y_0")
    (tmp_path / "rec.backup").write_text("a user's notes, not a temp file")
    keep.append(tmp_path / "rec.backup")
    out.write_bytes(b"an old, broken recording")
    twin = twinstage.open(pump_scene)
    twin.record(out)
    for p in stale:
        assert not p.exists(), f"{p.name} not cleaned"
    for p in keep:
        assert p.exists(), f"{p.name} must not be touched"
    twin.run(ticks=5)
    twin.close()
    assert twinstage.Recording(out).ticks.tolist() == [1, 2, 3, 4, 5]
    assert clean_stale_temp_files(tmp_path / "missing-dir" / "x.usdc") == []
    # saving leaves no temp files of its own behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".rec.usdc")) == []


@pytest.mark.parametrize("suffix", [".usdc", ".usda"])
@pytest.mark.parametrize("chunked", [False, True])
def test_frequent_saves_do_not_grow_the_file(pump_scene, tmp_path, suffix, chunked):
    """Saving over and over keeps no earlier versions (crate's incremental save would). Chunked,
    every save writes one new chunk of the new ticks and a root that only grows by a clip entry."""
    sizes = {}
    for every_s in (0.0, 3600.0):
        out = tmp_path / f"rec{every_s:g}{suffix}"
        twin = twinstage.open(pump_scene)
        rec = twin.add_sink(Recorder(out, save_every_s=every_s, chunked=chunked))
        twin.run(ticks=150)
        twin.close()
        sizes[every_s] = out.stat().st_size
        assert rec.saves >= (150 if every_s == 0.0 else 2)
        recording = twinstage.Recording(out)
        assert recording.ticks.tolist() == list(range(1, 151))
        if not chunked:
            assert not chunk_dir(out).exists()
            continue
        chunks = sorted(chunk_dir(out).glob("0*.usdc"))
        assert len(chunks) == len(recording.chunks) == (150 if every_s == 0.0 else 1)
        if every_s == 0.0:
            assert [len(t) for _, t in recording.chunks] == [1] * 150
            chunk_sizes = [p.stat().st_size for p in chunks]
            assert max(chunk_sizes) <= 1.2 * min(chunk_sizes), "a chunk grew with later saves"
    if chunked:
        assert sizes[0.0] <= sizes[3600.0] + 150 * 120, sizes
    else:
        assert sizes[0.0] <= 1.1 * sizes[3600.0], sizes


def test_recording_file_mode_follows_umask(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene)
    twin.record(out)
    twin.run(ticks=2)
    twin.close()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_periodic_saves_keep_the_file_current(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    copy = tmp_path / "copy.usdc"
    twin = twinstage.open(pump_scene)
    rec = twin.record(out, save_every_s=3600.0)
    # before any periodic save the file on disk already reads as an (empty) recording
    shutil.copy(out, copy)
    empty = twinstage.Recording(copy)
    assert empty.ticks.tolist() == []
    assert set(empty.channels) == set(twin.table.channels)
    del empty
    twin.run(ticks=5)
    rec.save_every_s = 0.0  # from now on every tick saves
    twin.run(ticks=5)
    shutil.copy(out, tmp_path / "copy2.usdc")  # what a crash would leave
    on_disk = twinstage.Recording(tmp_path / "copy2.usdc")
    # every tick's save is on disk, but (chunked) tick 10's chunk may still be in the writer thread
    n = len(on_disk.ticks)
    assert n >= (9 if rec.chunked else 10)
    assert on_disk.ticks.tolist() == list(range(1, n + 1))
    assert on_disk.time_range == (1.0, float(n))
    assert rec.saves >= 6
    twin.close()


def test_failed_save_keeps_the_last_good_file_and_the_run_going(pump_scene, tmp_path, monkeypatch):
    from twinstage.usd import _recfiles

    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene)
    rec = twin.record(out, save_every_s=0.0)
    twin.run(ticks=5)
    rec.save()  # chunked: tick 5's chunk and root were written in the background; wait for them
    good = out.read_bytes()
    # the next saves cannot write their temp file (a directory is in the way)
    monkeypatch.setattr(_recfiles.secrets, "token_hex", lambda n: "blockd")
    blocker = tmp_path / ".rec.usdc.tmp-blockd.usdc"
    blocker.mkdir()
    twin.run(ticks=5)
    assert twin.tick_count == 10  # the clock kept going
    assert any("Recorder" in e for e in twin.errors), list(twin.errors)
    assert out.read_bytes() == good  # the last good save is untouched
    shutil.copy(out, tmp_path / "crash_copy.usdc")
    assert twinstage.Recording(tmp_path / "crash_copy.usdc").ticks.tolist() == [1, 2, 3, 4, 5]
    monkeypatch.undo()
    blocker.rmdir()
    twin.run(ticks=2)
    twin.close()
    # nothing recorded in memory was lost while saving failed
    assert twinstage.Recording(out).ticks.tolist() == list(range(1, 13))


def test_rerecording_replaces_the_earlier_recording(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    for ticks in (12, 4):
        twin = twinstage.open(pump_scene)
        twin.record(out)
        twin.run(ticks=ticks)
        twin.close()
    rec = twinstage.Recording(out)
    assert rec.ticks.tolist() == [1, 2, 3, 4]
    assert rec.time_range == (1.0, 4.0)


def test_export_per_prim(tmp_path):
    scene = tmp_path / "factory.usdc"
    generate_factory(30, scene, items=10)
    out = tmp_path / "out" / "rec.usdc"
    twin = twinstage.open(scene, rate=5.0)
    twin.record(out, every=2)
    tape = Tape(twin)
    twin.run(ticks=10)
    twin.close()
    rec = twinstage.Recording(out)
    anim_path = rec.export_per_prim(tmp_path / "anim" / "anim.usdc")
    layer = Sdf.Layer.FindOrOpen(str(anim_path))
    assert list(layer.subLayerPaths) == ["../factory.usdc"]
    assert layer.timeCodesPerSecond == 5.0
    assert (layer.startTimeCode, layer.endTimeCode) == (2.0, 10.0)
    assert layer.defaultPrim == "Factory"
    assert "twinstage" in layer.customLayerData
    stage = Usd.Stage.Open(str(anim_path))
    table = twin.table
    times = [2.0, 4.0, 6.0, 8.0, 10.0]
    for name, ch in table.channels.items():
        for r, pi in enumerate(ch.prim_index.tolist()):
            attr = stage.GetPrimAtPath(table.prims[pi]).GetAttribute(f"twin:{name}")
            assert attr.GetTimeSamples() == times, (table.prims[pi], name)
            for t in times:
                expected = tape.values[tape.at(int(t))][name][r]
                assert np.array_equal(np.asarray(attr.Get(t), dtype=float), np.asarray(expected, dtype=float)), (table.prims[pi], name, t)
    # drives are exported too: items are animated through their transform
    pos = table.channels["position"]
    for r, pi in enumerate(pos.prim_index.tolist()):
        tr = stage.GetPrimAtPath(table.prims[pi]).GetAttribute("xformOp:translate")
        assert tr.GetTimeSamples() == times
        assert tuple(tr.Get(10.0)) == tuple(tape.values[tape.at(10)]["position"][r])
    findings = validate(anim_path)
    assert [f for f in findings if f.severity == "error"] == []


@pytest.mark.parametrize("name", ["rec.usdz", "rec.txt", "rec", "rec.json", "rec.usd.bak"])
def test_bad_recording_extension(pump_scene, tmp_path, name):
    twin = twinstage.open(pump_scene)
    with pytest.raises(StageError) as info:
        twin.record(tmp_path / name)
    assert name in str(info.value)
    assert not (tmp_path / name).exists()
    twin.run(ticks=2)  # the twin keeps going
    twin.close()


@pytest.mark.parametrize("target", ["pump_testbed.usda", "pump_testbed_parts.usdc"])
def test_recording_over_a_scene_layer_is_refused(pump_scene, target):
    path = pump_scene.with_name(target)
    before = path.read_bytes()
    twin = twinstage.open(pump_scene)
    n_prims = len(list(twin.stage.Traverse()))
    with pytest.raises(StageError, match=target):
        twin.record(path)
    assert path.read_bytes() == before
    assert len(list(twin.stage.Traverse())) == n_prims
    twin.run(ticks=2)
    assert not twin.errors
    twin.close()


def test_recording_over_another_open_scene_is_refused(pump_scene, tmp_path):
    other = tmp_path / "other" / "factory.usda"
    generate_factory(4, other)
    a = twinstage.open(other)
    before = other.read_bytes()
    b = twinstage.open(pump_scene)
    with pytest.raises(StageError, match="factory.usda"):
        b.record(other)
    assert other.read_bytes() == before
    assert len(a.table.prims) == 4 and a.stage.GetPrimAtPath("/Factory/Machines/M0")
    a.run(ticks=2)
    b.run(ticks=2)
    assert not a.errors and not b.errors
    a.close()
    b.close()


def test_recording_reader_bad_input(pump_scene, tmp_path):
    with pytest.raises(StageError, match="missing.usdc"):
        twinstage.Recording(tmp_path / "missing.usdc")
    with pytest.raises(StageError, match="pump_testbed.usda"):
        twinstage.Recording(pump_scene)  # a USD file, but not a recording
    garbage = tmp_path / "garbage.usdc"
    garbage.write_bytes(b"PXR-USDC" + bytes(range(256)) * 8)
    with pytest.raises(StageError, match="garbage.usdc"):
        twinstage.Recording(garbage)


@pytest.mark.parametrize("chunked", [False, True])
def test_save_interval_stretches_with_the_cost_of_a_save(pump_scene, tmp_path, monkeypatch, chunked):
    twin = twinstage.open(pump_scene)
    # chunked, a full chunk is sealed whatever the interval: make chunks bigger than this run
    rec = twin.record(tmp_path / "rec.usdc", save_every_s=0.01, chunked=chunked, chunk_ticks=1000 if chunked else None)
    real = rec._write_atomically
    clock = {"t": 0.0}

    def slow_write(**kw):  # a save that costs 0.2 s of (fake) time
        real(**kw)
        clock["t"] += 0.2

    monkeypatch.setattr(rec, "_write_atomically", slow_write)
    monkeypatch.setattr("twinstage.usd._recorder.time.monotonic", lambda: clock["t"])
    rec.save()
    assert rec.last_save_s == pytest.approx(0.2)
    assert rec.save_interval_s == pytest.approx(0.2 / rec.MAX_SAVE_SHARE)  # 4 s: saves stay at 5 % of the run
    saves = rec.saves
    for _ in range(100):  # 100 ticks of 0.02 s (fake) = 2 s < 4 s: no periodic save yet
        clock["t"] += 0.02
        twin.tick()
    assert rec.saves == saves
    for _ in range(150):  # past 4 s since the last save: one more
        clock["t"] += 0.02
        twin.tick()
    assert rec.saves == saves + 1
    rec.save_every_s = 0.0  # explicit every-tick saving is honoured whatever it costs
    assert rec.save_interval_s == 0.0
    twin.close()
