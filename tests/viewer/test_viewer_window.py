"""A real window under Xvfb (glfw), driven by xdotool pointer events: the camera moves, a click selects."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _scenes import boxes

pytestmark = pytest.mark.usefixtures("gpu")


def test_window_under_xvfb_orbits_and_selects(tmp_path):
    for tool in ("xvfb-run", "xdotool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing (Debian packages xvfb and xdotool, see system-packages.txt)")
    scene = tmp_path / "boxes.usda"
    boxes(scene, values=(10.0, 50.0, 90.0))
    app = Path(__file__).with_name("_window_app.py")
    env = {**os.environ, "PYGLFW_LIBRARY_VARIANT": "x11"}
    env.pop("DISPLAY", None)
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 800x600x24", sys.executable, str(app), str(scene)],
                       capture_output=True, text=True, timeout=150, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(lines[-1])
    assert "error" not in res, res
    assert res["window"] and res["frames"] >= 2
    assert res["camera_moved"] > 0.5, res  # the drag reached the canvas and orbited the camera
    assert res["selected"] == "/World/Box1", res  # the click picked the asset under the pointer


def test_demo_view_opens_a_window_where_a_display_exists(tmp_path):
    """``twinstage demo --view`` under Xvfb: the twin runs in a window (paced 10x real time); ``q`` closes it."""
    for tool in ("xvfb-run", "xdotool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing")
    out = tmp_path / "demo"
    script = (f'(timeout 60 xdotool search --sync --name "twinstage demo" >/dev/null; sleep 3; '
              f'xdotool search --name "twinstage demo" key q) & '
              f'{shlex.quote(sys.executable)} -m twinstage demo --out {shlex.quote(str(out))} --ticks 600 --view')
    env = {**os.environ, "PYGLFW_LIBRARY_VARIANT": "x11"}
    env.pop("DISPLAY", None)
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "sh", "-c", script], capture_output=True, text=True,
                       timeout=150, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "screenshot of the final state" not in r.stdout  # a window was shown, not a screenshot
    import twinstage

    assert twinstage.Recording(out / "pump_testbed.rec.usdc").ticks[-1] == 600  # closing the window let the run finish
