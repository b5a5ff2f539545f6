"""CSV/Parquet replay: parsing (good and bad input), time mapping, the source in a twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Binding, ReplaySource, TelemetryError
from twinstage.telemetry._replay_io import MISSING, NONFINITE, TEXT, read_table, sniff_separator

P = "/Testbed/Sensors/PressureSensor"
F = "/Testbed/Sensors/FlowMeter"
PUMP = "/Testbed/Pump"


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def press(**kw):
    return [Binding(P, "pressure", "csv", "Pressure", **kw)]


# -- parsing -----------------------------------------------------------------------------------


def test_skab_semicolon_format_and_iso_times(tmp_path):
    p = write(tmp_path, "datetime;Pressure;Current\n2020-03-09 10:14:33;0.05;1.3\n2020-03-09 10:14:34;0.38;1.35\n")
    d = read_table(p)
    assert d.time_column == "datetime" and list(d.columns) == ["Pressure", "Current"]
    assert d.time[1] - d.time[0] == 1.0 and d.time[0] == pytest.approx(1583748873.0)
    assert list(d.columns["Pressure"]) == [0.05, 0.38] and list(d.lines) == [2, 3]


@pytest.mark.parametrize("sep", [",", "\t", "|", ";"])
def test_separator_is_sniffed(tmp_path, sep):
    p = write(tmp_path, sep.join(["time", "a", "b"]) + "\n" + sep.join(["0", "1.5", "2"]) + "\n" + sep.join(["1", "2.5", "3"]) + "\n")
    d = read_table(p)
    assert list(d.columns["a"]) == [1.5, 2.5] and list(d.time) == [0.0, 1.0]


def test_wrong_separator_given_is_a_clear_error(tmp_path):
    p = write(tmp_path, "datetime;Pressure\n2020-03-09 10:14:33;0.05\n")
    with pytest.raises(TelemetryError, match=r"d\.csv: line 1: .*looks ';'-separated"):
        read_table(p, sep=",")


def test_unsniffable_separator_names_the_file(tmp_path):
    p = write(tmp_path, "just one column\n1\n")
    with pytest.raises(TelemetryError, match=r"d\.csv: cannot tell the separator"):
        sniff_separator(str(p), p.read_bytes())


@pytest.mark.parametrize("body,line,what", [("0;1;2\n1;2\n", 3, "2 fields"), ("0;1;2\n1;2;3;4\n", 3, "")])
def test_malformed_rows_are_errors_naming_file_and_line(tmp_path, body, line, what):
    p = write(tmp_path, "time;a;b\n" + body)
    with pytest.raises(TelemetryError, match=rf"d\.csv.*line {line}.*{what}"):
        read_table(p)


def test_unparsable_timestamp_names_file_line_and_text(tmp_path):
    p = write(tmp_path, "datetime;a\n2020-03-09 10:14:33;1\nyesterday;2\n")
    with pytest.raises(TelemetryError, match=r"d\.csv: line 3: column 'datetime': cannot parse timestamp 'yesterday'"):
        read_table(p)


def test_epoch_seconds_and_milliseconds(tmp_path):
    s = read_table(write(tmp_path, "ts,a\n1700000000,1\n1700000001.5,2\n"))
    ms = read_table(write(tmp_path, "ts,a\n1700000000000,1\n1700000001500,2\n", "ms.csv"))
    assert list(s.time) == [1700000000.0, 1700000001.5] and list(ms.time) == [1700000000.0, 1700000001.5]
    assert list(read_table(write(tmp_path, "ts,a\n1000,1\n2500,2\n", "u.csv"), time_unit="ms").time) == [1.0, 2.5]


def test_text_nan_inf_and_empty_cells_get_codes_and_lines(tmp_path):
    p = write(tmp_path, "time,a\n0,1\n1,abc\n\n2,nan\n3,-inf\n4,\n5,1e999\n")
    d = read_table(p)
    assert list(d.lines) == [2, 3, 5, 6, 7, 8]  # the blank line 4 is skipped, numbering is the file's
    assert list(d.problems["a"]) == [0, TEXT, NONFINITE, NONFINITE, MISSING, NONFINITE]
    assert np.isnan(d.columns["a"][1:]).all()


def test_empty_and_headerless_files(tmp_path):
    with pytest.raises(TelemetryError, match="empty file"):
        read_table(write(tmp_path, ""))
    with pytest.raises(TelemetryError, match="cannot read"):
        read_table(tmp_path / "nope.csv")


def test_a_million_rows_parse_vectorised(tmp_path):
    n = 1_000_000
    t = np.arange(n) * 0.1
    v = np.round(np.sin(t), 6)
    p = tmp_path / "big.csv"
    np.savetxt(p, np.c_[t, v], delimiter=",", header="ts,Pressure", comments="", fmt=["%.1f", "%.6f"])
    d = read_table(p)
    assert len(d) == n and np.array_equal(d.columns["Pressure"], v) and d.time[-1] == pytest.approx(t[-1])


def test_parquet_with_timestamps_nulls_and_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.array(np.array(["2020-03-09T10:14:33", "2020-03-09T10:14:34", "2020-03-09T10:14:35"], dtype="datetime64[ns]"))
    tab = pa.table({"datetime": ts, "Pressure": pa.array([0.1, None, float("inf")]), "note": pa.array(["1", "x", None])})
    pq.write_table(tab, tmp_path / "d.parquet")
    d = read_table(tmp_path / "d.parquet")
    assert d.fmt == "parquet" and list(d.time - d.time[0]) == [0.0, 1.0, 2.0]
    assert list(d.problems["Pressure"]) == [0, MISSING, NONFINITE] and list(d.problems["note"]) == [0, TEXT, MISSING]


def test_broken_parquet_is_a_clear_error(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1 not really")
    with pytest.raises(TelemetryError, match=r"x\.parquet: cannot read Parquet"):
        read_table(p)


# -- hypothesis: the parser ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sep=st.sampled_from([",", ";", "\t"]), rows=st.lists(st.tuples(st.integers(0, 2_000_000_000), finite, finite), min_size=1, max_size=40))
def test_numeric_tables_round_trip(tmp_path, sep, rows):
    text = sep.join(["time", "a", "b"]) + "\n" + "".join(f"{t}{sep}{a!r}{sep}{b!r}\n" for t, a, b in rows)
    p = tmp_path / "h.csv"
    p.write_text(text)
    d = read_table(p, sep=sep, time_unit="s")
    assert list(d.time) == [float(r[0]) for r in rows]
    assert list(d.columns["a"]) == [r[1] for r in rows] and list(d.columns["b"]) == [r[2] for r in rows]
    assert not d.problems


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(alphabet="0123456789;,.\n-eE nainf\"x:T", max_size=200).map(str.encode))
def test_garbage_is_parsed_or_a_telemetry_error_never_a_crash(tmp_path, data):
    p = tmp_path / "g.csv"
    p.write_bytes(data)
    try:
        d = read_table(p)
    except TelemetryError as exc:
        assert "g.csv" in str(exc)
        return
    assert len(d.time) == len(d.lines) and np.isfinite(d.time).all()
    for v in d.columns.values():
        assert len(v) == len(d.time)


# -- the source -------------------------------------------------------------------------------------


def test_unknown_column_names_the_binding_and_lists_the_columns(tmp_path):
    p = write(tmp_path, "time;Pressur\n0;1\n")
    with pytest.raises(TelemetryError, match=r"binding csv:Pressure → .*PressureSensor\.twin:pressure: no column 'Pressure'.*'Pressur'"):
        ReplaySource(p, press())


def test_incompatible_unit_is_an_error_at_bind_naming_the_binding(tmp_path, pump_scene):
    p = write(tmp_path, "time;Pressure\n0;1\n")
    eng = twinstage.open(pump_scene, headless=True)
    with pytest.raises(TelemetryError, match=r"binding csv:Pressure .* 'degC'.*cannot convert to 'bar'"):
        eng.add_source(ReplaySource(p, press(unit="degC")))


def test_units_scale_and_offset_convert_on_the_way_in(tmp_path, pump_scene):
    p = write(tmp_path, "time;Pressure;Flow\n0;100000;1\n1;200000;2\n")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure", unit="Pa"),
                                    Binding(F, "flowRate", "csv", "Flow", unit="m^3/s", scale=0.001, offset=0.0)]))
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == pytest.approx(2.0) and eng.get(F, "flowRate") == pytest.approx(120.0)  # 2 L/s = 120 L/min


def test_data_time_maps_onto_sim_time_from_the_first_row(tmp_path, pump_scene):
    p = write(tmp_path, "datetime;Pressure\n2020-01-01 00:00:10;1\n2020-01-01 00:00:11;2\n2020-01-01 00:00:13;3\n")
    eng = twinstage.open(pump_scene, headless=True, rate=2.0)
    eng.run(ticks=4)  # added at sim 2 s: its first row lands there
    src = eng.add_source(ReplaySource(p, press()))
    assert list(src.sim_time) == [2.0, 3.0, 5.0]
    seen = []
    eng.on_frame(lambda f: seen.append((f.sim_time, eng.get(P, "pressure"))))
    eng.run(ticks=6)
    assert seen == [(2.5, 1.0), (3.0, 2.0), (3.5, 2.0), (4.0, 2.0), (4.5, 2.0), (5.0, 3.0)]
    explicit = ReplaySource(p, press(), start=100.0)
    explicit.anchor(7.0)
    assert explicit.sim_time[0] == 100.0


def test_bad_cells_are_flagged_with_file_column_and_line_and_previous_value_held(tmp_path, pump_scene):
    p = write(tmp_path, "time;Pressure\n0;0.5\n1;oops\n2;nan\n3;0.7\n")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, press()))
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == 0.5 and eng.quality(P, "pressure") & Quality.BAD
    assert eng.quality_reason(P, "pressure").startswith("bad: text in a numeric column in column 'Pressure' (d.csv line 3)")
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == 0.5 and "non-finite value in column 'Pressure' (d.csv line 4)" in eng.quality_reason(P, "pressure")
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == 0.7 and eng.quality(P, "pressure") == 0 and eng.quality_reason(P, "pressure") == "good"


def test_backwards_timestamps_are_flagged_late_and_not_applied(tmp_path, pump_scene):
    p = write(tmp_path, "time;Pressure\n0;0.1\n2;0.2\n1;9.9\n3;0.3\n")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    src = eng.add_source(ReplaySource(p, press()))
    assert src.stats()["backwards_rows"] == 1
    vals = []
    eng.on_frame(lambda f: vals.append((eng.get(P, "pressure"), bool(eng.quality(P, "pressure") & Quality.LATE))))
    eng.run(ticks=3)
    assert vals == [(0.1, True), (0.2, False), (0.3, False)]  # the 9.9 row (line 4) never shows


def test_duplicate_timestamps_last_wins_and_counted(tmp_path, pump_scene):
    p = write(tmp_path, "time;Pressure\n0;0.1\n1;0.2\n1;0.25\n2;0.3\n")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, press()))
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == 0.25
    assert eng.stats()["telemetry"]["sources"]["replay:d.csv"]["duplicates"] == 1


def test_speed_is_the_clocks_business_the_sim_result_is_the_same(tmp_path, pump_scene, monkeypatch):
    p = write(tmp_path, "time;Pressure\n" + "".join(f"{k};{k / 10}\n" for k in range(6)))
    out = []
    for realtime, speed in ((False, 1.0), (True, 1000.0)):
        eng = twinstage.open(pump_scene, headless=True, rate=2.0, realtime=realtime, speed=speed)
        eng.add_source(ReplaySource(p, press(align="linear", period=1.0)))
        seen = []
        eng.on_frame(lambda f, e=eng: seen.append(e.get(P, "pressure")))
        eng.run(ticks=10)
        out.append(seen)
    assert out[0] == out[1] and out[0][0] == pytest.approx(0.05) and out[0][1] == pytest.approx(0.1)


def test_parquet_replays_like_csv(tmp_path, pump_scene):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ts": pa.array([0.0, 1.0, 2.0]), "Pressure": pa.array([0.1, 0.2, 0.3])}), tmp_path / "d.parquet")
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(tmp_path / "d.parquet", [Binding(P, "pressure", "parquet", "Pressure")]))
    eng.run(ticks=2)
    assert eng.get(P, "pressure") == 0.3 and math.isclose(eng.freshness(P, "pressure"), 0.0)


# -- the CLI ------------------------------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "twinstage", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_run_replay_uses_the_scenes_bindings_and_runs_to_the_end_of_the_file(tmp_path, pump_scene):
    p = write(tmp_path, "datetime;Pressure;Current;Unbound\n2020-01-01 00:00:00;0.5;2.0;1\n2020-01-01 00:00:01;nope;2.1;1\n"
                        "2020-01-01 00:00:02;0.7;2.2;1\n")
    proc = cli("run", pump_scene, "--replay", p, "--rate", 2, "--record", tmp_path / "r.usdc", "--reproducible")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay" in proc.stdout and "2 bindings" in proc.stdout and "ran 5 ticks (2.500 s sim)" in proc.stdout
    assert "5 samples applied, 1 bad" in proc.stdout
    rec = twinstage.Recording(tmp_path / "r.usdc")
    assert list(rec.series(P, "pressure")) == [0.5, 0.5, 0.5, 0.7, 0.7]  # at 1 s the bad cell: 0.5 held


def test_cli_run_replay_bad_file_is_a_clear_error(tmp_path, pump_scene):
    p = write(tmp_path, "datetime;Pressure\n2020-01-01 00:00:00;0.5\nlater;0.6\n")
    proc = cli("run", pump_scene, "--replay", p)
    assert proc.returncode == 2 and "d.csv: line 3: column 'datetime': cannot parse timestamp 'later'" in proc.stderr
    proc = cli("run", pump_scene, "--replay", write(tmp_path, "x;y\n1;2\n", "other.csv"))
    assert proc.returncode == 2 and "no column binds to this scene" in proc.stderr
    proc = cli("run", pump_scene, "--mqtt", "nohostport")
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr
    proc = cli("run", pump_scene, "--opcua", "http://example")
    assert proc.returncode == 2 and "opc.tcp://" in proc.stderr
    proc = cli("run", pump_scene, "--opcua", "opc.tcp://127.0.0.1:4840/")
    assert proc.returncode == 2 and "has no opcua bindings" in proc.stderr and "twinstage bind" in proc.stderr


def test_demo_without_skab_generates_and_replays_its_own_data(tmp_path):
    out = tmp_path / "demo"
    proc = cli("demo", "--out", out, "--ticks", 250, "--data", tmp_path / "nothing-here")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gen = out / "generated_skab.csv"
    assert gen.is_file() and "generated_skab.csv" in proc.stdout
    rec = twinstage.Recording(out / "pump_testbed.rec.usdc")
    measured, simulated = rec.series(F, "flowRate"), rec.series(PUMP, "flowRate")
    assert abs(measured[-1] - simulated[-1]) < 3.0 and not np.array_equal(measured, simulated)  # model + noise, side by side
    assert "generated_skab.csv" in str(rec.provenance.get("dataSources"))
