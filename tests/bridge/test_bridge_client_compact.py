"""The Python client keeps a compact hello as columns (no per-entry records on connect), and
applies deltas run by run: what a 50-client connect storm needs from each client process."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _bridgeutil import VIEW_SECRET, arun, ws_connect

from twinstage.bridge import Client
from twinstage.bridge._compact import CompactIndex, CompactTables, LazyHello, expand_hello
from twinstage.state import Replica


def _compact_hello(url: str) -> dict:
    async def go():
        ws = await ws_connect(url + "?hello=compact", token=VIEW_SECRET)
        raw = await asyncio.wait_for(ws.recv(), 30)
        await ws.close()
        return json.loads(raw)

    return arun(go(), 60)


def test_compact_tables_answer_what_the_expanded_hello_says(bridge, factory_1k):
    b = bridge(factory_1k, run=False)
    msg = _compact_hello(b.url)
    attrs, prims = expand_hello(msg)
    t = CompactTables(msg)
    assert t.layout() == Replica.from_attributes(attrs).layout
    assert t.n_entries == len(attrs) > 5000
    idx = CompactIndex(t)
    assert len(idx) == len(attrs) and list(idx) == [(a["prim"], a["attribute"]) for a in attrs]
    for a in attrs[::7]:
        assert idx[(a["prim"], a["attribute"])] == a["index"]
        assert t.key_of(a["index"]) == (a["prim"], a["attribute"])
        assert t.unit_of(a["index"]) == a["unit"]
    assert t.paths == [p["path"] for p in prims]
    for bad in [(prims[0]["path"], "noSuchAttribute"), ("/No/Such/Prim", attrs[0]["attribute"]), "not-a-pair"]:
        with pytest.raises(KeyError):
            idx[bad]
    with pytest.raises(KeyError):
        t.key_of(len(attrs))
    # a channel that covers only some assets (conveyor items): assets without it have no entry
    partial = [ch for ch in msg["channels"] if ch["count"] < len(prims)]
    assert partial
    ch = partial[0]
    have = set(ch["prims"]) if ch["prims"] else set(range(ch["primStart"], ch["primStart"] + ch["count"]))
    missing = next(i for i in range(len(prims)) if i not in have)
    with pytest.raises(KeyError):
        idx[(prims[missing]["path"], ch["name"])]


def test_lazy_hello_expands_on_first_access_only(bridge, factory_1k):
    b = bridge(factory_1k, run=False)
    msg = _compact_hello(b.url)
    attrs, prims = expand_hello(msg)
    t = CompactTables(msg)
    h = LazyHello(msg, t)
    assert h and len(h) == len(msg) and "prims" in h and h["layout"] == "compact" and h.get("session") == msg["session"]
    assert t._expanded is None  # none of that needed the per-entry records
    assert h["attributes"] == attrs and h.get("prims") == prims
    assert h == {**msg, "attributes": attrs, "prims": prims} and dict(h)["prims"] == prims
    with pytest.raises(KeyError):
        h["noSuchKey"]
    bad = {**msg, "channels": [{**msg["channels"][0], "count": -1}]}
    with pytest.raises(ValueError, match="bad offset/count"):
        CompactTables(bad)


def test_client_with_compact_hello_never_expands_it_to_stream_and_read(bridge):
    b = bridge()

    async def go():
        async with Client(b.url, token=VIEW_SECRET, hello="compact") as cc, Client(b.url, token=VIEW_SECRET) as cr:
            await cc.subscribe(encoding="binary")
            await cr.subscribe(encoding="binary")
            await cc.wait_until(lambda c: c.deltas >= 3)
            p, a = next(iter(cr.index))
            assert cc.index[(p, a)] == cr.index[(p, a)] and cc.unit(p, a) == cr.unit(p, a)
            assert isinstance(cc.get(p, a), type(cr.get(p, a)))
            assert set(cc.values()) == set(cr.values()) and len(cc.values()) == len(cr.attributes)
            assert cc.freshness().keys() == cr.freshness().keys()
            assert cc._tables is not None and cc._tables._expanded is None
            assert cc.attributes == cr.attributes  # expanded now, on request
            assert cc._tables._expanded is not None

    arun(go(), 60)


def test_replica_applies_shuffled_and_gapped_entries_like_sorted_ones():
    """Deltas are applied run by run (slices where entries are consecutive): entries in any
    order, channels interleaved, repeated channels and gaps give what one-by-one writes give."""
    layout = {"a": (0, 50, "float"), "b": (50, 30, "int"), "c": (80, 20, "vec3"), "d": (100, 40, "float")}
    rng = np.random.default_rng(7)
    for trial in range(40):
        r = Replica(layout, track_dirty=True)
        ref = {n: np.zeros((k, 3) if t == "vec3" else k) for n, (_, k, t) in layout.items()}
        refq = {n: np.zeros(k, np.uint8) for n, (_, k, _) in layout.items()}
        scalar = np.array([i for i in range(140) if not 80 <= i < 100])
        idx = rng.choice(scalar, size=rng.integers(1, 120), replace=False)
        if trial % 3 == 0:
            idx = np.sort(idx)
        if trial % 5 == 0:
            idx = np.arange(3, 47)  # one contiguous run
        vals = rng.normal(size=len(idx)).round()
        q = rng.integers(0, 3, size=len(idx)).astype(np.uint8)
        vidx = rng.permutation(np.arange(80, 100))[: rng.integers(0, 20)]
        vvals = rng.normal(size=(len(vidx), 3))
        vq = rng.integers(0, 3, size=len(vidx)).astype(np.uint8)
        r.apply_delta(1, 1, 0.0, 0.0, idx, vals, q, vidx, vvals, vq)
        for i, v, qq in [*zip(idx, vals, q), *zip(vidx, vvals, vq)]:
            name, row = r.locate(int(i))
            ref[name][row] = v
            refq[name][row] = qq
        dirty = r.take_dirty()
        for name, (off, k, _) in layout.items():
            np.testing.assert_array_equal(r.values[name], ref[name].astype(r.values[name].dtype), err_msg=name)
            np.testing.assert_array_equal(r.quality[name], refq[name], err_msg=name)
            touched = sorted({int(i) - off for i in [*idx, *vidx] if off <= i < off + k})
            assert dirty.get(name, np.zeros(0)).tolist() == touched
            assert np.flatnonzero(r.known[name]).tolist() == touched
    with pytest.raises(ValueError, match="sent as vec3"):
        Replica(layout).apply_delta(1, 1, 0.0, 0.0, [], [], [], [3], [[1.0, 2.0, 3.0]], [0])
    with pytest.raises(IndexError, match="entry 140"):
        Replica(layout).apply_delta(1, 1, 0.0, 0.0, [5, 140], [1.0, 2.0], [0, 0])
    gapped = Replica({"a": (0, 10, "float"), "d": (20, 5, "float")})
    for bad, named in (([1, 2, 15, 21], 15), ([15, 2], 15), ([1, 25], 25), ([-1, 3], -1)):
        with pytest.raises(IndexError, match=f"entry {named} "):
            gapped.apply_delta(1, 1, 0.0, 0.0, bad, [1.0] * len(bad), [0] * len(bad))
    gapped.apply_delta(1, 1, 0.0, 0.0, [8, 9, 20, 22], [1.0, 2.0, 3.0, 4.0], [0, 1, 2, 3])
    assert gapped.values["a"][8:].tolist() == [1.0, 2.0] and gapped.values["d"].tolist() == [3.0, 0.0, 4.0, 0.0, 0.0]
    assert gapped.quality["d"].tolist() == [2, 0, 3, 0, 0] and np.flatnonzero(gapped.known["d"]).tolist() == [0, 2]


def test_client_constants_match_the_wire_module():
    """The client and auth do not import the pydantic wire module (slow to import); their copies agree."""
    from twinstage.bridge import _client, _messages
    from twinstage.bridge.infra import auth

    assert _client.SUBPROTOCOL == _messages.SUBPROTOCOL
    assert auth.ROLES == _messages.ROLES
