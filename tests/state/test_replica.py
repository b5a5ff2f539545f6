"""The one state mirror (twinstage.state.Replica): frames, flat snapshots/deltas, dirty rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from twinstage.state import Change, Declaration, Frame, Replica, StateTable

PRIMS = [f"/W/M{i}" for i in range(6)]


def _table() -> StateTable:
    decls = []
    for i, p in enumerate(PRIMS):
        decls.append(Declaration(p, "temperature", "float", 20.0 + i, unit="degC"))
        if i % 2 == 0:
            decls.append(Declaration(p, "count", "int", i))
            decls.append(Declaration(p, "pos", "vec3", (i, 0.0, 0.0), unit="m"))
        decls.append(Declaration(p, "on", "bool", False))
    return StateTable(PRIMS, decls)


def _change(table: StateTable, name: str, rows: list[int], seed: int) -> Change:
    rng = np.random.default_rng(seed)
    rows_a = np.array(sorted(set(rows)), dtype=np.int32)
    kind = table.channels[name].type
    if kind == "vec3":
        vals = rng.normal(size=(len(rows_a), 3))
    elif kind == "int":
        vals = rng.integers(-1000, 1000, size=len(rows_a)).astype(np.int64)
    elif kind == "bool":
        vals = rng.integers(0, 2, size=len(rows_a)).astype(bool)
    else:
        vals = rng.normal(size=len(rows_a))
    q = rng.integers(0, 64, size=len(rows_a)).astype(np.uint8)
    return Change.make(rows_a, vals, q)


@st.composite
def frames(draw):
    table = _table()
    out = []
    n = draw(st.integers(1, 12))
    for t in range(1, n + 1):
        changes = {}
        for name, ch in table.channels.items():
            rows = draw(st.lists(st.integers(0, len(ch) - 1), max_size=len(ch)))
            if rows:
                changes[name] = _change(table, name, rows, draw(st.integers(0, 2**31)))
        out.append(Frame.make(t, t * 0.1, 1000.0 + t, changes))
    return out


def _replay(table: StateTable, fs: list[Frame]) -> StateTable:
    """The 'final table': the frames written straight into a fresh table's arrays."""
    for f in fs:
        for name, c in f.changes.items():
            table[name][c.rows] = c.values
            table.quality(name)[c.rows] = c.quality
    return table


def _same(rep: Replica, table: StateTable) -> None:
    for name in table.channels:
        np.testing.assert_array_equal(rep.values[name], table[name], err_msg=name)
        np.testing.assert_array_equal(rep.quality[name], table.quality(name), err_msg=name)


@settings(max_examples=60, deadline=None)
@given(frames())
def test_applying_frames_equals_final_table(fs):
    rep = Replica.from_table(_table())
    for f in fs:
        rep.apply(f)
    _same(rep, _replay(_table(), fs))
    assert rep.tick == fs[-1].tick and rep.sim_time == fs[-1].sim_time


def _flat(table: StateTable, f: Frame):
    """A Frame in the bridge's flat numbering (what a delta message carries)."""
    si, sv, sq, vi, vv, vq = [], [], [], [], [], []
    for name, c in f.changes.items():
        off = table.channels[name].offset
        if table.channels[name].type == "vec3":
            vi += (c.rows + off).tolist(); vv += c.values.tolist(); vq += c.quality.tolist()
        else:
            si += (c.rows + off).tolist(); sv += c.values.astype(float).tolist(); sq += c.quality.tolist()
    return si, sv, sq, vi, vv, vq


@settings(max_examples=60, deadline=None)
@given(frames(), st.data())
def test_snapshot_then_deltas_equals_full_replay(fs, data):
    """A client that joins at frame k (snapshot of the server replica) and applies the flat
    deltas after it ends equal to the server's replica that saw every frame."""
    k = data.draw(st.integers(0, len(fs)))
    server = Replica.from_table(_table())
    for f in fs[:k]:
        server.apply(f)
    client = Replica({n: (lay.offset, lay.length, lay.type) for n, lay in server.layout.items()})
    client.apply_snapshot(k, k, 0.0, 0.0, *server.flat())
    for seq, f in enumerate(fs[k:], start=k + 1):
        server.apply(f, seq)
        client.apply_delta(seq, f.tick, f.sim_time, f.wall_time, *_flat(_table(), f))
    for name in server.layout:
        np.testing.assert_array_equal(client.values[name], server.values[name], err_msg=name)
        np.testing.assert_array_equal(client.quality[name], server.quality[name], err_msg=name)
        assert client.known[name].all()
    _same(client, _replay(_table(), fs))
    assert client.seq == len(fs) and client.gaps == 0


@settings(max_examples=40, deadline=None)
@given(frames())
def test_dirty_rows_are_exactly_the_changed_rows(fs):
    rep = Replica.from_table(_table(), track_dirty=True)
    expect: dict[str, set[int]] = {}
    for f in fs:
        rep.apply(f)
        for name, c in f.changes.items():
            expect.setdefault(name, set()).update(c.rows.tolist())
    got = {k: v.tolist() for k, v in rep.take_dirty().items()}
    assert got == {k: sorted(v) for k, v in expect.items()}
    assert rep.take_dirty() == {}


def test_snapshot_resets_known_rows_and_delta_gaps_are_counted():
    rep = Replica.from_attributes([{"index": 0, "attribute": "t", "type": "float"}, {"index": 1, "attribute": "t", "type": "float"},
                                   {"index": 2, "attribute": "p", "type": "vec3"}])
    rep.apply_snapshot(5, 5, 0.5, 0.0, [0, 1], [1.0, 2.0], [0, 0], [2], [[1, 2, 3]], [4])
    assert rep.known["t"].all() and rep.value("p", 0) == [1.0, 2.0, 3.0] and rep.quality["p"][0] == 4
    rep.apply_snapshot(6, 6, 0.6, 0.0, [1], [9.0], [0])
    assert rep.known["t"].tolist() == [False, True] and not rep.known["p"].any()
    rep.apply_delta(9, 9, 0.9, 0.0, [0], [3.0], [1])
    assert rep.gaps == 1 and rep.seq == 9 and rep.values["t"].tolist() == [3.0, 9.0]
    assert rep.locate(2) == ("p", 0)


def test_bad_input_is_rejected_with_the_entry_named():
    rep = Replica.from_attributes([{"index": 0, "attribute": "t", "type": "float"}, {"index": 1, "attribute": "p", "type": "vec3"}])
    with pytest.raises(IndexError, match="entry 7"):
        rep.apply_delta(1, 1, 0, 0, [7], [1.0], [0])
    with pytest.raises(ValueError, match="'p'"):
        rep.apply_delta(1, 1, 0, 0, [1], [1.0], [0])
    with pytest.raises(ValueError, match="2 indices but 1 values"):
        rep.apply_delta(1, 1, 0, 0, [0, 0], [1.0], [0, 0])
    with pytest.raises(ValueError, match="contiguous"):
        Replica.from_attributes([{"index": 0, "attribute": "t", "type": "float"}, {"index": 2, "attribute": "t", "type": "float"}])
    with pytest.raises(ValueError, match="unknown channel type"):
        Replica({"x": (0, 1, "quaternion")})
