"""Chunked recordings: value clips, saves that cost the new data, chunks built off the tick thread."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pxr import Sdf, Usd

import twinstage
from twinstage.usd import StageError
from twinstage.usd._recorder import Recorder, chunk_dir
from twinstage.usd._writer import COLUMN_NS

from _recordutil import Tape, scripted_run as _scripted_run


def test_each_save_writes_only_the_new_ticks_and_any_usd_tool_plays_the_run(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene, rate=10.0)
    rec = twin.add_sink(Recorder(out, save_every_s=3600.0, chunk_ticks=7, chunked=True))
    tape = Tape(twin)
    _scripted_run(twin, 30)
    first = chunk_dir(out) / "000000.usdc"
    sealed = first.read_bytes()
    assert rec._tape is None or rec._tape.n < 7  # sealed chunks are not kept in memory
    twin.run(ticks=10)
    assert first.read_bytes() == sealed  # a later save never rewrites a sealed chunk
    twin.close()
    recording = twinstage.Recording(out)
    assert [t.tolist() for _, t in recording.chunks] == [list(range(k, min(k + 7, 41))) for k in range(1, 41, 7)]
    assert recording.ticks.tolist() == list(range(1, 41))
    # the root names the chunks through clip metadata; Usd composes the whole run from them
    root = Sdf.Layer.FindOrOpen(str(out))
    clips = root.GetPrimAtPath("/Testbed/TwinState").GetInfo("clips")["default"]
    assert [a.path for a in clips["assetPaths"]] == [f"./rec_usdc.chunks/{k:06d}.usdc" for k in range(6)]
    assert [tuple(a) for a in clips["active"]] == [(float(1 + 7 * k), float(k)) for k in range(6)]
    assert not root.ListTimeSamplesForPath(Sdf.Path("/Testbed/TwinState").AppendProperty(f"{COLUMN_NS}:tick"))
    stage = Usd.Stage.Open(str(out))
    prim = stage.GetPrimAtPath("/Testbed/TwinState")
    for name in twin.table.channels:
        attr = prim.GetAttribute(f"{COLUMN_NS}:{name}")
        assert attr.GetTimeSamples() == [float(t) for t in range(1, 41)]
        for t in (1, 7, 8, 20, 40):
            np.testing.assert_array_equal(np.asarray(attr.Get(float(t))), tape.values[tape.at(t)][name], err_msg=f"{name}@{t}")
    np.testing.assert_array_equal(recording.channel("flowRate"), np.stack([v["flowRate"] for v in tape.values]))
    # the one-layer view for Sdf readers holds every sample
    merged = recording.layer
    p = Sdf.Path("/Testbed/TwinState").AppendProperty(f"{COLUMN_NS}:flowRate")
    assert merged.ListTimeSamplesForPath(p) == [float(t) for t in range(1, 41)]
    np.testing.assert_array_equal(np.asarray(merged.QueryTimeSample(p, 9.0)), recording.channel("flowRate")[8])
    np.testing.assert_array_equal(np.asarray(recording.query(p, 9.0)), recording.channel("flowRate")[8])


def test_reproducible_chunked_recordings_are_byte_identical_file_by_file(pump_scene, tmp_path):
    def run(d):
        d.mkdir()
        for f in pump_scene.parent.iterdir():
            if f.is_file() and f.name.startswith("pump_testbed"):
                shutil.copy(f, d / f.name)
        twin = twinstage.open(d / "pump_testbed.usda", rate=20.0, seed=5)
        twin.add_sink(Recorder(d / "rec.usdc", reproducible=True, save_every_s=0.5, chunked=True))  # a chunk per 10 ticks of sim time
        _scripted_run(twin, 45)
        twin.close()
        files = sorted(p for p in [d / "rec.usdc", *chunk_dir(d / "rec.usdc").iterdir()])
        return {p.name: p.read_bytes() for p in files}

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert sorted(a) == ["000000.usdc", "000001.usdc", "000002.usdc", "000003.usdc", "000004.usdc", "manifest.usdc", "rec.usdc"]
    assert a == b


def test_a_missing_or_inconsistent_chunk_is_named(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene)
    twin.add_sink(Recorder(out, chunk_ticks=4, chunked=True))
    twin.run(ticks=10)
    twin.close()
    (chunk_dir(out) / "000001.usdc").unlink()
    with pytest.raises(StageError, match="000001.usdc"):
        twinstage.Recording(out)
    (chunk_dir(out) / "000001.usdc").write_bytes(b"PXR-USDC" + bytes(range(200)))
    with pytest.raises(StageError, match="000001.usdc"):
        twinstage.Recording(out)


def test_rerecording_removes_the_earlier_chunks(pump_scene, tmp_path):
    out = tmp_path / "rec.usdc"
    for ticks in (30, 5):
        twin = twinstage.open(pump_scene)
        twin.add_sink(Recorder(out, chunk_ticks=4, chunked=True))
        twin.run(ticks=ticks)
        twin.close()
    assert sorted(p.name for p in chunk_dir(out).iterdir()) == ["000000.usdc", "000001.usdc", "manifest.usdc"]
    assert twinstage.Recording(out).ticks.tolist() == [1, 2, 3, 4, 5]


def test_chunk_ticks_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.usdc", chunk_ticks=0)


def test_a_chunk_whose_background_write_failed_is_written_again_and_nothing_is_lost(pump_scene, tmp_path, monkeypatch):
    from twinstage.usd import _recorder

    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene)
    rec = twin.add_sink(Recorder(out, save_every_s=3600.0, chunk_ticks=4, chunked=True))
    real = _recorder._export_atomically
    failing = {"on": True, "failed": 0}

    def export(layer, target, tmp=None):
        if failing["on"] and target.parent == chunk_dir(out) and target.name != "manifest.usdc":
            failing["failed"] += 1
            raise StageError(f"{target}: cannot write recording (disk full)")
        real(layer, target, tmp)

    monkeypatch.setattr(_recorder, "_export_atomically", export)
    twin.run(ticks=10)  # the background write of ticks 1-4 fails; the saves after it retry and fail too
    assert failing["failed"] >= 2
    assert any("Recorder" in e for e in twin.errors), list(twin.errors)
    assert twin.tick_count == 10
    assert not (chunk_dir(out) / "000000.usdc").exists()
    shutil.copy(out, tmp_path / "crash_copy.usdc")  # what a crash would leave (the in-process layer is ahead of the file)
    assert twinstage.Recording(tmp_path / "crash_copy.usdc").ticks.tolist() == []  # the root on disk names no missing chunk
    failing["on"] = False
    twin.run(ticks=6)
    twin.close()
    assert rec._job is None and rec._retry is None
    assert twinstage.Recording(out).ticks.tolist() == list(range(1, 17))


def test_chunks_copied_into_pooled_blocks_read_back_exactly_and_the_blocks_are_reused(pump_scene, tmp_path):
    """The tick thread copies into 32-tick blocks; 70-tick chunks span three of them per channel,
    and once a chunk is written its blocks serve the next ones (two chunks' worth at most)."""
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene, rate=10.0)
    rec = twin.add_sink(Recorder(out, save_every_s=3600.0, chunk_ticks=70, chunked=True))
    tape = Tape(twin)
    for k in range(5):  # values move in bursts: channels change on some ticks and hold on others
        twin.set("/Testbed/Valve1", opening=0.2 + 0.1 * k)
        twin.run(ticks=45)
    twin.close()
    assert rec._pool.block_ticks == 32
    assert rec._pool.allocated <= 2 * 3 * len(twin.table.channels)
    recording = twinstage.Recording(out)
    assert [len(t) for _, t in recording.chunks] == [70, 70, 70, 15]
    for name in twin.table.channels:
        np.testing.assert_array_equal(recording.channel(name), np.stack([v[name] for v in tape.values]), err_msg=name)
        np.testing.assert_array_equal(recording.channel(name, quality=True), np.stack([q[name] for q in tape.quality]), err_msg=name)
    np.testing.assert_array_equal(recording.sim_times(), tape.sim_times)


