"""StateTable and Frame: layout, lookups, validation, diffs, sanitising."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstage.state import Change, Declaration, Frame, Quality, StateError, StateTable

PRIMS = ["/W/A", "/W/B", "/W/C", "/W/D"]


def _decls() -> list[Declaration]:
    # deliberately not in stage order, and channels not in name order
    return [
        Declaration("/W/C", "temperature", "float", 30.0, "degC", -50.0, 400.0),
        Declaration("/W/B", "pressure", "float", 1.5, "bar", 0.0, 10.0),
        Declaration("/W/A", "temperature", "float", 10.0, "degC", -50.0, 400.0),
        Declaration("/W/A", "position", "vec3", (1.0, 2.0, 3.0), "m"),
        Declaration("/W/D", "position", "vec3", (4.0, 5.0, 6.0), "m"),
        Declaration("/W/B", "count", "int", 3, "1", 0, 100),
        Declaration("/W/C", "running", "bool", True, "1"),
        Declaration("/W/D", "temperature", "float", 40.0, "degC", -50.0, 400.0, role="measured", drives="", description="probe"),
    ]


@pytest.fixture
def table() -> StateTable:
    return StateTable(PRIMS, _decls())


# -- layout -------------------------------------------------------------------------


def test_channels_grouped_by_name_with_rows_in_stage_order(table):
    assert list(table.channels) == ["count", "position", "pressure", "running", "temperature"]
    ch = table.channels["temperature"]
    assert ch.type == "float" and ch.unit == "degC"
    assert [table.prims[i] for i in ch.prim_index] == ["/W/A", "/W/C", "/W/D"]
    np.testing.assert_array_equal(table["temperature"], [10.0, 30.0, 40.0])
    assert table["temperature"].dtype == np.float64
    assert table["count"].dtype == np.int64
    assert table["running"].dtype == np.bool_
    assert table["position"].shape == (2, 3) and table["position"].dtype == np.float64
    np.testing.assert_array_equal(table["position"], [[1, 2, 3], [4, 5, 6]])
    assert list(ch.role) == ["state", "state", "measured"]
    assert ch.description == ("", "", "probe")
    assert len(ch) == 3
    assert "temperature" in table and "nope" not in table


def test_flat_entry_offsets_are_contiguous(table):
    offset = 0
    for name, ch in table.channels.items():
        assert ch.offset == offset, name
        offset += len(ch)
    assert table.n_entries == offset == 8


def test_entry_and_entry_table_agree(table):
    records = table.entry_table()
    assert [r["index"] for r in records] == list(range(table.n_entries))
    for r in records:
        assert table.entry(r["index"]) == (r["prim"], r["attribute"])
        ch = table.channels[r["attribute"]]
        assert r["type"] == ch.type and r["unit"] == ch.unit
        assert ch.offset + table.row(r["prim"], r["attribute"]) == r["index"]
    assert records[0] == {"index": 0, "prim": "/W/B", "attribute": "count", "type": "int", "unit": "1"}
    assert table.entry(table.n_entries - 1) == ("/W/D", "temperature")
    for bad in (-1, table.n_entries, 10**6):
        with pytest.raises(StateError, match="out of range"):
            table.entry(bad)


def test_row_get_and_attributes(table):
    assert table.row("/W/A", "temperature") == 0
    assert table.row("/W/D", "temperature") == 2
    assert table.row("/W/D", "position") == 1
    assert table.get("/W/C", "temperature") == 30.0
    assert isinstance(table.get("/W/C", "temperature"), float)
    assert table.get("/W/B", "count") == 3 and isinstance(table.get("/W/B", "count"), int)
    assert table.get("/W/C", "running") is True
    assert table.get("/W/D", "position") == (4.0, 5.0, 6.0)
    assert sorted(table.attributes("/W/A")) == ["position", "temperature"]


def test_rows_vectorised_lookup(table):
    np.testing.assert_array_equal(table.rows("temperature", [3, 0, 2]), [2, 0, 1])
    np.testing.assert_array_equal(table.rows("temperature", np.array([], dtype=np.int32)), [])
    with pytest.raises(StateError, match="/W/B"):
        table.rows("temperature", [0, 1])
    with pytest.raises(StateError, match="nope"):
        table.rows("nope", [0])


def test_unknown_prim_and_attribute_errors_name_them(table):
    with pytest.raises(StateError, match="/W/Z"):
        table.row("/W/Z", "temperature")
    with pytest.raises(StateError) as exc:
        table.row("/W/B", "temperature")  # exists, but not on /W/B
    assert "/W/B" in str(exc.value) and "temperature" in str(exc.value)
    with pytest.raises(StateError) as exc:
        table.get("/W/A", "humidity")  # no prim has it
    assert "/W/A" in str(exc.value) and "humidity" in str(exc.value)
    with pytest.raises(StateError, match="humidity"):
        table["humidity"]
    with pytest.raises(StateError, match="/W/Z"):
        table.attributes("/W/Z")


# -- building errors ---------------------------------------------------------------


def test_type_conflict_names_both_prims():
    decls = [Declaration("/W/A", "level", "float", 1.0, "m"), Declaration("/W/C", "level", "int", 1, "m")]
    with pytest.raises(StateError) as exc:
        StateTable(PRIMS, decls)
    msg = str(exc.value)
    assert "/W/A" in msg and "/W/C" in msg and "level" in msg


def test_unit_conflict_names_both_prims():
    decls = [Declaration("/W/D", "temperature", "float", 1.0, "K"), Declaration("/W/B", "temperature", "float", 1.0, "degC")]
    with pytest.raises(StateError) as exc:
        StateTable(PRIMS, decls)
    msg = str(exc.value)
    assert "/W/B" in msg and "/W/D" in msg and "'K'" in msg and "'degC'" in msg


def test_other_build_errors():
    with pytest.raises(StateError, match="duplicate"):
        StateTable(["/W/A", "/W/A"], [])
    with pytest.raises(StateError, match="/W/Q"):
        StateTable(PRIMS, [Declaration("/W/Q", "x", "float", 1.0, "m")])
    with pytest.raises(StateError, match="twice"):
        StateTable(PRIMS, [Declaration("/W/A", "x", "float", 1.0, "m"), Declaration("/W/A", "x", "float", 2.0, "m")])


# -- validation -------------------------------------------------------------------------

INVALID = [
    ("/W/A", "temperature", "20", "number"),
    ("/W/A", "temperature", None, "number"),
    ("/W/A", "temperature", True, "number"),
    ("/W/A", "temperature", np.bool_(False), "number"),
    ("/W/A", "temperature", [1.0], "number"),
    ("/W/A", "temperature", math.nan, "finite"),
    ("/W/A", "temperature", math.inf, "finite"),
    ("/W/A", "temperature", -math.inf, "finite"),
    ("/W/A", "temperature", np.float64("nan"), "finite"),
    ("/W/A", "temperature", 400.5, "limits"),
    ("/W/A", "temperature", -51, "limits"),
    ("/W/A", "temperature", 10**400, "too large"),
    ("/W/B", "count", 1.5, "integer"),
    ("/W/B", "count", "3", "integer"),
    ("/W/B", "count", True, "integer"),
    ("/W/B", "count", math.nan, "integer"),
    ("/W/B", "count", math.inf, "integer"),
    ("/W/B", "count", 101, "limits"),
    ("/W/B", "count", -1, "limits"),
    ("/W/C", "running", 1, "bool"),
    ("/W/C", "running", "true", "bool"),
    ("/W/C", "running", None, "bool"),
    ("/W/D", "position", (1.0, 2.0), "3 numbers"),
    ("/W/D", "position", (1.0, 2.0, 3.0, 4.0), "3 numbers"),
    ("/W/D", "position", 5.0, "3 numbers"),
    ("/W/D", "position", None, "3 numbers"),
    ("/W/D", "position", "123", "3 numbers"),
    ("/W/D", "position", ("1", "2", "3"), "3 numbers"),
    ("/W/D", "position", (True, 0.0, 0.0), "3 numbers"),
    ("/W/D", "position", [[1.0, 2.0, 3.0]], "3 numbers"),
    ("/W/D", "position", np.zeros((3, 1)), "3 numbers"),
    ("/W/D", "position", np.zeros((1, 3)), "3 numbers"),
    ("/W/D", "position", {1: 0.0, 2: 0.0, 3: 0.0}, "3 numbers"),
    ("/W/D", "position", (1.0, math.nan, 3.0), "finite"),
    ("/W/D", "position", (1.0, 2.0, math.inf), "finite"),
]


@pytest.mark.parametrize("prim, name, value, why", INVALID, ids=[f"{n}-{v!r}"[:40] for _, n, v, _ in INVALID])
def test_validate_rejects_and_names_prim_and_attribute(table, prim, name, value, why):
    before = table.snapshot()
    with pytest.raises(StateError) as exc:
        table.validate(prim, name, value)
    msg = str(exc.value)
    assert f"{prim}.twin:{name}" in msg
    assert why in msg
    after = table.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_int_beyond_int64_rejected_even_without_limits():
    t = StateTable(["/P"], [Declaration("/P", "n", "int", 0, "1")])
    with pytest.raises(StateError, match="64-bit"):
        t.validate("/P", "n", 2**63)
    with pytest.raises(StateError, match="64-bit"):
        t.validate("/P", "n", -(2**63) - 1)
    assert t.validate("/P", "n", 2**63 - 1) == 2**63 - 1
    assert t.validate("/P", "n", -(2**63)) == -(2**63)


@pytest.mark.parametrize(
    "prim, name, value, stored",
    [
        ("/W/A", "temperature", 0, 0.0),  # JSON-style integer for a float
        ("/W/A", "temperature", 21, 21.0),
        ("/W/A", "temperature", np.float32(2.5), 2.5),
        ("/W/A", "temperature", np.int64(7), 7.0),
        ("/W/A", "temperature", 400.0, 400.0),  # limits are inclusive
        ("/W/A", "temperature", -50, -50.0),
        ("/W/B", "count", 7, 7),
        ("/W/B", "count", 7.0, 7),  # an integral float is an integer (JSON has one number type)
        ("/W/B", "count", np.int32(100), 100),
        ("/W/C", "running", False, False),
        ("/W/C", "running", np.bool_(True), True),
    ],
)
def test_validate_accepts(table, prim, name, value, stored):
    v = table.validate(prim, name, value)
    assert v == stored
    assert type(v) is type(stored)


@pytest.mark.parametrize("value", [(1, 2, 3), [1.0, 2.0, 3.0], np.array([1.0, 2.0, 3.0]), (np.float32(1), np.int64(2), 3.0)])
def test_validate_accepts_vec3(table, value):
    v = table.validate("/W/D", "position", value)
    np.testing.assert_array_equal(v, [1.0, 2.0, 3.0])
    assert np.asarray(v).shape == (3,)


def test_validate_vec3_accepts_gf_vector(table):
    from pxr import Gf

    np.testing.assert_array_equal(table.validate("/W/D", "position", Gf.Vec3d(1, 2, 3)), [1.0, 2.0, 3.0])


# -- diff / Frame -------------------------------------------------------------------------


def test_diff_without_changes_is_empty(table):
    f = table.diff(1, 0.1, 1234.5)
    assert isinstance(f, Frame)
    assert (f.tick, f.sim_time, f.wall_time) == (1, 0.1, 1234.5)
    assert dict(f.changes) == {} and f.n_changed == 0


def test_diff_yields_only_changed_rows(table):
    table["temperature"][2] = 41.0
    table["position"][0, 1] = -2.0
    table["count"][0] = 4
    table["temperature"][0] = 10.0  # same value: not a change
    f = table.diff(1, 0.1, 0.0)
    assert set(f.changes) == {"temperature", "position", "count"}
    t = f.changes["temperature"]
    np.testing.assert_array_equal(t.rows, [2])
    np.testing.assert_array_equal(t.values, [41.0])
    np.testing.assert_array_equal(t.quality, [0])
    p = f.changes["position"]
    np.testing.assert_array_equal(p.rows, [0])
    np.testing.assert_array_equal(p.values, [[1.0, -2.0, 3.0]])
    assert f.n_changed == 3
    assert sorted(f.items()) == [("count", 0, 4, 0), ("position", 0, [1.0, -2.0, 3.0], 0), ("temperature", 2, 41.0, 0)]
    # remembered: the next diff is empty
    assert table.diff(2, 0.2, 0.0).n_changed == 0


def test_diff_includes_quality_changes(table):
    table.quality("pressure")[0] = Quality.STALE
    f = table.diff(1, 0.1, 0.0)
    assert set(f.changes) == {"pressure"}
    c = f.changes["pressure"]
    np.testing.assert_array_equal(c.rows, [0])
    np.testing.assert_array_equal(c.values, [1.5])
    assert c.quality.tolist() == [int(Quality.STALE)]
    assert table.diff(2, 0.2, 0.0).n_changed == 0
    table.quality("pressure")[0] = Quality.GOOD  # cleared: a change too
    c = table.diff(3, 0.3, 0.0).changes["pressure"]
    assert c.quality.tolist() == [0]


def test_frame_is_immutable_and_detached(table):
    table["temperature"][:] = [11.0, 31.0, 41.0]
    f = table.diff(1, 0.1, 0.0)
    c = f.changes["temperature"]
    for arr in (c.rows, c.values, c.quality):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0
    with pytest.raises(TypeError):
        f.changes["temperature"] = c  # type: ignore[index]
    with pytest.raises(TypeError):
        del f.changes["temperature"]  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.tick = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.values = np.zeros(3)  # type: ignore[misc]
    # later table changes do not reach an earlier Frame
    table["temperature"][:] = -1.0
    table.quality("temperature")[:] = Quality.BAD
    table.diff(2, 0.2, 0.0)
    np.testing.assert_array_equal(c.values, [11.0, 31.0, 41.0])
    np.testing.assert_array_equal(c.quality, [0, 0, 0])


def test_change_make_freezes_arrays():
    c = Change.make(np.array([0, 2]), np.array([1.0, 2.0]), np.array([0, 16]))
    assert len(c) == 2 and c.rows.dtype == np.int32 and c.quality.dtype == np.uint8
    assert not c.values.flags.writeable


# -- sanitize -------------------------------------------------------------------------------


def test_sanitize_restores_previous_values_and_flags_bad(table):
    table["temperature"][:] = [12.0, 32.0, 42.0]
    table["position"][1] = [7.0, 8.0, 9.0]
    table.diff(1, 0.1, 0.0)  # accepted state
    table["temperature"][:] = [np.nan, 33.0, np.inf]
    table["position"][1] = [7.5, np.nan, 9.5]
    table["position"][0] = [0.0, 0.0, 0.0]
    hit = table.sanitize()
    assert sorted(hit) == ["position", "temperature"]
    np.testing.assert_array_equal(table["temperature"], [12.0, 33.0, 42.0])
    np.testing.assert_array_equal(table["position"], [[0.0, 0.0, 0.0], [7.0, 8.0, 9.0]])
    assert table.quality("temperature").tolist() == [Quality.BAD, 0, Quality.BAD]
    assert table.quality("position").tolist() == [0, Quality.BAD]
    f = table.diff(2, 0.2, 0.0)
    # rows 0 and 2 changed only in quality, row 1 in value
    assert f.changes["temperature"].rows.tolist() == [0, 1, 2]
    assert f.changes["temperature"].quality.tolist() == [16, 0, 16]
    assert not np.isnan(f.changes["temperature"].values).any()


def test_sanitize_keeps_other_flags_and_clears_bad_on_recovery(table):
    table.quality("temperature")[0] = Quality.OUT_OF_RANGE
    table["temperature"][0] = np.nan
    assert table.sanitize() == ["temperature"]
    assert table.quality("temperature")[0] == Quality.OUT_OF_RANGE | Quality.BAD
    table.diff(1, 0.1, 0.0)
    table["temperature"][0] = 15.0  # the model recovered
    assert table.sanitize() == []
    assert table.quality("temperature")[0] == Quality.OUT_OF_RANGE
    assert table.get("/W/A", "temperature") == 15.0


def test_sanitize_on_clean_state_changes_nothing(table):
    before = table.snapshot()
    assert table.sanitize() == []
    assert all(np.array_equal(before[k], v) for k, v in table.snapshot().items())
    assert all(not table.quality(n).any() for n in table.channels)


def test_snapshot_is_a_copy(table):
    snap = table.snapshot()
    snap["temperature"][0] = 999.0
    assert table.get("/W/A", "temperature") == 10.0


# -- property: invalid input never corrupts accepted state -----------------------------------------

_any_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-10, 10), st.booleans()), max_size=4),
    st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
)
_targets = st.sampled_from([(p, n) for p in PRIMS for n in ("temperature", "pressure", "count", "running", "position", "humidity")] + [("/W/Z", "temperature")])


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(_targets, _any_value, st.booleans()), max_size=40))
def test_random_sets_never_corrupt_accepted_state(ops):
    table = StateTable(PRIMS, _decls())
    model = {(p, n): table.get(p, n) for p in PRIMS for n in table.attributes(p)}
    tick = 0
    for (prim, name), value, do_diff in ops:
        try:
            v = table.validate(prim, name, value)
        except StateError as exc:
            assert prim in str(exc)  # every rejection names the prim
        else:
            # what a tick does with an accepted value
            table[name][table.row(prim, name)] = v
            model[(prim, name)] = table.get(prim, name)
        if do_diff:
            assert table.sanitize() == []  # nothing invalid ever got in
            tick += 1
            table.diff(tick, tick * 0.1, 0.0)
        for (p, n), expected in model.items():
            assert table.get(p, n) == expected
    for name in table.channels:
        assert not table.quality(name).any()
        if table.channels[name].type in ("float", "vec3"):
            assert np.isfinite(table[name]).all()
        ch = table.channels[name]
        if ch.type in ("float", "int"):
            assert ((table[name] >= ch.lo) & (table[name] <= ch.hi)).all()


def test_fast_declaration_builders_make_the_same_objects():
    import dataclasses
    import pickle

    from twinstage.state._decls import declaration_maker, make_declarations

    want = [Declaration("/a", "x", "float", 2.0, "degC", 0.0, 1.0, "input", "xformOp:translate", "d"),
            Declaration("/b", "x", "float", 3.0, "degC", 0.0, 1.0, "input", "xformOp:translate", "d")]
    template = ("x", "float", "degC", 0.0, 1.0, "input", "xformOp:translate", "d")
    for got in ([declaration_maker(*template)(d.prim, d.value) for d in want],
                make_declarations([("y", "int", "", 0.0, 1.0, "state", "", ""), template], ["/a", "/b"], [0, 1], [1, 1], [2.0, 3.0])):
        assert got == want
        assert [hash(d) for d in got] == [hash(d) for d in want]
        assert [repr(d) for d in got] == [repr(d) for d in want]
        assert pickle.loads(pickle.dumps(got)) == want
        assert [dataclasses.asdict(d) for d in got] == [dataclasses.asdict(d) for d in want]
        with pytest.raises(dataclasses.FrozenInstanceError):
            got[0].value = 5.0
    table = StateTable(["/a", "/b"], make_declarations([template], ["/a", "/b"], [1, 0], [0, 0], [3.0, 2.0]))
    assert table["x"].tolist() == [2.0, 3.0] and table.row("/b", "x") == 1
