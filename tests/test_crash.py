"""Crash safety: SIGKILL a recording run at random points; the file must always be a usable recording.

A child process opens the pump scene, records with ``save_every_s=0.05`` and ticks as
fast as it can; kills alternate between a chunked ``.usdc`` recording and a one-file
``.usda`` one. It is killed with SIGKILL after a random delay, 15 times (seeded). After
each kill the recording on disk (a root naming its chunks through value clips) must
open with Sdf and Usd, hold a contiguous run of ticks starting at the first, with
every chunk whole (each column holds exactly the chunk's ticks), have
``endTimeCode`` equal to its last tick, and read with :class:`twinstage.Recording`. The next child records to the same path, so
stale temp files an interrupted save left behind must be gone once it has started.

To keep the loop short the next child is started (imports, opens the scene) while the
current one runs, and waits for a ``go`` line before it starts recording.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pxr import Sdf, Usd

import twinstage
from twinstage.usd._recorder import chunk_dir
from twinstage.usd._writer import COLUMN_NS

KILLS = 15
SEED = 20240611
DELAY = (0.2, 1.5)
TOTAL_TIME_LIMIT_S = 150.0

CHILD = r"""
import sys
import twinstage
from twinstage.usd._recorder import Recorder
scene, out = sys.argv[1], sys.argv[2]
twin = twinstage.open(scene, rate=100.0, write_budget_s=None)
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
twin.add_sink(Recorder(out, save_every_s=0.05, chunked=out.endswith(".usdc")))
twin.tick()
print("started", flush=True)
k = 0
while True:
    k += 1
    if k % 40 == 0:
        twin.set("/Testbed/Valve1", opening=0.2 if (k // 40) % 2 else 0.9)
    twin.tick()
"""


def _spawn(scene: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(scene), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=scene.parent,
    )


def _wait_line(proc: subprocess.Popen, expected: str, timeout: float, log: Path) -> None:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if line != expected:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"child did not say {expected!r} within {timeout}s (got {line!r}); stderr:\n{log.read_text()[-3000:]}")


def _temp_files(out: Path) -> list[Path]:
    """Temp files of interrupted saves: the recorder's ``.<name>.tmp-*`` (root and chunks) and Layer.Save's ``<name|stem>.XXXXXX``."""
    pat = re.compile(rf"(?:{re.escape(out.name)}|{re.escape(out.stem)})\.[A-Za-z0-9_]{{6}}$")
    found = [p for p in out.parent.iterdir() if p.is_file() and (p.name.startswith(f".{out.name}.tmp-") or pat.fullmatch(p.name))]
    chunks = chunk_dir(out)
    if chunks.is_dir():  # a chunk's temp file: .<NNNNNN>.usdc.tmp-XXXXXX.usdc
        found += [p for p in chunks.iterdir() if p.name.startswith(".") and ".tmp-" in p.name]
    return found


def _check_recording(out: Path, i: int) -> int:
    """Check what a kill left at ``out`` (root + chunks); return the number of recorded ticks."""
    assert out.exists(), f"kill {i}: the recording file is gone"
    copy = out.with_name(f"check{i}{out.suffix}")  # same folder: the sublayer and the chunks still resolve
    shutil.copy(out, copy)
    try:
        layer = Sdf.Layer.FindOrOpen(str(copy))
        assert layer is not None, f"kill {i}: Sdf cannot open the recording"
        state = Sdf.Path("/Testbed/TwinState")
        rec = twinstage.Recording(copy)
        n = len(rec.ticks)
        assert rec.ticks.tolist() == list(range(1, n + 1)), f"kill {i}: ticks not contiguous from 1: {rec.ticks[:5]}...{rec.ticks[-5:]}"
        tick_path = state.AppendProperty(f"{COLUMN_NS}:tick")
        for chunk, times in rec.chunks:  # every chunk file is whole: each column has exactly its ticks
            if not len(times):
                continue
            spec = chunk.GetPrimAtPath(state)
            sampled = [a for a in spec.attributes if chunk.GetNumTimeSamplesForPath(a.path)]
            assert len(sampled) > 20, f"kill {i}: {chunk.identifier} holds {len(sampled)} columns"
            on_file = chunk.ListTimeSamplesForPath(tick_path)
            assert on_file == times.tolist(), f"kill {i}: {chunk.identifier} holds ticks the root does not name"
            for a in sampled:
                assert chunk.ListTimeSamplesForPath(a.path) == on_file, f"kill {i}: {a.name} has other samples than twinstate:tick"
        prov = layer.customLayerData["twinstage"]
        if n:
            assert layer.startTimeCode == 1.0
            assert layer.endTimeCode == float(n), f"kill {i}: endTimeCode {layer.endTimeCode} but last tick {n}"
            assert json.loads(prov["recordedTicks"]) == [1, n]
        stage = Usd.Stage.Open(str(copy))
        assert stage is not None and stage.GetPrimAtPath("/Testbed/Pump"), f"kill {i}: does not compose with the scene"
        if n:
            assert stage.GetEndTimeCode() == float(n)
            col = stage.GetPrimAtPath(state).GetAttribute(f"{COLUMN_NS}:tick")
            assert col.GetTimeSamples() == [float(t) for t in range(1, n + 1)], f"kill {i}: the composed (clipped) samples differ"
            for t in list(range(1, n + 1, max(1, n // 10))) + [n]:
                assert col.Get(float(t)) == t
            flow = rec.channel("flowRate")
            assert flow.shape == (n, 2) and np.isfinite(flow).all()
            assert rec.time_range == (1.0, float(n))
        del rec, stage, layer
        return n
    finally:
        copy.unlink()


@pytest.mark.slow
def test_sigkill_recording_at_random_points(pump_scene, tmp_path):
    rng = random.Random(SEED)
    t_end = time.monotonic() + TOTAL_TIME_LIMIT_S
    outs = [pump_scene.with_name("crash.usdc"), pump_scene.with_name("crash.usda")]
    ticks: list[int] = []
    leftovers = 0
    children: list[subprocess.Popen] = []
    logs = [tmp_path / f"child{i}.log" for i in range(KILLS)]
    try:
        nxt = _spawn(pump_scene, outs[0], logs[0])
        children.append(nxt)
        for i in range(KILLS):
            assert time.monotonic() < t_end, f"crash loop ran out of time after {i} kills"
            cur, out = nxt, outs[i % 2]
            _wait_line(cur, "ready", 60, logs[i])
            stale = _temp_files(out)
            cur.stdin.write(b"go\n")
            cur.stdin.flush()
            _wait_line(cur, "started", 30, logs[i])
            for p in stale:
                assert not p.exists(), f"stale temp file {p.name} not removed when recording started"
            if i + 1 < KILLS:
                nxt = _spawn(pump_scene, outs[(i + 1) % 2], logs[i + 1])
                children.append(nxt)
            time.sleep(rng.uniform(*DELAY))
            assert cur.poll() is None, f"kill {i}: child died by itself; stderr:\n{logs[i].read_text()[-3000:]}"
            os.kill(cur.pid, signal.SIGKILL)
            assert cur.wait(10) == -signal.SIGKILL
            ticks.append(_check_recording(out, i))
            leftovers += len(_temp_files(out))
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(10)
    assert len(ticks) == KILLS
    assert sum(n > 0 for n in ticks) >= KILLS - 2, f"too many kills left an empty recording: {ticks}"
    assert max(ticks) > 20, f"the child barely ticked: {ticks}"
    print(f"ticks recorded at each kill: {ticks}; temp files left by interrupted saves: {leftovers}")
