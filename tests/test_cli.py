"""The ``twinstage`` console entry, run for real in subprocesses; and cheap imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import twinstage

_EXE = shutil.which("twinstage")
ENTRY = [_EXE] if _EXE else [sys.executable, "-c", "from twinstage.cli import main; raise SystemExit(main())"]


def cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def test_entry_point_is_installed():
    assert _EXE is not None, "the twinstage console script is not on PATH (pip install -e .)"
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == twinstage.__version__


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
    assert "twin:motorTemperature = 89.5 degC" in out
    assert "twin:vibration1 = 0.213 g0" in out


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
    assert "0 errors" in proc.stdout


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
    assert "ran 20 ticks" in proc.stdout and "errors 0" in proc.stdout
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
