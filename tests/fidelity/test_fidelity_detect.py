"""Live anomaly detector: streaming == batch, causality, hysteresis, bad input, SKAB figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twinstage.fidelity import DetectorError, DetectorSettings, WindowDetector, learn_allowance, read_skab

ROOT = Path(__file__).resolve().parents[2]


def _data(seed=0, n=1000, shift_at=600, shift=1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [10.0, -3.0, 0.0]
    x[shift_at:, 1] += shift * 2.0
    return x


def test_stream_and_batch_are_identical():
    x = _data()
    a = WindowDetector(channels=["a", "b", "c"]).fit(x[:400])
    b = WindowDetector(channels=["a", "b", "c"]).fit(x[:400])
    streamed = [a.update(r) for r in x[400:]]
    s1 = np.array([s for s, _ in streamed])
    a1 = np.array([al for _, al in streamed])
    # batch in uneven chunks continues the same state
    parts = [b.run(x[400:437]), b.run(x[437:438]), b.run(x[438:])]
    s2 = np.concatenate([p[0] for p in parts])
    a2 = np.concatenate([p[1] for p in parts])
    assert np.array_equal(s1, s2)
    assert np.array_equal(a1, a2)
    assert np.array_equal(a.z, b.z)


def test_detects_a_shift_and_clears_after_it():
    x = _data(shift=1.5)
    x[800:, 1] -= 3.0  # back to normal
    det = WindowDetector().fit(x[:400])
    scores, alarms = det.run(x[400:])
    assert not alarms[:150].any()  # normal: no alarm
    assert alarms[200 + 40 : 400].all()  # raised within ~confirm + window rows
    assert not alarms[400 + 60 :].any()  # cleared once the plant is back
    assert scores[250:400].min() > DetectorSettings().on
    assert np.argmax(np.abs(det.run(x[600:601] + [0, 100, 0])[0])) == 0 and np.argmax(np.abs(det.z)) == 1


def _wandering(seed, n=1150):
    """Normal operation whose channel b wanders slowly (a warm-up) beyond what 400 rows show."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 1] += np.sin(np.arange(n) / 150.0 + rng.uniform(0, 6.3)) + np.cumsum(rng.normal(0, 0.05, n))
    return x


def test_allowance_learned_from_normal_wander_cuts_false_alarms_not_detection():
    names = ["a", "b", "c"]
    normal = [_wandering(s) for s in range(6)]
    allow = dict(learn_allowance(normal, channels=names))
    assert allow["b"] > 1.2 and allow["a"] == 1.0 and allow["c"] == 1.0  # only the wandering sensor
    plain = DetectorSettings()
    allowed = DetectorSettings(allowance=tuple(allow.items()))
    fresh = [_wandering(s) for s in range(100, 106)]  # normal pieces not learned from
    far = {}
    for key, st in (("plain", plain), ("allowed", allowed)):
        far[key] = np.mean([WindowDetector(st, channels=names).fit(x[:400]).run(x[400:])[1].mean() for x in fresh])
    assert far["allowed"] < far["plain"]
    x = _wandering(200)
    x[800:, 0] += 2.0  # a real fault on a steady sensor is still caught
    _, alarms = WindowDetector(allowed, channels=names).fit(x[:400]).run(x[400:])
    assert alarms[400 + 40 :].all() and not alarms[:300].any()


def test_stream_and_batch_are_identical_with_an_allowance():
    x = _data()
    st = DetectorSettings(allowance=(("b", 1.7),))
    a = WindowDetector(st, channels=["a", "b", "c"]).fit(x[:400])
    b = WindowDetector(st, channels=["a", "b", "c"]).fit(x[:400])
    s1 = np.array([a.update(r)[0] for r in x[400:]])
    s2, _, z = b.run(x[400:], levels=True)
    assert np.array_equal(s1, s2) and np.array_equal(z[-1], a.z)
    plain = WindowDetector(channels=["a", "b", "c"]).fit(x[:400]).run(x[400:])[0]
    assert (s2 <= plain).all() and (s2 < plain).any()


def test_bad_allowance():
    with pytest.raises(DetectorError, match="divisor >= 1"):
        DetectorSettings(allowance=(("a", 0.5),))
    with pytest.raises(DetectorError, match="divisor >= 1"):
        DetectorSettings(allowance=(("a", float("nan")),))
    with pytest.raises(DetectorError, match="divisor >= 1"):
        DetectorSettings(allowance=(("a", "2"),))
    with pytest.raises(DetectorError, match="allowance channel"):
        WindowDetector(DetectorSettings(allowance=(("zz", 2.0),)), channels=["a", "b", "c"]).fit(_data()[:400])
    with pytest.raises(DetectorError, match="too short"):
        learn_allowance(_data()[:1000], channels=["a", "b", "c"])
    with pytest.raises(DetectorError, match="quantile"):
        learn_allowance(_data(), quantile=1.5)


def test_causal_future_rows_do_not_change_past_scores():
    x = _data()
    det = WindowDetector().fit(x[:400])
    s_a, _ = det.run(x[400:700])
    y = x.copy()
    y[650:] += 1000.0
    det.reset()
    s_b, _ = det.run(y[400:700])
    assert np.array_equal(s_a[:250], s_b[:250]) and not np.array_equal(s_a, s_b)