def test_a_live_chunked_recording_read_in_process_names_only_written_chunks(pump_scene, tmp_path):
    """While a chunk is still being written in the background, the root this process finds
    (``Sdf.Layer.FindOrOpen``) names only chunks already on disk."""
    out = tmp_path / "rec.usdc"
    twin = twinstage.open(pump_scene)
    rec = twin.record(out, save_every_s=0.0, chunked=True)  # a chunk, written in the background, every tick
    for tick in range(1, 31):
        twin.tick()
        live = twinstage.Recording(out)
        n = len(live.ticks)
        assert tick - 2 <= n <= tick and live.ticks.tolist() == list(range(1, n + 1))
    rec.save()
    assert twinstage.Recording(out).ticks.tolist() == list(range(1, 31))
    twin.close()


def test_default_chunks_are_capped_in_bytes(pump_scene, tmp_path, monkeypatch):
    """By default a chunk holds ``save_every_s`` of sim time, or fewer ticks when that would pass
    ``CHUNK_BYTES`` (what close() has left to write, and a kill can lose), but a quarter second at least."""
    twin = twinstage.open(pump_scene, rate=10.0)
    table = twin.table
    tick_bytes = sum(table[n].nbytes + table.quality(n).nbytes for n in table.channels) + 16
    monkeypatch.setattr(Recorder, "CHUNK_BYTES", 5 * tick_bytes)
    rec = twin.record(tmp_path / "rec.usdc", save_every_s=2.0, reproducible=True)
    assert rec.chunk_ticks == 5  # not 20 (2 s at 10 Hz)
    twin.run(ticks=12)
    twin.close()
    assert [len(t) for _, t in twinstage.Recording(tmp_path / "rec.usdc").chunks] == [5, 5, 2]
    fast = twinstage.open(pump_scene, rate=100.0)
    assert fast.record(tmp_path / "fast.usdc", save_every_s=2.0).chunk_ticks == 25  # a quarter second, not 5
    assert fast.record(tmp_path / "one.usdc", save_every_s=2.0, chunked=False).chunk_ticks == 200  # one file: not capped
    fast.close()
