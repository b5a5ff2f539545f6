"""The SQL historian against Debian's real PostgreSQL (started by the tests on a loopback
port): SKAB rows replayed through SqlSource, calibration windows, a table with NULLs,
NaN and rows stored backwards, and the errors that name table/tag/binding."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from services import postgres  # noqa: F401  (fixture)

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Binding, TelemetryError
from twinstage.telemetry._sql import SqlSource, read_window

COLS = {"Pressure": ("/Testbed/Sensors/PressureSensor", "pressure", "bar"),
        "Temperature": ("/Testbed/Sensors/MotorTemperatureSensor", "motorTemperature", "degC"),
        "Volume Flow RateRMS": ("/Testbed/Sensors/FlowMeter", "flowRate", "L/min"),
        "Current": ("/Testbed/Sensors/CurrentSensor", "current", "A")}


def sqlb(tag: str, prim: str, attr: str, unit: str = "", **kw) -> Binding:
    return Binding(prim, attr, "sql", tag, unit=unit, **kw)


@pytest.fixture(scope="module")
def skab(postgres, shared_data):
    """valve1/0.csv as a TimescaleDB-style narrow table ``skab`` (quality smallint, OPC DA 192 = good)."""
    import psycopg

    df = pd.read_csv(shared_data / "skab" / "data" / "valve1" / "0.csv", sep=";", parse_dates=["datetime"])
    t = df["datetime"].dt.tz_localize("UTC")
    long = pd.concat([pd.DataFrame({"time": t, "tag": c, "value": df[c], "quality": 192}) for c in COLS])
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS skab")
        conn.execute("CREATE TABLE skab (time timestamptz NOT NULL, tag text NOT NULL, value double precision, quality smallint)")
        buf = io.StringIO()
        long.sample(frac=1.0, random_state=1).to_csv(buf, index=False, header=False)  # stored out of order
        with conn.cursor().copy("COPY skab FROM STDIN (FORMAT csv)") as cp:
            cp.write(buf.getvalue())
    return df


def test_skab_window_replays_in_order_with_units_and_sim_time(postgres, skab, table):
    bs = [sqlb(tag, *COLS[tag]) for tag in COLS] + [sqlb("Pressure", "/Testbed/Pump", "pressure", "kPa", scale=100.0)]
    src = SqlSource(postgres.dsn, bs, table="skab")
    src.bind(table)
    assert src.kind == "replay" and set(src.feeds()) == {"pressure", "motorTemperature", "flowRate", "current"}
    n = len(skab)
    assert src.stats()["rows"] == 4 * n and src.stats()["bad_samples"] == 0 and not src.warnings
    t0 = skab["datetime"].iloc[0]
    sim = (skab["datetime"] - t0).dt.total_seconds().to_numpy()
    whole = {s.channel: s for s in src.poll(-1.0, 1e9)}
    m = whole["motorTemperature"]
    np.testing.assert_array_equal(m.values, skab["Temperature"].to_numpy())
    np.testing.assert_array_equal(m.event_time, sim)
    assert m.event_time[0] == 0.0 and (m.quality == 0).all() and m.source == "sql:skab"
    p = whole["pressure"]
    ps, pump = table.row(*COLS["Pressure"][:2]), table.row("/Testbed/Pump", "pressure")
    np.testing.assert_allclose(p.values[p.rows == ps], skab["Pressure"].to_numpy())
    np.testing.assert_allclose(p.values[p.rows == pump], skab["Pressure"].to_numpy())  # 100 × value kPa = value bar
    # tick windows (t0, t1] partition the replay: nothing twice, nothing lost
    edges = np.arange(-0.5, sim[-1] + 1.0, 0.25)
    total = sum(len(s) for a, b in zip(edges[:-1], edges[1:]) for s in src.poll(a, b))
    assert total == 5 * n
    fast = SqlSource(postgres.dsn, bs[:1], table="skab", speed=4.0, start=t0.to_pydatetime(), end=skab["datetime"].iloc[100].isoformat())
    fast.bind(table)
    (s,) = fast.poll(-1, 1e9)
    np.testing.assert_array_equal(s.event_time, sim[:100] / 4.0)


def test_read_window_for_calibration(postgres, skab):
    start, end = skab["datetime"].iloc[10], skab["datetime"].iloc[20]
    w = read_window(postgres.dsn, ["Current", "Pressure", "NoSuchTag"], start.isoformat(), end.isoformat(), table="skab")
    assert list(w) == ["Current", "Pressure", "NoSuchTag"]
    np.testing.assert_array_equal(w["Current"].value, skab["Current"].to_numpy()[10:20])
    np.testing.assert_array_equal(w["Current"].time, (skab["datetime"].iloc[10:20] - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy())
    assert (w["Pressure"].quality == 0).all() and len(w["NoSuchTag"].time) == 0


def test_nulls_nan_backwards_time_and_quality_texts_are_flagged_with_reasons(postgres, table):
    import psycopg

    rows = [("2024-01-01 00:00:03+00", "P", 3.0, "good"), ("2024-01-01 00:00:01+00", "P", 1.0, None),
            ("2024-01-01 00:00:02+00", "P", None, "good"), ("2024-01-01 00:00:04+00", "P", float("nan"), "good"),
            ("2024-01-01 00:00:05+00", "P", 5.0, "BAD"), ("2024-01-01 00:00:06+00", "P", 6.0, "Uncertain"),
            ("2024-01-01 00:00:07+00", "P", 7.0, "smelly"), (None, "P", 8.0, "good"), ("2024-01-01 00:00:08+00", "P", 8.0, "good")]
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS messy")
        conn.execute("CREATE TABLE messy (time timestamptz, tag text, value double precision, quality text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO messy VALUES (%s, %s, %s, %s)", rows)
    src = SqlSource(postgres.dsn, [sqlb("P", "/Testbed/Sensors/PressureSensor", "pressure"), sqlb("Ghost", "/Testbed/Pump", "pressure")], table="messy")
    src.bind(table)
    (s,) = src.poll(-1, 100)
    assert s.event_time.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # ordered by time; the NULL-time row is not placed
    B, U = Quality.BAD, Quality.UNCERTAIN
    assert s.quality.tolist() == [0, B, 0, B, B, U, B, 0]
    assert s.values[[0, 2, 4, 5, 6, 7]].tolist() == [1.0, 3.0, 5.0, 6.0, 7.0, 8.0]
    for why in ("missing value (NULL) (tag P)", "non-finite (tag P)", "bad quality (tag P)", "unknown quality (tag P)", "uncertain quality (tag P)"):
        assert why in s.reason
    st = src.stats()
    assert st["null_time_rows"] == 1 and st["empty_tags"] == 1 and st["bad_samples"] == 4
    assert any("NULL time" in w for w in src.warnings) and any("'Ghost'" in w and "sql:Ghost" in w for w in src.warnings)


def test_errors_name_the_table_tag_and_binding(postgres, table):
    import psycopg

    b = sqlb("P", "/Testbed/Sensors/PressureSensor", "pressure")
    with pytest.raises(TelemetryError, match="no table 'nope'"):
        SqlSource(postgres.dsn, [b], table="nope").bind(table)
    with pytest.raises(TelemetryError, match="expected"):
        SqlSource(postgres.dsn, [b], table="x; DROP TABLE skab").bind(table)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS narrow; CREATE TABLE narrow (ts timestamptz, tag text, value float8)")
    with pytest.raises(TelemetryError, match=r"narrow: missing column\(s\) time"):
        SqlSource(postgres.dsn, [b], table="narrow").bind(table)
    with pytest.raises(TelemetryError, match="cannot connect"):
        read_window(f"host=127.0.0.1 port=1 user=postgres password=hunter2 connect_timeout=2", ["P"])
    with pytest.raises(TelemetryError, match=r"sql:P → /Testbed/Nope.twin:pressure: unknown target"):
        SqlSource(postgres.dsn, [sqlb("P", "/Testbed/Nope", "pressure")]).bind(table)
    with pytest.raises(TelemetryError, match=r"sql:P → .*PressureSensor.twin:pressure.*"):
        SqlSource(postgres.dsn, [sqlb("P", "/Testbed/Sensors/PressureSensor", "pressure", "m/s")]).bind(table)
    with pytest.raises(TelemetryError, match="speed"):
        SqlSource(postgres.dsn, [b], speed=0)


def test_end_to_end_replay_through_a_twin(postgres, skab, pump_scene):
    twin = twinstage.open(pump_scene, headless=True, rate=4)
    try:
        twin.step(2)  # the replay starts at the twin's sim time when added
        t_add = twin.clock.sim_time
        bs = [sqlb(tag, *COLS[tag]) for tag in ("Temperature", "Pressure")]
        src = twin.add_source(SqlSource(postgres.dsn, bs, table="skab", name="historian"))
        twin.step(4 * 10)
        assert twin.clock.sim_time == pytest.approx(t_add + 10.0)
        assert twin.get(*COLS["Temperature"][:2]) == skab["Temperature"].iloc[10]
        assert twin.get(*COLS["Pressure"][:2]) == skab["Pressure"].iloc[10]
        assert twin.quality(*COLS["Temperature"][:2]) == 0
        assert any(d.startswith("sql:") and "table skab" in d for d in twin.data_sources)
        assert twin.feeds.stats()["sources"]["historian"]["source_rows"] == 2 * len(skab)
    finally:
        twin.close()
