"""Declarations as columns (DeclarationColumns): the tuple they read as, and the table built from them."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstage.state import Declaration, DeclarationColumns, StateError, StateTable

T_X = ("x", "float", "degC", 0.0, 100.0, "input", "xformOp:translate", "probe")
T_Y = ("y", "int", "", -math.inf, math.inf, "state", "", "")
T_P = ("p", "vec3", "m", -math.inf, math.inf, "state", "", "")


def _cols() -> DeclarationColumns:
    return DeclarationColumns([T_X, T_Y, T_P], ["/a", "/b"], [1, 0, 0, 1], [0, 0, 1, 2], [2.0, 3.0, 7, (1.0, 2.0, 3.0)])


def _want() -> tuple[Declaration, ...]:
    return (Declaration("/b", *T_X[:2], 2.0, *T_X[2:]), Declaration("/a", *T_X[:2], 3.0, *T_X[2:]),
            Declaration("/a", *T_Y[:2], 7, *T_Y[2:]), Declaration("/b", *T_P[:2], (1.0, 2.0, 3.0), *T_P[2:]))


def test_columns_read_like_the_tuple_of_declarations():
    c, want = _cols(), _want()
    assert len(c) == 4
    assert c[0] == want[0] and c[-1] == want[-1] and c[2] == want[2]
    assert c[1:3] == want[1:3] and c[::-1] == want[::-1] and c[5:] == ()
    assert list(c) == list(want)
    assert c == want and want == c and c == _cols() and c != want[:3] and c != list(want)
    assert hash(c) == hash(want)
    assert pickle.loads(pickle.dumps(c)) == want
    assert c.index(want[2]) == 2 and want[3] in c
    assert "4 declarations" in repr(c)
    for bad in (4, -5):
        with pytest.raises(IndexError, match="out of range"):
            c[bad]


def test_columns_check_their_shape():
    with pytest.raises(ValueError, match="differ in length"):
        DeclarationColumns([T_X], ["/a"], [0, 0], [0], [1.0, 2.0])
    with pytest.raises(ValueError, match="prim index"):
        DeclarationColumns([T_X], ["/a"], [1], [0], [1.0])
    with pytest.raises(ValueError, match="template index"):
        DeclarationColumns([T_X], ["/a"], [0], [-1], [1.0])
    assert len(DeclarationColumns([], [], [], [], [])) == 0


def _channels(table: StateTable) -> dict:
    out = {}
    for name, ch in table.channels.items():
        out[name] = (ch.type, ch.unit, ch.prim_index.tolist(), ch.lo.tolist(), ch.hi.tolist(), ch.role.tolist(), ch.drives,
                     ch.description, ch.offset, table[name].tolist(), table[name].dtype.str, table.quality(name).tolist())
    return out


def _reference(prims: list[str], decls: list[Declaration]) -> dict:
    """What the table must hold, built declaration by declaration."""
    index = {p: i for i, p in enumerate(prims)}
    out, offset = {}, 0
    for name in sorted({d.name for d in decls}):
        rows = sorted((index[d.prim], d) for d in decls if d.name == name)
        first = rows[0][1]
        kind = {"float": "<f8", "int": "<i8", "bool": "|b1", "vec3": "<f8"}[first.type]
        vals = [list(map(float, d.value)) if first.type == "vec3" else d.value for _, d in rows]
        out[name] = (first.type, first.unit, [i for i, _ in rows], [float(d.min) for _, d in rows], [float(d.max) for _, d in rows],
                     [d.role for _, d in rows], tuple(d.drives for _, d in rows), tuple(d.description for _, d in rows), offset,
                     vals, kind, [0] * len(rows))
        offset += len(rows)
    return out


_VALUE = {"float": st.floats(-1e6, 1e6), "int": st.integers(-(2**40), 2**40), "bool": st.booleans(),
          "vec3": st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))}


@st.composite
def _scene(draw):
    """Prims, declarations (one type and unit per name, metadata varying per prim) in a random order."""
    prims = [f"/W/P{i}" for i in range(draw(st.integers(1, 12)))]
    decls = []
    for name in draw(st.lists(st.sampled_from(["t", "p", "q", "pos", "on"]), unique=True, max_size=4)):
        kind = draw(st.sampled_from(sorted(_VALUE)))
        unit = draw(st.sampled_from(["", "degC", "bar"]))
        for prim in draw(st.lists(st.sampled_from(prims), unique=True, min_size=1)):
            lo = draw(st.sampled_from([-math.inf, 0.0, -5.0]))
            decls.append(Declaration(prim, name, kind, draw(_VALUE[kind]), unit, lo, draw(st.sampled_from([math.inf, 10.0])),
                                     draw(st.sampled_from(["state", "measured"])), draw(st.sampled_from(["", "xformOp:translate"])),
                                     draw(st.sampled_from(["", "a probe"]))))
    return prims, draw(st.permutations(decls))


def _as_columns(decls: list[Declaration], prims: list[str]) -> DeclarationColumns:
    """The declarations as columns over ``prims`` (any order), one template per declaration."""
    at = {p: i for i, p in enumerate(prims)}
    templates = [(d.name, d.type, d.unit, d.min, d.max, d.role, d.drives, d.description) for d in decls]
    return DeclarationColumns(templates, prims, [at[d.prim] for d in decls], range(len(decls)), [d.value for d in decls])


@settings(max_examples=120, deadline=None)
@given(scene=_scene(), shuffle=st.randoms(use_true_random=False))
def test_table_from_columns_equals_the_table_from_objects(scene, shuffle):
    prims, decls = scene
    want = _reference(prims, decls)
    assert _channels(StateTable(prims, decls)) == want
    other = list(prims)
    shuffle.shuffle(other)  # columns over another prim order: mapped through the table's prims
    cols = _as_columns(decls, other)
    assert cols == tuple(decls)
    assert _channels(StateTable(prims, cols)) == want
    assert _channels(StateTable(prims, _as_columns(decls, prims))) == want


def _both(prims, decls):
    """The StateError text from objects and from columns (they must agree)."""
    msgs = []
    for given_ in (decls, _as_columns(decls, sorted({d.prim for d in decls} | set(prims)))):
        with pytest.raises(StateError) as exc:
            StateTable(prims, given_)
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]
    return msgs[0]


def test_columns_give_the_same_build_errors():
    a, b = Declaration("/a", "t", "float", 1.0, "degC"), Declaration("/b", "t", "int", 1, "degC")
    assert "is float on /a but int on /b" in _both(["/a", "/b"], [b, a])
    assert "is in 'degC' on /a but 'K' on /b" in _both(["/a", "/b"], [Declaration("/b", "t", "float", 1.0, "K"), a])
    assert "declared twice on one prim" in _both(["/a", "/b"], [a, Declaration("/a", "t", "float", 2.0, "degC")])
    assert "/z: declaration for a prim that is not in the table" in _both(["/a"], [a, Declaration("/z", "t", "float", 1.0, "degC")])


def test_a_huge_int_is_refused_like_the_objects_refuse_it():
    d = Declaration("/a", "n", "int", 2**70)
    for given_ in ([d], _as_columns([d], ["/a"])):
        with pytest.raises(OverflowError):
            StateTable(["/a"], given_)
