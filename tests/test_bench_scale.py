"""``bench/scale.py``: its memory guard stops a phase and says which one, and a small run serves a client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _json_tail(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def test_guard_stops_the_running_phase_and_reports_it():
    code = ("import time\nfrom _scale_guard import Guard\nwith Guard(0.0, interval=0.05) as g:\n"
            "    g.result['open_s'] = 1.5\n    g.phase('open')\n    time.sleep(0.2)\n    g.floor_mb = 1e12\n    g.phase('ticks')\n"
            "    time.sleep(30)\nprint('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr  # killed by the watcher process
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["broke"] == "memory during ticks" and out["broke_phase"] == "ticks"
    assert out["open_s"] == 1.5 and out["broke_rss_mb"] > 0 and out["broke_mem_available_mb"] >= 0
    assert set(out["phase_peak_rss_mb"]) == {"start", "open", "ticks"}
    assert "not reached" not in r.stdout


def test_scale_reports_a_break_instead_of_running_on():
    r = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--assets", "37", "--min-free-gb", "1000000", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fig = _json_tail(r.stdout)["figures"]
    assert fig["scale_37_generate_broke"] == "memory during generate"
    assert not any(k.startswith("scale_37_open") for k in fig)  # nothing ran after the break
    assert "memory during generate" in r.stderr


def test_scale_serves_one_client():
    r = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--assets", "1000", "--ticks", "5", "--messages", "5", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    fig = _json_tail(r.stdout)["figures"]
    assert "scale_1k_broke" not in fig and "scale_1k_serve_error" not in fig
    assert fig["scale_1k_serve_msgs"] == 5 and fig["scale_1k_serve_hello_bytes"] > 0 and fig["scale_1k_serve_glb_bytes"] > 0
    assert fig["scale_1k_assets"] == 1000 and fig["scale_1k_recording_mb"] > 0
    assert set(fig["scale_1k_phase_peak_rss_mb"]) >= {"open", "ticks", "serve: start (hello)", "serve: client", "close", "serve: GLB"}
