"""The ``twinstage`` console entry, run for real in subprocesses; and cheap imports."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import twinstage

#: the CLI as the interpreter running the tests runs it: never a ``twinstage`` that happens to be on PATH
ENTRY = [sys.executable, "-m", "twinstage"]


def cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def test_python_m_twinstage_runs_the_cli():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == twinstage.__version__


def test_the_console_script_is_installed_beside_the_interpreter():
    """pip puts ``twinstage`` in the venv's bin/ (not necessarily on PATH): run it from there."""
    exe = Path(sys.executable).parent / "twinstage"
    assert exe.is_file(), f"{exe} missing: pip install -e '.[dev]' installs the console script"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == twinstage.__version__, proc.stderr


def test_no_command_prints_help():
    proc = cli()
    assert proc.returncode == 2 and "usage" in proc.stdout.lower()


# -- info -------------------------------------------------------------------------------------------


def test_info_on_the_pump_scene(pump_scene):
    proc = cli("info", pump_scene)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "defaultPrim /Testbed" in out and "upAxis Z" in out
    assert "twin prims (12)" in out
    for line in ("/Testbed/Pump  kind=pump model=pump_loop", "/Testbed/Valve1  kind=valve", "/Testbed/Sensors/FlowMeter  kind=sensor model=sensor"):
        assert line in out
    # attributes with their units
    assert "twin:flowRate = 125.2 L/min" in out
    assert "twin:pressure = 0.111 bar" in out
    # units as a person writes them: °C not degC, g not g0, nothing after a dimensionless value
    assert "twin:motorTemperature = 89.5 °C" in out
    assert "twin:vibration1 = 0.213 g  [" in out
    assert "twin:opening = 1.0  [float, input" in out
    assert "degC" not in out and "g0" not in out


