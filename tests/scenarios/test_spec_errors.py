"""Invalid specs fail before anything runs, naming the spec file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstage.scenarios import ScenarioError, load_spec, parse_spec, run_scenario
from twinstage.scenarios._sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]
SCENE = str(ROOT / "scenes/pump_testbed.usda")


def _spec(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(f'name = "bad"\nscene = "{SCENE}"\nduration = 10.0\n' + body)
    return p


CASES = [
    ('[[events]]\nat = 1.0\nset = "Valve9.opening"\nvalue = 0.3\n', "events[0].set", "unknown prim 'Valve9'"),
    ('[[events]]\nat = 1.0\nset = "Valve2.openness"\nvalue = 0.3\n', "events[0].set", "no twin attribute 'openness'"),
    ('[[events]]\nat = 1.0\nset = "Valve2.opening"\nvalue = 0.3\nunit = "furlong"\n', "events[0].value", "furlong"),
    ('[[events]]\nat = 1.0\nset = "Pump.ambientTemperature"\nvalue = 3.0\nunit = "bar"\n', "events[0].value", "bar"),
    ('[[events]]\nat = 1.0\nset = "Valve2.opening"\nvalue = 1.5\n', "events[0].value", "outside /Testbed/Valve2.opening's range [0, 1]"),
    ('[[events]]\nat = 11.0\nset = "Valve2.opening"\nvalue = 0.3\n', "events", "after the end of the run"),
    ('[[events]]\nat = 5.0\nramp = "Valve2.opening"\nto = 0.3\nover = 10.0\n', "events[0].over", "after the end of the run"),
    ('[[events]]\nat = 1.0\nset = "Valve2.opening"\n', "events[0]", "needs value"),
    ('[[events]]\nat = 1.0\nfail = "Pump.pressure"\n', "events[0].fail", "not a simulated sensor reading"),
    ('[[expect]]\nattribute = "Pump.pressure"\nexceeds = 1.0\nwithin = 20.0\n', "expect[0]", "after the end of the run"),
    ('[initial]\n"Valve1.opening" = -0.5\n', "initial.Valve1.opening", "outside"),
    ('[models.pump_loop]\nmotor_tauu = 5.0\n', "models.pump_loop.motor_tauu", "no parameter 'motor_tauu'"),
    ('bogus = 1\n', "bogus", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize("body,field,text", CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_invalid_spec_names_file_and_field(tmp_path, body, field, text):
    path = _spec(tmp_path, body)
    with pytest.raises(ScenarioError) as err:
        run_scenario(path, record=tmp_path / "never.usdc")
    msg = str(err.value)
    assert str(path) in msg and field in msg and text in msg, msg
    assert not (tmp_path / "never.usdc").exists()  # nothing ran


@pytest.mark.parametrize("grid,text", [({"Valve2.opening": "0.2:1.0:0"}, "zero points"), ({"Valve2.opening": "a:b:3"}, "not a number"),
                                       ({"Valve7.opening": "0.2:1.0:3"}, "unknown prim"), ({"Valve2.opening": "0.2:1.4:3"}, "outside"),
                                       ({"events.nope.value": "1,2"}, "no event named 'nope'")])
def test_invalid_sweep_fails_before_running(tmp_path, grid, text):
    path = _spec(tmp_path, "")
    with pytest.raises(ScenarioError, match=text) as err:
        run_sweep(path, tmp_path / "out", grid=grid, workers=0, progress=False)
    assert str(path) in str(err.value) or "zero points" in text or "not a number" in text
    assert not (tmp_path / "out" / "runs").exists()


def test_malformed_files(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ScenarioError, match=r"x\.toml: not valid TOML"):
        load_spec(p)
    y = tmp_path / "x.yaml"
    y.write_text("- just\n- a list\n")
    with pytest.raises(ScenarioError, match=r"x\.yaml: a scenario spec is a table"):
        load_spec(y)
    with pytest.raises(ScenarioError, match="scenario spec is .toml"):
        load_spec(tmp_path / "x.json")


def test_cli_reports_spec_error(tmp_path):
    path = _spec(tmp_path, '[[events]]\nat = 1.0\nset = "Valve9.opening"\nvalue = 0.3\n')
    p = subprocess.run([sys.executable, "-m", "twinstage", "run", "-", "--scenario", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "bad.toml" in p.stderr and "events[0].set" in p.stderr and "Traceback" not in p.stderr


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
_tables = st.recursive(_values, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.sampled_from(
    ["name", "scene", "duration", "events", "expect", "at", "set", "value", "ramp", "to", "over", "initial", "rate", "seed", "sweep", "grid"]), c, max_size=5)),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "scene", "duration", "events", "expect", "initial", "rate", "seed", "sweep", "metrics"]), _tables, max_size=6))
def test_parse_never_crashes(data):
    """Hostile input raises ScenarioError (naming the spec) or parses; nothing else escapes."""
    try:
        parse_spec(data, "fuzz.toml")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz.toml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_grid_axis_parser_never_crashes(text):
    from twinstage.scenarios._points import parse_axis

    try:
        name, values = parse_axis(text)
    except ScenarioError as exc:
        assert str(exc).startswith("--grid")
        return
    assert name and (isinstance(values, tuple) or len(values) >= 1)
