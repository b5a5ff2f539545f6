"""Event-time alignment rules, one test each (telemetry._align)."""

from __future__ import annotations

import numpy as np
import pytest

from twinstage.state import Quality
from twinstage.telemetry import Samples
from twinstage.telemetry._align import ChannelAlign, FeedAlign
from twinstage.telemetry._source_align import Aligner

B, L, S, U, O = Quality.BAD, Quality.LATE, Quality.STALE, Quality.UNCERTAIN, Quality.OVERFLOW


def ch(n=3, rows=(0, 1, 2), mode=None, period=1.0, stale_after=3.0, init=None):
    k = len(rows)
    return ChannelAlign("x", np.array(rows), n, np.zeros(n) if init is None else np.asarray(init, float),
                        mode=mode or ["hold"] * k, period=[period] * k, stale_after=[stale_after] * k)


def put(c, rows, values, t, q=None, reason=""):
    return c.ingest(Samples.make("x", rows, values, t, q, arrival_time=0.0, reason=reason))


def test_hold_takes_the_last_good_sample_at_or_before_the_target():
    c = ch()
    put(c, [0, 0, 0, 1], [1.0, 2.0, 3.0, 7.0], [0.1, 0.2, 0.35, 0.3])
    c.align(0.3)
    assert c.out[0] == 2.0 and c.out[1] == 7.0  # 0.35 is after the target: kept for the next tick
    assert c.quality[0] == 0 and c.quality[2] & S  # row 2 never had a sample: missing → STALE
    c.align(0.4)
    assert c.out[0] == 3.0


def test_missing_rows_keep_their_initial_value_flagged_stale_with_reason():
    c = ch(init=[5.0, 6.0, 7.0])
    c.align(1.0)
    assert list(c.out) == [5.0, 6.0, 7.0]
    assert all(q & S for q in c.quality)
    assert c.reason(0).startswith("missing")
    assert np.isinf(c.age).all()


def test_linear_interpolates_between_the_samples_around_the_target():
    c = ch(rows=(0,), mode=["linear"], n=1)
    put(c, [0, 0], [10.0, 20.0], [1.0, 2.0])
    c.align(1.25)
    assert c.out[0] == pytest.approx(12.5)
    c.align(1.5)
    assert c.out[0] == pytest.approx(15.0)
    c.align(2.5)  # no later sample: hold, never extrapolate
    assert c.out[0] == 20.0


def test_linear_does_not_bridge_a_gap_longer_than_the_stale_limit():
    c = ch(rows=(0,), mode=["linear"], n=1, period=1.0, stale_after=3.0)
    put(c, [0, 0], [10.0, 90.0], [1.0, 9.0])  # 8 s apart > 3 s
    c.align(5.0)
    assert c.out[0] == 10.0 and c.quality[0] & S


def test_mean_averages_the_good_samples_in_the_window_else_holds():
    c = ch(rows=(0,), mode=["mean"], n=1)
    put(c, [0, 0, 0, 0], [1.0, 2.0, 6.0, np.nan], [0.01, 0.05, 0.09, 0.095])
    c.align(0.1)
    assert c.out[0] == pytest.approx(3.0)  # the NaN is not averaged in
    c.align(0.2)
    assert c.out[0] == pytest.approx(3.0)


def test_a_sample_older_than_one_already_applied_is_late_not_applied_and_flagged_once():
    c = ch()
    put(c, [0], [5.0], [1.0])
    c.align(1.0)
    put(c, [0, 1], [4.0, 1.0], [0.5, 1.0])  # row 0 at 0.5 s arrives after 1.0 s was applied
    c.align(1.1)
    assert c.out[0] == 5.0 and c.quality[0] & L and c.counts["late"] == 1
    assert "late" in c.reason(0)
    assert c.out[1] == 1.0 and not c.quality[1] & L
    c.align(1.2)
    assert not c.quality[0] & L  # LATE marks the tick it happened on


def test_samples_out_of_order_before_their_tick_are_reordered_not_late():
    c = ch()
    put(c, [0, 0, 0], [3.0, 1.0, 2.0], [0.3, 0.1, 0.2])
    c.align(0.3)
    assert c.out[0] == 3.0 and not c.quality[0] & L and c.counts["reordered"] > 0


def test_duplicates_last_wins_and_counted():
    c = ch()
    put(c, [0, 0], [1.0, 2.0], [0.5, 0.5])
    put(c, [0], [3.0], [0.5])
    c.align(1.0)
    assert c.out[0] == 3.0 and c.counts["duplicates"] == 2
    put(c, [0], [4.0], [0.5])  # the same event time again after it was applied: a duplicate, not late
    c.align(1.1)
    assert c.out[0] == 4.0 and c.counts["duplicates"] == 3 and not c.quality[0] & L