def test_info_json_parses(pump_scene):
    proc = cli("info", pump_scene, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["defaultPrim"] == "/Testbed" and info["metersPerUnit"] == 1.0
    twins = {t["path"]: t for t in info["twinPrims"]}
    assert len(twins) == 12
    pump = {a["name"]: a for a in twins["/Testbed/Pump"]["attributes"]}
    assert pump["flowRate"]["unit"] == "L/min" and pump["flowRate"]["type"] == "float"
    assert pump["motorSpeed"]["role"] == "input"
    assert twins["/Testbed/Pump"]["model"] == "pump_loop"


def test_info_on_a_usd_wg_file_lists_candidate_assets(shared_data):
    teapot = shared_data / "usd-wg" / "full_assets" / "Teapot" / "Teapot.usd"
    proc = cli("info", teapot)
    assert proc.returncode == 0, proc.stderr
    assert "no twin prims; candidate assets" in proc.stdout
    assert "/Teapot <Xform> component" in proc.stdout
    proc = cli("info", teapot, "--json", "--load", "none")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["twinPrims"] == [] and [c["path"] for c in info["candidateAssets"]] == ["/Teapot"]


def test_info_on_a_missing_file(tmp_path):
    proc = cli("info", tmp_path / "nope.usda")
    assert proc.returncode != 0
    assert "nope.usda" in proc.stderr and "no such file" in proc.stderr
    no_traceback(proc)


# -- validate -------------------------------------------------------------------------------------------


def test_validate_the_pump_scene(pump_scene):
    proc = cli("validate", pump_scene)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors, " in proc.stdout and "1 warnings" not in proc.stdout and "1 errors" not in proc.stdout


def test_validate_a_broken_file(tmp_path):
    broken = tmp_path / "broken.usda"
    broken.write_text('#usda 1.0\n(\n    defaultPrim = "W"\n)\n\ndef Xform "W" (\n    kind = \n')
    proc = cli("validate", broken)
    assert proc.returncode == 1
    assert "broken.usda" in proc.stdout and "error" in proc.stdout.lower()
    no_traceback(proc)
    proc = cli("validate", broken, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["errors"] >= 1 and report["findings"][0]["severity"] == "error"


def test_validate_flags_a_twin_value_outside_its_limits(pump_scene):
    text = pump_scene.read_text()
    marker = "double twin:opening = 1"
    assert marker in text
    pump_scene.write_text(text.replace(marker, "double twin:opening = 7", 1))
    proc = cli("validate", pump_scene, "--no-usd-validators")
    assert proc.returncode == 1
    assert "TwinLimits" in proc.stdout and "twin:opening" in proc.stdout


# -- run ------------------------------------------------------------------------------------------------


def test_run_records(pump_scene, tmp_path):
    rec = tmp_path / "out.usdc"
    proc = cli("run", pump_scene, "--ticks", 20, "--record", rec, "--set", "/Testbed/Valve1.opening=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "ran 20 ticks" in proc.stdout and "0 errors" in proc.stdout
    r = twinstage.Recording(rec)
    assert r.ticks.tolist() == list(range(1, 21))
    np.testing.assert_array_equal(r.series("/Testbed/Valve1", "opening"), np.full(20, 0.5))
    assert r.series("/Testbed/Pump", "flowRate")[-1] < 125.0
    # then the recording as per-prim animation
    anim = tmp_path / "anim.usdc"
    proc = cli("export-animation", rec, anim)
    assert proc.returncode == 0, proc.stderr
    from pxr import Usd

    stage = Usd.Stage.Open(str(anim))
    attr = stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:flowRate")
    assert attr.GetNumTimeSamples() == 20
    assert attr.Get(20) == pytest.approx(r.series("/Testbed/Pump", "flowRate")[-1])


@pytest.mark.parametrize("value, expect", [("77 degF", 25.0), ("77degF", 25.0), ("298.15 K", 25.0), ("25", 25.0), ("30 °C", 30.0)])
def test_run_set_takes_a_value_with_a_unit(pump_scene, tmp_path, value, expect):
    """``--set`` converts units like ``twin.set(path, name=(77.0, "degF"))`` (the declared unit is °C)."""
    rec = tmp_path / "out.usdc"
    proc = cli("run", pump_scene, "--ticks", 2, "--record", rec, "--set", f"/Testbed/Pump.ambientTemperature={value}")
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 ticks" in proc.stdout and "0 errors" in proc.stdout
    assert twinstage.Recording(rec).series("/Testbed/Pump", "ambientTemperature")[-1] == pytest.approx(expect)


@pytest.mark.parametrize(
    "value, expect",
    [
        ("77 blorps", ["/Testbed/Pump", "ambientTemperature", "blorps", "unknown unit"]),
        ("77 bar", ["/Testbed/Pump", "ambientTemperature", "'bar'", "cannot convert", "degC"]),
        ("500 degF", ["/Testbed/Pump", "ambientTemperature", "outside its limits [-40.0, 60.0] °C"]),
    ],
)
def test_run_set_with_a_bad_unit_is_a_clear_error(pump_scene, value, expect):
    proc = cli("run", pump_scene, "--ticks", 1, "--set", f"/Testbed/Pump.ambientTemperature={value}")
    assert proc.returncode == 2
    for word in expect:
        assert word in proc.stderr, (word, proc.stderr)
    no_traceback(proc)


@pytest.mark.parametrize(
    "unit, shown",
    [("1", ""), ("dimensionless", ""), ("", ""), ("g0", "g"), ("degC", "°C"), ("degF", "°F"), ("L/min", "L/min"), ("bar", "bar"),
     ("m/s**2", "m/s²"), ("m/s^2", "m/s²"), ("kg*m**2", "kg·m²"), ("m**-1", "m⁻¹"), ("percent", "%"), ("K/W", "K/W"), ("1/s", "1/s")],
)
def test_units_are_shown_as_a_person_writes_them(unit, shown):
    from twinstage.units import format_unit, with_unit

    assert format_unit(unit) == shown
    assert with_unit(4.0, unit) == (f"4.0 {shown}" if shown else "4.0")


def test_a_dimensionless_limit_has_no_bare_unit(pump_scene):
    proc = cli("run", pump_scene, "--ticks", 1, "--set", "/Testbed/Valve1.opening=4")
    assert proc.returncode == 2
    assert proc.stderr.rstrip().endswith("4.0 is outside its limits [0.0, 1.0]"), proc.stderr


def test_run_duration_and_rate(pump_scene):
    proc = cli("run", pump_scene, "--duration", "1.5", "--rate", "4")
    assert proc.returncode == 0, proc.stderr
    assert "ran 6 ticks (1.500 s sim)" in proc.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--set", "/Testbed/Valve1.opening=2"], ["/Testbed/Valve1", "opening", "limits"]),
        (["--set", "/Testbed/Valve1.opening=abc"], ["/Testbed/Valve1", "opening"]),
        (["--set", "/Testbed/Valve1.opening=NaN"], ["/Testbed/Valve1", "opening", "finite"]),
        (["--set", "/Testbed/Nope.opening=0.2"], ["/Testbed/Nope"]),
        (["--set", "/Testbed/Valve1.flowRate=0.2"], ["/Testbed/Valve1", "flowRate"]),
        (["--set", "Valve1=0.5"], ["Valve1=0.5", "/Prim/Path.attribute=value"]),
        (["--ticks", "-3"], ["--ticks", "-3"]),
        (["--rate", "0"], ["--rate"]),
        (["--record", "out.txt", "--ticks", "1"], ["out.txt", ".usdc"]),
    ],
)
def test_run_rejects_bad_arguments_with_a_message(pump_scene, args, expect):
    proc = cli("run", pump_scene, *args, cwd=pump_scene.parent)
    assert proc.returncode != 0
    for word in expect:
        assert word in proc.stderr, (word, proc.stderr)
    no_traceback(proc)


def test_run_on_a_missing_file(tmp_path):
    proc = cli("run", tmp_path / "missing.usda", "--ticks", 3)
    assert proc.returncode != 0
    assert "missing.usda" in proc.stderr and "no such file" in proc.stderr
    no_traceback(proc)


def test_run_on_a_file_without_twin_prims(shared_data):
    proc = cli("run", shared_data / "usd-wg" / "full_assets" / "Teapot" / "Teapot.usd", "--ticks", 3)
    assert proc.returncode != 0
    assert "no twin prims" in proc.stderr
    no_traceback(proc)


# -- scene, demo ---------------------------------------------------------------------------------------


def test_scene_generate(tmp_path):
    out = tmp_path / "sub" / "factory.usdc"
    proc = cli("scene", "generate", "--assets", 100, "--items", 20, "-o", out)
    assert proc.returncode == 0, proc.stderr
    with twinstage.open(out) as twin:
        prims = twin.table.prims
        assert sum("/Machines/" in p for p in prims) == 100
        assert sum("/Conveyors/" in p for p in prims) == 20
        assert set(twin.models) == {"thermal", "path_motion"}
    proc = cli("scene", "generate", "--assets", -1, "-o", tmp_path / "x.usdc")
    assert proc.returncode != 0 and "--assets" in proc.stderr
    no_traceback(proc)


def test_scene_pump(tmp_path):
    out = tmp_path / "pump.usda"
    proc = cli("scene", "pump", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and (tmp_path / "pump_parts.usdc").is_file()
    assert "./pump_parts.usdc" in out.read_text()
    with twinstage.open(out) as twin:
        assert twin.get("/Testbed/Pump", "flowRate") == pytest.approx(125.2)


def test_demo(tmp_path):
    out = tmp_path / "demo"
    proc = cli("demo", "--out", out, "--ticks", 100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scene, rec, anim = out / "pump_testbed.usda", out / "pump_testbed.rec.usdc", out / "pump_testbed.anim.usdc"
    for f in (scene, rec, anim):
        assert f.is_file() and f.stat().st_size > 0, f
    r = twinstage.Recording(rec)
    assert r.ticks.tolist() == list(range(1, 101))
    assert "validate pump_testbed.rec.usdc: 0 errors" in proc.stdout
    from pxr import Usd

    stage = Usd.Stage.Open(str(anim))
    assert stage.GetPrimAtPath("/Testbed/Pump").GetAttribute("twin:flowRate").GetNumTimeSamples() == 100


def test_demo_serve_runs_until_interrupted_by_default():
    """``make demo-live`` once quit after 1200 ticks (2 minutes): served, the demo has no tick limit unless given one."""
    from twinstage.cli import build_parser

    assert build_parser().parse_args(["demo", "--serve", "8765"]).ticks is None  # cmd_demo: None + --serve → until Ctrl-C
    assert build_parser().parse_args(["demo", "--serve", "8765", "--ticks", "60"]).ticks == 60


def test_serve_without_tokens_generates_them_and_prints_what_works(pump_scene, tmp_path):
    """``twinstage serve SCENE``: generated operator + viewer tokens, a Python snippet that runs as printed, until Ctrl-C."""
    import queue
    import re
    import signal
    import threading

    proc = subprocess.Popen([*ENTRY, "serve", str(pump_scene), "--port", "0", "--rate", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen = ""
    try:
        while "running until Ctrl-C" not in seen:
            seen += lines.get(timeout=120)
        assert "tokens: operator (operator), viewer (viewer); without a token: refused" in seen, seen
        snippet = re.search(r"^import asyncio\n.*?^asyncio\.run\(main\(\)\)$", seen, re.M | re.S)
        assert snippet, seen
        run = subprocess.run([sys.executable, "-c", snippet[0]], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        tick, value, n, word = run.stdout.split()
        import twinstage

        with twinstage.open(pump_scene, headless=True) as twin:  # every value under /Testbed: the snippet's subscription
            expected = sum(1 for e in twin.table.entry_table() if e["prim"].startswith("/Testbed/"))
        assert int(tick) > 0 and float(value) == 0.8 and int(n) == expected and word == "values", run.stdout  # the Tank's level, set to itself
        assert proc.poll() is None  # still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    time.sleep(0.2)
    rest = "".join(lines.queue)
    assert "stopped after" in rest and "Traceback" not in seen + rest


def test_demo_live_in_a_window_stops_on_ctrl_c(tmp_path):
    """``make demo-live`` where a display exists: serve + window; Ctrl-C (which the window toolkit turns into closing
    the window) ends the run, and the demo finishes its files and exits 0."""
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run missing (Debian package xvfb, see system-packages.txt)")
    log = tmp_path / "log"
    script = (f"{shlex.quote(sys.executable)} -u -m twinstage demo --out {shlex.quote(str(tmp_path / 'demo'))} --serve 0 --view > {log} 2>&1 &\n"
              "pid=$!\n"
              f"for i in $(seq 120); do grep -q 'running until Ctrl-C' {log} && break; sleep 1; done\n"
              "sleep 3; kill -INT $pid\n"
              "for i in $(seq 60); do kill -0 $pid 2>/dev/null || break; sleep 1; done\n"
              "kill -0 $pid 2>/dev/null && { echo still-running; kill -9 $pid; }\n"
              "wait $pid; echo rc=$?\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYGLFW_LIBRARY_VARIANT"] = "x11"
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "sh", "-c", script], capture_output=True, text=True, timeout=240, env=env)
    out = log.read_text() if log.exists() else ""
    assert "rc=0" in r.stdout and "still-running" not in r.stdout, r.stdout + r.stderr + out
    assert "screenshot of the final state" not in out  # it was a window
    assert "stopped after" in out and "validate pump_testbed.rec.usdc: 0 errors" in out, out


def test_serve_explains_the_token_rules(pump_scene):
    proc = cli("serve", pump_scene, "--port", 0, "--token", "me:operator:SECRET", timeout=120)
    assert proc.returncode == 2
    for words in ("--token", "at least 8 characters", "NAME:ROLE:SECRET", "viewer, operator, admin or ingest", "generated"):
        assert words in proc.stderr, (words, proc.stderr)
    no_traceback(proc)


# -- cheap import -------------------------------------------------------------------------------------------


def test_import_twinstage_is_cheap():
    code = (
        "import sys, threading\n"
        "import twinstage\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pxr', 'wgpu', 'websockets', 'pygfx', 'pint', 'dask', 'matplotlib'))\n"
        "print(repr((heavy, threading.active_count())))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    heavy, threads = eval(proc.stdout.strip())
    assert heavy == []
    assert threads == 1


def test_importing_the_cli_is_cheap_too():
    code = "import sys, threading\nimport twinstage.cli\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('pxr', 'wgpu', 'websockets')), threading.active_count())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "1"]
