"""Comparing runs: metric table, per-attribute diff, a difference recording the viewer can colour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twinstage import Recording
from twinstage.scenarios import ScenarioError, compare_runs
from twinstage.scenarios._sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "scenes/scenarios/valve2_throttle.toml"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "sweep"
    res = run_sweep(SPEC, out, grid={"events.throttle.value": [0.3, 0.6]}, workers=0, progress=False)
    rows = sorted(res.rows, key=lambda r: r["index"])
    return out, [out / "runs" / r["run_id"] for r in rows]


def test_compare_two_runs(sweep, tmp_path):
    out, (a, b) = sweep
    cmp = compare_runs(a, b, diff_out=tmp_path / "diff.usdc")
    assert cmp.ticks == 3000
    by = {f"{r['prim']}.{r['attribute']}": r for r in cmp.attributes}
    assert by["/Testbed/Valve2.opening"]["max_abs"] == pytest.approx(0.3)
    assert by["/Testbed/Pump.pressure"]["final_diff"] < 0  # a wider valve: lower pressure after the pump
    assert by["/Testbed/Valve1.opening"]["max_abs"] == 0.0 and by["/Testbed/Pump.ambientTemperature"]["max_abs"] == 0.0
    assert any(k == "/Testbed/Pump.pressure:final" for k, _, _ in cmp.metrics)
    text = cmp.report()
    assert "Valve2.opening" in text and "difference recording" in text
    # the difference recording reads like any run of the scene: B − A per value and tick
    ra, rb, rd = Recording(a / "recording.usdc"), Recording(b / "recording.usdc"), Recording(tmp_path / "diff.usdc")
    assert rd.prims == ra.prims and len(rd.times) == 3000
    expect = rb.series("/Testbed/Pump", "pressure")[-1] - ra.series("/Testbed/Pump", "pressure")[-1]
    assert rd.series("/Testbed/Pump", "pressure")[-1] == pytest.approx(expect)
    assert np.all(rd.series("/Testbed/Pump", "pressure")[:1199] == 0.0)  # identical before the throttle


def test_compare_identical_and_mismatched(sweep, tmp_path):
    out, (a, _) = sweep
    same = compare_runs(a, a)
    assert not same.changed()
    other = tmp_path / "factory.usdc"
    from twinstage.scenarios import run_scenario

    run_scenario(ROOT / "scenes/scenarios/factory_overheat.toml", record=other, cache_dir=tmp_path)
    with pytest.raises(ScenarioError, match="different scenes"):
        compare_runs(a, other)
    with pytest.raises(ScenarioError, match="no such run"):
        compare_runs(a, tmp_path / "nope")


def test_cli_compare(sweep, tmp_path):
    out, (a, b) = sweep
    p = subprocess.run([sys.executable, "-m", "twinstage", "compare", str(a), str(b), "--json", "--diff", str(tmp_path / "d.usdc")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["ticks"] == 3000 and Path(data["diff_recording"]).is_file()
    p = subprocess.run([sys.executable, "-m", "twinstage", "compare", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "2 runs, 0 failed" in p.stdout and "p:events.throttle.value" in p.stdout
    p = subprocess.run([sys.executable, "-m", "twinstage", "compare", str(out), "--against", a.name[:6]], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "/Testbed/Pump.flowRate" in lines[1] and len(lines) == 4  # title, header, one row per run
    row_a = next(x for x in lines[2:] if x.strip().startswith(a.name))
    assert set(row_a.split()[2:]) == {"0"}  # the reference against itself: no difference
    p = subprocess.run([sys.executable, "-m", "twinstage", "compare", str(out), "--against", "zzz"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "matches 0 finished runs" in p.stderr