def test_hysteresis_needs_confirmation_and_release():
    st = DetectorSettings(window=2, on=3.0, off=2.0, confirm=3, release=2, relative_off=0.0)
    det = WindowDetector(st).fit(np.tile([[0.0], [1.0], [-1.0], [0.0]], (10, 1)))
    seq = [0, 0, 50, 0, 0, 50, 50, 50, 50, 50, 2.0, 0, 0, 0]  # 50: spike
    out = [det.update([v])[1] for v in seq]
    # a single spike's window mean exceeds `on` for 2 rows only: no alarm; 5 in a row: alarm
    assert out[:5] == [False] * 5
    assert out[7] is True
    assert out[-1] is False


def test_nan_rows_are_counted_not_crashing():
    x = _data()
    det = WindowDetector().fit(x[:400])
    row = x[500].copy()
    row[0] = np.nan
    score, _ = det.update(row)
    assert np.isfinite(score) and det.missing == 1


@pytest.mark.parametrize(
    "train, msg",
    [
        (np.zeros((10, 2)), "at least 2 × window"),
        (np.zeros(100), "2-D"),
        (np.full((100, 2), np.nan), "non-finite value at row 0"),
        (np.zeros((100, 2)), "no channel left"),
    ],
)
def test_bad_training_data(train, msg):
    with pytest.raises(DetectorError, match=msg):
        WindowDetector().fit(train)


def test_bad_settings_and_rows():
    with pytest.raises(DetectorError, match="off <= on"):
        DetectorSettings(on=1.0, off=2.0)
    with pytest.raises(DetectorError, match="window"):
        DetectorSettings(window=1)
    with pytest.raises(DetectorError, match="slow channel"):
        WindowDetector(DetectorSettings(slow=("T",)), channels=["a", "b", "c"]).fit(_data()[:400])
    det = WindowDetector().fit(_data()[:400])
    with pytest.raises(DetectorError, match="2 values"):
        det.update([1.0, 2.0])
    with pytest.raises(DetectorError, match="fit"):
        WindowDetector().update([1.0])


def test_read_skab_errors_name_file_and_line(tmp_path):
    good = "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint\n"
    p = tmp_path / "x.csv"
    p.write_text(good + "2020-01-01 00:00:00;1;2;3;4;5;6;7;8;0;0\n2020-01-01 00:00:01;1;2;oops;4;5;6;7;8;0;0\n")
    with pytest.raises(DetectorError, match=r"x.csv:3: column 'Current'"):
        read_skab(p)
    p.write_text("a;b\n1;2\n")
    with pytest.raises(DetectorError, match=r"x.csv:1: missing SKAB column"):
        read_skab(p)
    p.write_text(good + "2020;1;2\n")
    with pytest.raises(DetectorError, match=r"x.csv:2: 3 fields"):
        read_skab(p)


def test_skab_benchmark_meets_target_on_real_data(shared_data):
    data = shared_data / "skab" / "data"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "skab.py"), "--data", str(data), "--json", "--batch"],
                         capture_output=True, text=True, check=True, timeout=300)
    r = json.loads(out.stdout)
    a = r["detector"]["all"]
    assert r["files"] == 19 and a["rows"] == 13508
    # the target, on all files; and better than the causal T² baseline of the same run
    assert a["f1"] >= 0.80 and a["far"] <= 0.15 and a["mar"] <= 0.25, a
    assert r["f1_vs_t2_ratio"] > 1.0
    # and on the held-out files (settings chosen on valve1 0-7 + the anomaly-free run only)
    h = r["detector"]["held_out"]
    assert h["f1"] >= 0.80 and h["far"] <= 0.15 and h["mar"] <= 0.25, h
    # the allowance was learned from the folder's normal run and beats the plain detector there
    assert r["allowance"]["from"].startswith("learned from") and r["f1_vs_no_allowance_ratio"] > 1.0
    assert r["anomaly_free"]["far"] < r["baseline_no_allowance_anomaly_free"]["far"]


def test_shipped_settings_are_what_the_selection_rule_picks(shared_data):
    """The defaults come from the rule run on the tuning files + the normal run only (bench --sweep)."""
    data = shared_data / "skab" / "data"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "skab.py"), "--data", str(data), "--sweep"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    best = out.splitlines()[1]
    d = DetectorSettings()
    assert f"'on': {d.on}, 'off': {d.off}, 'confirm': {d.confirm}, 'release': {d.release}," in best, out
    assert "'quantile': 0.8, 'divisor': 3.0" in best, out  # learn_allowance's defaults


HEADER = "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint\n"


def test_read_skab_never_fails_other_than_cleanly(tmp_path_factory):
    """Hostile CSV bodies: either parsed or a DetectorError naming file and line."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    d = tmp_path_factory.mktemp("fuzz")
    cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(alphabet="0123456789.;e-+x ", max_size=8))
    line = st.lists(cell, min_size=0, max_size=13).map(";".join)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(line, max_size=6))
    def check(lines):
        p = d / "f.csv"
        p.write_text(HEADER + "\n".join(lines) + "\n")
        try:
            x, y, names = read_skab(p)
        except DetectorError as exc:
            assert "f.csv" in str(exc)
        else:
            assert x.shape[1] == 8 and len(y) == len(x) and len(names) == 8

    check()
