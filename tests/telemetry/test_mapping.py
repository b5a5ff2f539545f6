"""Mapping files (TOML/YAML) → validated bindings → `twinstage bind` → a bindings layer over the scene."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxr import Sdf

from twinstage.telemetry import Binding, load_mapping, read_bindings, validate_mapping
from twinstage.telemetry._mapping import MAX_BYTES, MappingError, parse_mapping, write_bindings_layer
from twinstage.usd import open_stage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "telemetry" / "skab_mqtt.toml"
CLI = [sys.executable, "-m", "twinstage"]
P = "/Testbed/Sensors/PressureSensor"


def _toml(*bindings: str, head: str = "") -> str:
    return head + "".join(f"\n[[bindings]]\n{b}\n" for b in bindings)


GOOD = f'prim = "{P}"\nattribute = "pressure"\nkind = "csv"\nkey = "Pressure"\nunit = "bar"'


def test_example_mapping_binds_the_eight_skab_sensors_to_mqtt(pump_scene):
    m = load_mapping(EXAMPLE)
    assert len(m.bindings) == 8
    assert {b.kind for b in m.bindings} == {"mqtt"}
    assert all(b.period == 1.0 and b.align == "hold" and b.stale_after == 3.0 for b in m.bindings)
    assert all(b.key.startswith("skab/testbed/") for b in m.bindings)
    accel = [b for b in m.bindings if b.attribute.startswith("vibration")]
    assert [b.unit for b in accel] == ["g0", "g0"]
    assert validate_mapping(m, open_stage(pump_scene)) == list(m.bindings)


def test_pump_log_example_converts_a_plants_own_units(pump_scene):
    """examples/telemetry/pump_log.yaml binds a plain CSV in psi, °F, US gal/min and m/s² to the testbed."""
    from twinstage.telemetry import resolve
    from twinstage.telemetry._mapping import scene_table

    m = load_mapping(ROOT / "examples" / "telemetry" / "pump_log.yaml")
    stage = open_stage(pump_scene)
    table = scene_table(stage)
    bound = {b.key: resolve(table, b) for b in validate_mapping(m, stage)}
    header, first = (ROOT / "examples" / "telemetry" / "pump_log.csv").read_text().splitlines()[:2]
    row = dict(zip(header.split(","), first.split(",")))
    assert set(bound) == set(row) - {"time"}
    expect = {  # the attribute's unit: bar, degC, L/min, g0
        "PT101_psi": float(row["PT101_psi"]) * 6894.757293168361 / 1e5,
        "TT7_degF": (float(row["TT7_degF"]) - 32.0) * 5.0 / 9.0,
        "FT3_gpm": float(row["FT3_gpm"]) * 3.785411784,
        "VT1_ms2": float(row["VT1_ms2"]) / 9.80665,
    }
    for key, want in expect.items():
        assert bound[key].apply([float(row[key])])[0] == pytest.approx(want, rel=1e-9), key
    assert {b.align for b in m.bindings} == {"linear"} and {b.stale_after for b in m.bindings} == {5.0}


def test_defaults_binding_beats_kind_beats_file():
    text = _toml(
        f'prim = "{P}"\nattribute = "pressure"\nkey = "a"',
        f'prim = "{P}"\nattribute = "pressure"\nkind = "csv"\nkey = "b"\nalign = "mean"',
        f'prim = "{P}"\nattribute = "pressure"\nkind = "csv"\nkey = "c"\nname = "mine"\nstale_after = 9',
        head='version = 1\n[defaults]\nkind = "mqtt"\nperiod = 2\nunit = "psi"\nstaleAfter = 4\n[defaults.csv]\nperiod = 0.5\nalign = "linear"\n',
    )
    a, b, c = parse_mapping(text, "toml", "m.toml").bindings
    assert a == Binding(P, "pressure", "mqtt", "a", unit="psi", period=2.0, stale_after=4.0, name="mqtt_a")
    assert b == Binding(P, "pressure", "csv", "b", unit="psi", period=0.5, align="mean", stale_after=4.0, name="csv_b")
    assert c == Binding(P, "pressure", "csv", "c", unit="psi", period=0.5, align="linear", stale_after=9.0, name="mine")


def test_yaml_and_toml_give_the_same_bindings(tmp_path):
    (tmp_path / "m.yaml").write_text(
        f"version: 1\ndefaults: {{kind: mqtt, period: 1.0}}\nbindings:\n"
        f"  - {{prim: {P}, attribute: pressure, key: skab/p, unit: bar, staleAfter: 2}}\n"
    )
    (tmp_path / "m.toml").write_text(
        _toml(f'prim = "{P}"\nattribute = "pressure"\nkey = "skab/p"\nunit = "bar"\nstaleAfter = 2', head='[defaults]\nkind = "mqtt"\nperiod = 1.0\n')
    )
    assert load_mapping(tmp_path / "m.yaml").bindings == load_mapping(tmp_path / "m.toml").bindings


BAD_FILE = [
    # (file text, error fragments): errors found by reading the file alone
    (_toml(GOOD + "\nalign = 'cubic'"), ["bindings[0] (key 'Pressure'): align", "'cubic'"]),
    (_toml(GOOD + "\nperiod = -1.0"), ["bindings[0] (key 'Pressure'): period", "greater than or equal to 0"]),
    (_toml(GOOD + "\nstaleAfter = 0"), ["bindings[0] (key 'Pressure'): staleAfter", "greater than 0"]),
    (_toml(GOOD + '\nscale = "2"'), ["bindings[0] (key 'Pressure'): scale", "valid number", "'2'"]),
    (_toml(GOOD + "\nperiod = true"), ["period", "valid number"]),
    (_toml(GOOD + "\noffset = nan"), ["offset", "finite"]),
    (_toml(GOOD + "\nscale = inf"), ["scale", "finite"]),
    (_toml(GOOD.replace('key = "Pressure"', "key = 42")), ["bindings[0]: key", "valid string"]),
    (_toml(GOOD.replace('key = "Pressure"', 'key = ""')), ["bindings[0] (key ''): key", "at least 1"]),
    (_toml(GOOD + "\ncolour = 'red'"), ["bindings[0] (key 'Pressure'): colour", "unknown field"]),
    (_toml(GOOD, head="colour = 1\n"), ["colour: unknown field"]),
    (_toml(GOOD, head="[defaults]\nperiod = 1\n[defaults.kafka]\nperiod = 2\n"), ["defaults.kafka: unknown field"]),
    (_toml(GOOD, head="[defaults.csv]\nkind = 'mqtt'\n"), ["defaults.csv.kind: unknown field"]),
    (_toml(GOOD.replace('kind = "csv"', 'kind = "kafka"')), ["bindings[0] (key 'Pressure'): kind", "'kafka'"]),
    (_toml(GOOD.replace('kind = "csv"\n', "")), ["bindings[0] (key 'Pressure'): kind: required"]),
    (_toml(GOOD.replace('attribute = "pressure"', 'attribute = "twin:pressure"')), ["attribute", "pattern"]),
    (_toml(GOOD.replace(f'prim = "{P}"', 'prim = "Testbed/Sensors"')), ["bindings[0] (key 'Pressure'): prim", "pattern"]),
    (_toml(GOOD.replace('prim = "/Testbed/Sensors/PressureSensor"\n', "")), ["bindings[0] (key 'Pressure'): prim: required field is missing"]),
    (_toml(GOOD + '\nname = "a b"'), ["name", "pattern"]),
    (_toml(GOOD.replace('key = "Pressure"', 'key = "a\\u0000b"')), ["bindings[0] (key 'a\\x00b'): key 'a\\x00b' contains control characters"]),
    (_toml(GOOD.replace('unit = "bar"', 'unit = "bar\\n"')), ["bindings[0] (key 'Pressure'): unit 'bar\\n' contains control characters"]),
    (_toml(GOOD + '\nname = "p"', GOOD + '\nname = "p"'), ["bindings[1] (key 'Pressure'): name: 'p' is already used on /Testbed/Sensors/PressureSensor by bindings[0]"]),
    (_toml(GOOD, head="version = 2\n"), ["version", "1"]),
    ("", ["bindings: required field is missing"]),
    ("bindings = []", ["bindings", "at least 1"]),
    ("bindings = 3", ["bindings", "valid list"]),
    ("[[bindings]\nprim = 1", ["not valid TOML", "line 1"]),
    ('[[bindings]]\nprim = "/A"\nprim = "/B"', ["not valid TOML"]),
    ("bindings = [1, 2]", ["bindings[0]", "bindings[1]", "2 problems"]),
    ("a = " + "[" * 50000 + "]" * 50000, ["not valid TOML"]),
]


BAD_YAML = [
    ("bindings: [\n", ["not valid YAML", "line 2"]),
    ("- 1\n- 2\n", ["top level must be a table/mapping", "list"]),
    ("just text", ["top level must be a table/mapping", "str"]),
    ("base: &b {kind: csv}\nbindings: [*b]\n", ["aliases (*name) are not allowed", "line 2"]),
    (f"bindings:\n  - {{prim: {P}, attribute: pressure, kind: csv, key: P, period: 2026-01-01}}\n", ["bindings[0] (key 'P'): period", "valid number"]),
    (f"bindings:\n  - {{prim: {P}, attribute: pressure, kind: csv, key: P, 1: 2}}\n", ["bindings[0] (key 'P'): 1: Keys should be strings"]),
    ("bindings: !!python/object:os.system {}\n", ["not valid YAML", "python/object"]),
    ("[" * 5000 + "]" * 5000, ["not valid YAML"]),
    ("a: 2026-13-45\n", ["not valid YAML", "month"]),
    ('a: !!int "x"\n', ["not valid YAML", "invalid literal"]),
]


@pytest.mark.parametrize("suffix, text, fragments", [("toml", *c) for c in BAD_FILE] + [("yaml", *c) for c in BAD_YAML])
def test_bad_mapping_files_name_file_binding_and_field(tmp_path, suffix, text, fragments):
    path = tmp_path / f"map.{suffix}"
    path.write_text(text)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    msg = str(err.value)
    assert msg.startswith(str(path) + ":"), msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_unreadable_files(tmp_path):
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing is written to disk
    with pytest.raises(MappingError, match=rf"^{huge}: {MAX_BYTES + 1} bytes, more than the 16 MiB"):
        load_mapping(huge)
    with pytest.raises(MappingError, match="more than the 16 MiB"):
        parse_mapping("#" * (MAX_BYTES + 1), "toml", "big.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"bindings = [\xff\xfe]")
    with pytest.raises(MappingError, match=rf"^{binary}: not UTF-8 text \(byte 12"):
        load_mapping(binary)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"bindings: \x00")
    with pytest.raises(MappingError, match="NUL bytes"):
        load_mapping(nul)
    with pytest.raises(MappingError, match=r"nope.toml: no such file"):
        load_mapping(tmp_path / "nope.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(MappingError, match="is a directory"):
        load_mapping(tmp_path / "dir.toml")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(MappingError, match=r"m.json: unknown mapping file type '.json'"):
        load_mapping(tmp_path / "m.json")


def test_many_problems_are_listed_up_to_a_limit():
    text = _toml(*[GOOD.replace("Pressure", f"P{i}") + "\nperiod = -1" for i in range(25)])
    with pytest.raises(MappingError) as err:
        parse_mapping(text, "toml", "m.toml")
    msg = str(err.value)
    assert msg.startswith("m.toml: 25 problems:")
    assert "bindings[9] (key 'P9'): period" in msg and "bindings[10]" not in msg and "and 15 more" in msg


BAD_SCENE = [
    (GOOD.replace(P, "/Testbed/Sensors/Nope"), "bindings[0] (key 'Pressure'): prim: no prim /Testbed/Sensors/Nope in the scene"),
    (GOOD.replace(P, "/Testbed/Base"), "bindings[0] (key 'Pressure'): prim: /Testbed/Base is not a twin asset"),
    (GOOD.replace(P, "/Testbed/bad-path!"), "prim: no prim /Testbed/bad-path! in the scene"),
    (GOOD.replace('attribute = "pressure"', 'attribute = "flow"'), "bindings[0] (key 'Pressure'): attribute: /Testbed/Sensors/PressureSensor declares no twin:flow (it has: pressure)"),
    (GOOD.replace('unit = "bar"', 'unit = "degC"'), "bindings[0] (key 'Pressure'): unit: binding csv:Pressure → /Testbed/Sensors/PressureSensor.twin:pressure: unit 'degC'"),
    (GOOD.replace('unit = "bar"', 'unit = "blorps"'), "bindings[0] (key 'Pressure'): unit: binding csv:Pressure → /Testbed/Sensors/PressureSensor.twin:pressure: unknown unit 'blorps'"),
    (
        'prim = "/Testbed/Sensors/Accelerometer1"\nattribute = "vibration1"\nkind = "csv"\nkey = "Accelerometer1RMS"\nunit = "g"',
        "unit 'g' ([mass]) cannot convert to 'g0'",  # SKAB's g is standard gravity, pint's g the gram
    ),
]


@pytest.mark.parametrize("binding, fragment", BAD_SCENE)
def test_bindings_that_do_not_fit_the_scene(pump_scene, binding, fragment):
    m = parse_mapping(_toml(GOOD, binding + '\nname = "other"'), "toml", "scene_map.toml")
    with pytest.raises(MappingError) as err:
        validate_mapping(m, open_stage(pump_scene))
    msg = str(err.value)
    assert msg.startswith("scene_map.toml: "), msg
    assert fragment.replace("[0]", "[1]") in msg, msg


# -- twinstage bind ---------------------------------------------------------


def _bind(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "bind", *args], capture_output=True, text=True, timeout=180, cwd=cwd)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_bind_end_to_end_leaves_the_scene_byte_identical(pump_scene, tmp_path):
    before = _snapshot(tmp_path)
    proc = _bind(str(pump_scene), "--map", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "pump_testbed_bindings.usda"
    assert f"wrote {out}: 8 bindings (8 mqtt)" in proc.stdout
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "the scene and its parts are untouched"
    assert set(after) - set(before) == {"pump_testbed_bindings.usda"}

    layer = Sdf.Layer.OpenAsAnonymous(str(out))
    assert list(layer.subLayerPaths) == ["./pump_testbed.usda"]
    assert layer.defaultPrim == "Testbed"
    assert layer.pseudoRoot.GetInfo("upAxis") == "Z" and layer.pseudoRoot.GetInfo("metersPerUnit") == 1.0
    prov = dict(layer.customLayerData["twinstage"])
    assert prov["tool"] == "twinstage bind" and prov["bindings"] == 8 and prov["scene"] == "pump_testbed.usda"
    assert all(spec.specifier == Sdf.SpecifierOver for spec in layer.rootPrims), "only overs: the layer defines nothing"

    # the composed stage has the scene's SKAB csv bindings and the mapping's MQTT ones
    stage = open_stage(out)
    assert len(read_bindings(stage, kind="csv")) == 8
    mqtt = read_bindings(stage, kind="mqtt")
    assert mqtt == list(load_mapping(EXAMPLE).bindings)
    info = subprocess.run([*CLI, "info", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert len(json.loads(info.stdout)["bindings"]) == 16

    # a flattened export keeps them
    flat = tmp_path / "flat.usdc"
    stage.Export(str(flat))
    assert read_bindings(open_stage(flat)) == read_bindings(stage)

    # same inputs, same bytes
    first = out.read_bytes()
    assert _bind(str(pump_scene), "--map", str(EXAMPLE)).returncode == 0
    assert out.read_bytes() == first


def test_bind_overrides_a_scene_binding_of_the_same_name(pump_scene, tmp_path):
    m = tmp_path / "m.toml"
    m.write_text(_toml(f'prim = "{P}"\nattribute = "pressure"\nkind = "csv"\nkey = "PT-9"\nunit = "kPa"\nname = "skab_pressure"'))
    out, _ = write_bindings_layer(pump_scene, load_mapping(m))
    stage = open_stage(out)
    csv = {b.name: b for b in read_bindings(stage, kind="csv")}
    assert len(csv) == 8
    assert (csv["skab_pressure"].key, csv["skab_pressure"].unit) == ("PT-9", "kPa")
    assert {b.key for b in read_bindings(open_stage(pump_scene), kind="csv")} >= {"Pressure"}, "the scene keeps its own"


def test_bind_writes_a_valid_twin_stage(pump_scene, tmp_path):
    from usd_validators import asset_validator

    from twinstage.usd._validate import summary, validate

    out = tmp_path / "sub" / "b.usda"
    assert _bind(str(pump_scene), "--map", str(EXAMPLE), "-o", str(out)).returncode == 0
    assert list(Sdf.Layer.OpenAsAnonymous(str(out)).subLayerPaths) == ["../pump_testbed.usda"]
    findings = validate(out)
    assert summary(findings)["errors"] == 0, [str(f) for f in findings]
    errors, text = asset_validator(out)  # NVIDIA's rules, as its users run them
    assert errors == 0, text


def test_bind_check_and_json(pump_scene, tmp_path):
    proc = _bind(str(pump_scene), "--map", str(EXAMPLE), "--check", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["out"] is None and len(out["bindings"]) == 8
    assert out["bindings"][0]["staleAfter"] == 3.0 and out["bindings"][0]["key"] == "skab/testbed/Accelerometer1RMS"
    assert not (tmp_path / "pump_testbed_bindings.usda").exists()


def test_bind_errors_exit_2_naming_file_and_field_and_write_nothing(pump_scene, tmp_path):
    before = _snapshot(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('unit = "bar"', 'unit = "degF"'))
    proc = _bind(str(pump_scene), "--map", str(bad))
    assert proc.returncode == 2
    assert f"twinstage bind: error: {bad}: bindings[3] (key 'skab/testbed/Pressure'): unit:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(tmp_path) == {**before, "bad.toml": bad.read_bytes()}

    proc = _bind(str(pump_scene), "--map", str(EXAMPLE), "-o", str(pump_scene))
    assert proc.returncode == 2 and "is a layer of the scene itself" in proc.stderr
    assert _snapshot(tmp_path) == {**before, "bad.toml": bad.read_bytes()}
    proc = _bind(str(pump_scene), "--map", str(EXAMPLE), "-o", str(tmp_path / "x.txt"))
    assert proc.returncode == 2 and "must be .usda" in proc.stderr
    proc = _bind(str(tmp_path / "none.usda"), "--map", str(EXAMPLE))
    assert proc.returncode == 2 and "none.usda: no such file" in proc.stderr


def test_bind_over_a_scene_elsewhere_uses_a_relative_sublayer(pump_scene, tmp_path):
    scenes = tmp_path / "a" / "scenes"
    scenes.mkdir(parents=True)
    for f in pump_scene.parent.glob("pump_testbed*"):
        shutil.copy(f, scenes / f.name)
    out = tmp_path / "b" / "layers" / "mqtt.usda"
    out_path, written = write_bindings_layer(scenes / "pump_testbed.usda", load_mapping(EXAMPLE), out)
    assert out_path == out and len(written) == 8
    assert list(Sdf.Layer.OpenAsAnonymous(str(out)).subLayerPaths) == ["../../a/scenes/pump_testbed.usda"]
    # the pair moves together
    (tmp_path / "moved").mkdir()
    shutil.move(str(tmp_path / "a"), str(tmp_path / "moved" / "a"))
    shutil.move(str(tmp_path / "b"), str(tmp_path / "moved" / "b"))
    assert len(read_bindings(open_stage(tmp_path / "moved" / "b" / "layers" / "mqtt.usda"))) == 16


# -- hypothesis on the parser -------------------------------------------------

_ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_binding = st.fixed_dictionaries(
    {
        "prim": st.from_regex(r"/[A-Za-z_][A-Za-z0-9_]{0,8}(/[A-Za-z_][A-Za-z0-9_]{0,8}){0,3}", fullmatch=True),
        "attribute": _ident,
        "kind": st.sampled_from(["csv", "parquet", "mqtt", "opcua", "sql", "ingest"]),
        "key": st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(str.strip),
    },
    optional={
        "unit": st.sampled_from(["", "bar", "degF", "L/min", "g0", "m/s^2"]),
        "scale": _finite,
        "offset": _finite,
        "period": st.floats(min_value=0, max_value=1e9),
        "align": st.sampled_from(["hold", "linear", "mean"]),
        "staleAfter": st.floats(min_value=1e-9, max_value=1e9),
    },
)


def _to_toml(bindings: list[dict]) -> str:
    def val(v):
        return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else repr(float(v))

    return "".join("[[bindings]]\n" + "".join(f"{k} = {val(v)}\n" for k, v in b.items()) for b in bindings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_binding, min_size=1, max_size=5, unique_by=lambda b: (b["prim"], b["kind"], b["key"])))
def test_hypothesis_valid_files_round_trip(specs):
    names = [f"b{i}" for i in range(len(specs))]
    for s, n in zip(specs, names):
        s["name"] = n
    for fmt, text in (("toml", _to_toml(specs)), ("yaml", json.dumps({"bindings": specs}, ensure_ascii=False))):
        got = parse_mapping(text, fmt, f"h.{fmt}").bindings
        for s, b in zip(specs, got):
            assert (b.prim, b.attribute, b.kind, b.key, b.name) == (s["prim"], s["attribute"], s["kind"], s["key"], s["name"])
            assert b.unit == s.get("unit", "") and b.align == s.get("align", "hold")
            for field, key, default in (("scale", "scale", 1.0), ("offset", "offset", 0.0), ("period", "period", 0.0), ("stale_after", "staleAfter", 3.0)):
                assert getattr(b, field) == s.get(key, default) and math.isfinite(getattr(b, field))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)), st.sampled_from(["toml", "yaml"]))
def test_hypothesis_garbage_raises_only_mapping_errors(data, fmt):
    try:
        m = parse_mapping(data, fmt, "g")
    except MappingError as exc:
        assert str(exc).startswith("g: ")
    else:
        assert m.bindings


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_hypothesis_mutated_example_raises_only_mapping_errors(data):
    text = EXAMPLE.read_text()
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i, min(len(text), i + 20)))
    new = data.draw(st.text(max_size=10))
    try:
        m = parse_mapping(text[:i] + new + text[j:], "toml", "ex.toml")
    except MappingError as exc:
        assert str(exc).startswith("ex.toml: ")
    else:
        assert 1 <= len(m.bindings) <= 8