def test_non_finite_values_are_never_used_previous_good_is_held_and_flagged_bad():
    c = ch()
    put(c, [0], [1.5], [0.1])
    c.align(0.1)
    put(c, [0, 1], [np.inf, np.nan], [0.2, 0.2])
    c.align(0.2)
    assert c.out[0] == 1.5 and c.quality[0] & B
    assert "non-finite" in c.reason(0) and "holding" in c.reason(0)
    assert c.quality[1] & B and c.quality[1] & S  # never good: still missing
    put(c, [0], [2.5], [0.3])
    c.align(0.3)
    assert c.out[0] == 2.5 and not c.quality[0] & B


def test_source_flags_bad_and_uncertain_carry_their_reason():
    c = ch()
    put(c, [0], [9.0], [0.1], q=B, reason="opcua status BadSensorFailure")
    put(c, [1], [2.0], [0.1], q=U, reason="opcua status UncertainLastUsableValue")
    c.align(0.1)
    assert c.quality[0] & B and c.out[0] == 0.0 and "BadSensorFailure" in c.reason(0)
    assert c.quality[1] & U and c.out[1] == 2.0 and "UncertainLastUsable" in c.reason(1)


def test_a_good_sample_before_a_bad_one_in_the_same_tick_is_applied_but_bad_wins_the_flag():
    c = ch()
    put(c, [0, 0], [1.0, np.nan], [0.1, 0.2])
    c.align(0.2)
    assert c.out[0] == 1.0 and c.quality[0] & B


def test_stale_after_period_times_stale_after_and_back_to_good():
    c = ch(period=1.0, stale_after=3.0)
    put(c, [0], [1.0], [0.0])
    c.align(3.0)
    assert not c.quality[0] & S and c.age[0] == 3.0
    c.align(3.1)
    assert c.quality[0] & S and "stale" in c.reason(0)
    put(c, [0], [2.0], [3.2])
    c.align(3.2)
    assert not c.quality[0] & S and c.age[0] == 0.0


def test_unknown_period_uses_the_observed_one():
    c = ch(period=0.0, stale_after=3.0)
    for k in range(5):
        put(c, [0], [float(k)], [k * 0.5])
        c.align(k * 0.5)
    assert c.est_period[0] == pytest.approx(0.5)
    c.align(2.0 + 1.4)
    assert not c.quality[0] & S
    c.align(2.0 + 1.6)
    assert c.quality[0] & S


def test_overflow_flags_the_rows_for_that_tick():
    c = ch()
    c.overflow("x", np.array([1, 2]))
    c.align(0.0)
    assert c.quality[1] & O and c.quality[2] & O and not c.quality[0] & O and c.counts["overflow"] == 2
    assert "overflow" in c.reason(1)
    c.align(0.1)
    assert not c.quality[1] & O


def test_rows_not_fed_here_are_counted_not_applied():
    c = ch(n=5, rows=(1, 3))
    assert put(c, [0, 1, 4, 9, -1], [1.0, 2.0, 3.0, 4.0, 5.0], 0.0) == 4
    c.align(0.0)
    assert c.out[c.lookup[1]] == 2.0 and c.counts["foreign"] == 4


def test_a_burst_of_a_million_samples_is_aligned_vectorised():
    n = 1000
    c = ch(n=n, rows=range(n))
    rng = np.random.default_rng(1)
    rows = rng.integers(0, n, 1_000_000)
    t = rng.random(1_000_000)
    v = rng.random(1_000_000)
    put(c, rows, v, t)
    c.align(1.0)
    o = np.lexsort((t, rows))  # expected: per row, the value at its latest time
    last = np.r_[rows[o][1:] != rows[o][:-1], True]
    expect = np.zeros(n)
    expect[rows[o][last]] = v[o][last]
    assert np.array_equal(c.out, expect)


def test_live_aligner_estimates_the_clock_offset_robustly_and_targets_wall_minus_offset():
    c = ch()
    al = Aligner("live", True, c)
    for k in range(20):  # the source's clock runs 2 s behind arrival (skew + latency)
        al.ingest(Samples.make("x", [0], [float(k)], 100.0 + k, arrival_time=102.0 + k))
    al.ingest(Samples.make("x", [1], [1.0], 100.0, arrival_time=160.0))  # one very slow batch
    assert al.offset == pytest.approx(2.0)
    for k in range(60):
        al.ingest(Samples.make("x", [1], [1.0], 200.0 + k, arrival_time=202.0 + k + (k % 7) * 0.5))  # jittery latency
    al.ingest(Samples.make("x", [1], [1.0], 500.0, arrival_time=300.0))  # one batch from a clock far ahead
    assert al.offset == pytest.approx(2.0)
    assert al.target(sim_time=5.0, wall_time=121.0) == pytest.approx(119.0)
    al.align(5.0, 121.0)
    assert c.out[0] == 19.0 and c.age[0] == pytest.approx(0.0)


def test_replay_aligner_targets_sim_time():
    al = Aligner("r", False, ch())
    assert al.target(sim_time=5.0, wall_time=1e9) == 5.0


def test_one_feed_spans_channels_each_row_keeps_its_own_rule():
    f = FeedAlign([("a", [2, 0], 3, np.zeros(3), ["hold", "mean"], [1.0, 1.0], [3.0, 3.0]),
                   ("b", [1], 2, np.array([0.0, 9.0]), ["linear"], [1.0], [3.0])])
    f.ingest(Samples.make("a", [0, 0, 2], [1.0, 3.0, 5.0], [0.1, 0.2, 0.2]))
    f.ingest(Samples.make("b", [1, 1], [0.0, 10.0], [0.0, 1.0]))
    f.align(0.5)
    assert f.out[f.slices["a"]].tolist() == [2.0, 5.0]  # row 0 mean, row 2 hold (rows in order)
    assert f.out[f.slices["b"]].tolist() == [5.0]  # interpolated
    assert f.ingest(Samples.make("c", [0], [1.0], [0.0])) == 1  # a channel it does not feed


@pytest.mark.parametrize("seed", range(4))
def test_the_dense_fast_path_and_the_general_path_agree(seed):
    """A replay source re-sends one rows array (contiguous slices, no gathers); the same samples
    shuffled take the general path. Values, flags, reasons and counts must be the same."""
    rng = np.random.default_rng(seed)
    n = 50
    rows = np.arange(n)
    a = FeedAlign([("x", rows, n, np.zeros(n), ["hold"] * n, [0.1] * n, [3.0] * n)])
    b = FeedAlign([("x", rows, n, np.zeros(n), ["hold"] * n, [0.1] * n, [3.0] * n)])
    for k in range(30):
        t = np.full(n, k * 0.1)
        v = rng.normal(size=n)
        v[rng.random(n) < 0.1] = np.nan
        q = np.where(rng.random(n) < 0.1, U, 0).astype(np.uint8) | np.where(rng.random(n) < 0.05, B, 0).astype(np.uint8)
        keep = rng.random(n) < 0.9 if k % 7 == 3 else np.ones(n, bool)  # now and then a partial batch
        ra = rows if keep.all() else rows[keep]
        a.ingest(Samples("x", ra, v[keep], t[keep], q[keep], 0.0, "s", "why"))
        o = rng.permutation(np.flatnonzero(keep))
        b.ingest(Samples("x", rows[o].copy(), v[o], t[o], q[o], 0.0, "s", "why"))
        a.align(k * 0.1 + 0.05)
        b.align(k * 0.1 + 0.05)
        assert np.array_equal(a.out, b.out, equal_nan=True) and np.array_equal(a.quality, b.quality), k
        assert [a.reason(i) for i in range(n)] == [b.reason(i) for i in range(n)], k
    for key in ("applied", "bad", "late", "duplicates"):
        assert a.counts[key] == b.counts[key], key


# -- hypothesis: the vectorised rules against a plain-Python reference (hold) ----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sample = st.tuples(st.integers(0, 3), st.integers(0, 12), st.one_of(st.floats(-5, 5), st.just(float("nan"))))
ticks = st.lists(st.lists(st.lists(sample, max_size=6), max_size=3), min_size=1, max_size=5)  # ticks → batches → samples


def reference(plan, n=4):
    """Hold, one sample at a time, in arrival order, as the module docstring says."""
    held, t_good, t_seen, bad = [0.0] * n, [-np.inf] * n, [-np.inf] * n, [False] * n
    pending, out = [], []
    for k, batches in enumerate(plan):
        target = k * 2.0 + 1.0
        arrived = pending + [(r, t / 2.0, v) for b in batches for r, t, v in b]
        late = [False] * n
        keep = []
        for r, t, v in arrived:
            if t < t_seen[r]:
                late[r] = True
            else:
                keep.append((r, t, v))
        due = [(r, t, v) for r, t, v in keep if t <= target]
        pending = [(r, t, v) for r, t, v in keep if t > target]
        for r in range(n):
            mine = [(t, i, v) for i, (rr, t, v) in enumerate(due) if rr == r]
            if not mine:
                continue
            by_t = {}
            for t, i, v in sorted(mine):
                by_t[t] = v  # same event time: the last to arrive wins
            last_t = max(by_t)
            t_seen[r] = last_t
            goods = [t for t, v in by_t.items() if np.isfinite(v)]
            bad[r] = not np.isfinite(by_t[last_t])
            if goods:
                held[r], t_good[r] = by_t[max(goods)], max(goods)
        out.append((list(held), [bool(b) for b in bad], late))
    return out


@settings(max_examples=150, deadline=None)
@given(plan=ticks)
def test_hold_matches_a_plain_python_reference(plan):
    c = ch(n=4, rows=(0, 1, 2, 3), period=0.0)
    for k, (batches, (held, bad, late)) in enumerate(zip(plan, reference(plan))):
        for b in batches:
            if b:
                put(c, [r for r, _, _ in b], [v for _, _, v in b], [t / 2.0 for _, t, _ in b])
        c.align(k * 2.0 + 1.0)
        assert c.out.tolist() == held, (k, plan)
        assert [bool(q & B) for q in c.quality] == bad, (k, plan)
        assert [bool(q & L) for q in c.quality] == late, (k, plan)
