"""Big state messages in parts (``Server.max_state_bytes``): no snapshot, delta or ``values`` message
over the bound, parts a client applies as they arrive, acks after the last part, and a plain
``websockets`` client with its default 1 MiB ``max_size`` subscribed to a 10k-machine factory."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun

from twinstage.bridge import Client, _binary
from twinstage.bridge._split import split, state_payload, values_payload
from twinstage.bridge._state import Parts
from twinstage.state import Replica

MIB = 1 << 20


class PlainState:
    """A client written from docs/protocol.md: each part's entries are set as it arrives; a snapshot's first
    part clears what was known; a message counts (and its seq becomes ours) once its last part is in."""

    def __init__(self) -> None:
        self.vals: dict[int, object] = {}
        self.qual: dict[int, int] = {}
        self.seq = 0
        self.done: list[tuple[str, int, int]] = []  #: complete messages: (kind, seq, parts)
        self.order: tuple[list[int], list[int]] = ([], [])
        self.parts = 0
        self.sizes: list[int] = []  #: bytes of every state message (part) received

    def feed(self, raw: str | bytes) -> dict | None:
        """Apply a state message (part); any other message is returned."""
        if isinstance(raw, bytes):
            f = _binary.decode(raw)
            m = {"type": f.kind, "seq": f.seq, "first": f.first, "last": f.last, "indices": f.indices.tolist(), "values": f.values.tolist(),
                 "quality": f.quality.tolist(), "vec3Indices": f.vec3_indices.tolist(), "vec3Values": f.vec3_values.reshape(-1).tolist(),
                 "vec3Quality": f.vec3_quality.tolist()}
        else:
            m = json.loads(raw)
            if m["type"] not in ("snapshot", "delta", "values"):
                return m
            m["first"], m["last"] = m["part"] == 0, m["part"] == m["parts"] - 1
        self.sizes.append(len(raw))
        if m["type"] == "snapshot" and m["first"]:
            self.vals.clear(), self.qual.clear()
            self.order = ([], [])
            self.parts = 0
        self.parts = 1 if m["first"] else self.parts + 1
        if m["type"] == "values":  # compact: quality only where not good; [] indices = the snapshot's order
            idx = m["indices"] if m["indices"] or not m["values"] else self.order[0]
            vidx = m["vec3Indices"] if m["vec3Indices"] or not m["vec3Values"] else self.order[1]
            flagged = dict(zip(m["flagged"], m["flaggedQuality"]))
            q, vq = [flagged.get(i, 0) for i in idx], [flagged.get(i, 0) for i in vidx]
        else:
            idx, vidx, q, vq = m["indices"], m["vec3Indices"], m["quality"], m["vec3Quality"]
            if m["type"] == "snapshot":
                self.order[0].extend(idx), self.order[1].extend(vidx)
        for k, i in enumerate(idx):
            self.vals[i], self.qual[i] = m["values"][k], q[k]
        for k, i in enumerate(vidx):
            self.vals[i], self.qual[i] = tuple(m["vec3Values"][3 * k:3 * k + 3]), vq[k]
        if m["last"]:
            self.seq = m["seq"]
            self.done.append((m["type"], m["seq"], self.parts))
        return None


def table_state(twin) -> tuple[dict[int, object], dict[int, int]]:
    si, sv, sq, vi, vv, vq = Replica.from_table(twin.table).flat()
    vals: dict[int, object] = dict(zip(si.tolist(), sv.tolist()))
    vals.update({i: tuple(v) for i, v in zip(vi.tolist(), vv.tolist())})
    return vals, {**dict(zip(si.tolist(), sq.tolist())), **dict(zip(vi.tolist(), vq.tolist()))}


async def plain_connect(url: str, token: str):
    from websockets.asyncio.client import connect  # max_size left at its default: 1 MiB

    return await connect(url + "?hello=compact", additional_headers={"Authorization": f"Bearer {token}"}, subprotocols=["twinstage.v1"],
                         compression=None, proxy=None)


def test_split_parts_hold_each_entry_once_and_fit_the_bound():
    rng = np.random.default_rng(1)
    n, m = 9000, 700
    p = Parts(np.arange(0, 2 * n, 2, dtype=np.int64), rng.normal(size=n) * 1e3, rng.integers(0, 3, n).astype(np.uint8),
              np.arange(2 * n, 2 * n + m, dtype=np.int64), rng.normal(size=(m, 3)), rng.integers(0, 3, m).astype(np.uint8))
    assert [len(q.indices) for q in split(p, 4)] == [2250] * 4 and sum(len(q.vec3_indices) for q in split(p, 4)) == m
    layout = {"s": (0, 2 * n, "float"), "v": (2 * n, m, "vec3")}
    for enc in ("json", "binary", "compact"):
        whole = state_payload("snapshot", enc, p, 7, 9, 0.5, 1.0, reason="resume", limit=0)
        parts = state_payload("snapshot", enc, p, 7, 9, 0.5, 1.0, reason="resume", limit=20_000)
        assert isinstance(whole, (str, bytes)) and isinstance(parts, list) and len(parts) >= len(whole) // 20_000
        assert all(len(x) <= 20_000 for x in parts)
        a, b = Replica(layout), Replica(layout)
        f = _binary.decode(whole) if enc == "binary" else None
        if f is not None:
            a.apply_snapshot(f.seq, f.tick, f.sim_time, f.wall_time, f.indices, f.values, f.quality, f.vec3_indices, f.vec3_values, f.vec3_quality)
        else:
            w = json.loads(whole)
            assert (w["part"], w["parts"]) == (0, 1)
            a.apply_snapshot(7, 9, 0.5, 1.0, w["indices"], w["values"], w["quality"], w["vec3Indices"], w["vec3Values"], w["vec3Quality"])
        b.seq = 3
        for k, x in enumerate(parts):
            if enc == "binary":
                f = _binary.decode(x)
                first, last, args = f.first, f.last, (f.indices, f.values, f.quality, f.vec3_indices, f.vec3_values, f.vec3_quality)
                assert (f.kind, f.reason, f.seq) == ("snapshot", "resume", 7)
            else:
                j = json.loads(x)
                first, last = j["part"] == 0, j["part"] == j["parts"] - 1
                assert (j["part"], j["parts"], j["seq"], j["reason"]) == (k, len(parts), 7, "resume")
                args = (j["indices"], j["values"], j["quality"], j["vec3Indices"], j["vec3Values"], j["vec3Quality"])
            assert (first, last) == (k == 0, k == len(parts) - 1)
            b.apply_snapshot(7, 9, 0.5, 1.0, *args, first=first, last=last)
            assert b.seq == (7 if last else 3) and b.snapshots == int(last)  # complete only with the last part
        for name in layout:
            assert np.array_equal(a.values[name], b.values[name]) and np.array_equal(a.quality[name], b.quality[name])
            assert b.known[name].sum() == layout[name][1] // (2 if name == "s" else 1)
    # a compact "values" message too big to go whole: parts with indices, quality flagged per part
    vp = values_payload(p, 8, 10, 0.6, 1.1, 2, full=True, limit=20_000)
    msgs = [json.loads(x) for x in vp]
    assert all(len(x) <= 20_000 for x in vp) and [x["part"] for x in msgs] == list(range(len(msgs)))
    assert sum((x["indices"] for x in msgs), []) == p.indices.tolist()
    assert sum(len(x["flagged"]) for x in msgs) == int(np.count_nonzero(p.quality) + np.count_nonzero(p.vec3_quality))


async def paused_session(url: str, twin, encoding: str, bound: int) -> None:
    """Pause, subscribe to everything, step 3 (operator, plain websockets client): the snapshot and a delta of
    the step come in parts, each under ``bound``; applied as they arrive they give the twin's state
    exactly; the step's ack follows the last part of the last tick's state."""
    ws = await plain_connect(url, OP_SECRET)
    st = PlainState()

    async def until(pred, timeout=30.0):
        async def loop():
            while True:
                other = st.feed(await ws.recv())
                if other is not None and pred(other):
                    return other
        return await asyncio.wait_for(loop(), timeout)

    hello = json.loads(await ws.recv())
    assert hello["limits"]["maxStateBytes"] == bound
    await ws.send(json.dumps({"type": "command", "id": "p", "command": "pause", "steps": 0, "scenario": ""}))
    await until(lambda m: m.get("id") == "p")
    await ws.send(json.dumps({"type": "subscribe", "id": "s", "prefixes": [], "attributes": [], "encoding": encoding, "maxRate": 0}))
    ack = await until(lambda m: m.get("id") == "s")
    while not any(k == "snapshot" for k, _, _ in st.done):
        st.feed(await asyncio.wait_for(ws.recv(), 30))
    kind, seq, parts = st.done[-1]
    assert parts > 1 and seq == ack["seq"]  # the twin is paused: the snapshot is at the ack's seq
    assert len(st.vals) == ack["count"]
    assert (st.vals, st.qual) == table_state(twin)
    before = len(st.done)
    await ws.send(json.dumps({"type": "command", "id": "t", "command": "step", "steps": 3, "scenario": ""}))
    step_ack = await until(lambda m: m.get("id") == "t", 60)
    # every state message of the step had its last part in before the ack came
    assert st.done[-1][1] == step_ack["seq"] and st.parts == st.done[-1][2]
    assert any(p > 1 for _, _, p in st.done[before:])  # a delta in parts too
    assert (st.vals, st.qual) == table_state(twin)
    assert max(st.sizes) <= bound
    await ws.close()


@pytest.mark.parametrize("encoding", ["json", "binary", "compact"])
def test_snapshots_and_deltas_in_parts_under_the_bound(bridge, factory_1k, encoding):
    """1000 machines, bound 8 KiB (see :func:`paused_session`), then the Python Client with websockets' default max_size."""
    bound = 8192
    b = bridge(factory_1k, max_state_bytes=bound)
    arun(paused_session(b.url, b.twin, encoding, bound), 120)

    async def client():  # twinstage.bridge.Client (Replica) with websockets' default max_size, part by part
        async with Client(b.url, token=VIEW_SECRET, hello="compact", max_size=MIB) as c:
            await c.subscribe(encoding=encoding)
            assert c.snapshots == 1 and c.replica.seq == c.seq
            vals, qual = table_state(b.twin)
            assert len(c.values()) == len(vals)
            si, sv, sq, vi, vv, vq = c.replica.flat()
            assert dict(zip(si.tolist(), sv.tolist())) == {i: v for i, v in vals.items() if not isinstance(v, tuple)}
            assert {i: tuple(v) for i, v in zip(vi.tolist(), vv.tolist())} == {i: v for i, v in vals.items() if isinstance(v, tuple)}

    arun(client(), 60)


@pytest.mark.slow
def test_plain_client_with_default_max_size_gets_a_10k_factory(bridge, tmp_path_factory):
    """The 10k-machine factory (50k entries): its JSON snapshot is 1.06 MB whole, over websockets' default
    1 MiB (the client was closed with 1009); with the default bound it comes in parts, binary whole."""
    from twinstage.scenes import generate_factory

    path = tmp_path_factory.mktemp("f10k") / "factory_10k.usdc"
    generate_factory(10_000, path)
    b = bridge(path, run=False, rate=10)

    async def go():
        ws = await plain_connect(b.url, VIEW_SECRET)
        hello = await ws.recv()
        assert len(hello) <= MIB and json.loads(hello)["limits"]["maxStateBytes"] <= MIB
        done = {}
        for encoding in ("json", "binary", "compact"):
            st = PlainState()
            await ws.send(json.dumps({"type": "subscribe", "id": encoding, "prefixes": [], "attributes": [], "encoding": encoding, "maxRate": 0}))
            ack = None
            while not st.done:
                other = st.feed(await asyncio.wait_for(ws.recv(), 60))
                if other is not None and other.get("id") == encoding:
                    ack = other
            assert ack is not None and ack["count"] == len(st.vals) >= 50_000
            assert max(st.sizes) <= MIB
            done[encoding] = (st.done[0][2], st.vals)
        await ws.close()
        return done

    done = arun(go(), 240)
    assert done["json"][0] >= 2 and done["binary"][0] == 1  # JSON in parts; binary (0.65 MB) whole
    assert done["json"][1] == done["binary"][1] == done["compact"][1] == table_state(b.twin)[0]


def test_unity_client_applies_parts_under_mono(bridge, tmp_path):
    """examples/unity/TwinProtocol.cs (Mono) against 100 machines with a 4 KiB bound: binary, JSON and compact
    snapshots come in parts; it waits for the last part and then holds every attribute."""
    import shutil
    import subprocess
    from pathlib import Path

    from twinstage.scenes import generate_factory

    if not (shutil.which("mcs") and shutil.which("mono")):
        pytest.fail("needs Debian mono-mcs + mono-runtime (system-packages.txt; make test installs them)")
    root = Path(__file__).resolve().parents[2]
    cs = root / "tests" / "bridge" / "csharp"
    exe = tmp_path / "TwinProtocolTest.exe"
    build = subprocess.run(["mcs", f"-out:{exe}", str(root / "examples" / "unity" / "TwinProtocol.cs"), str(cs / "MiniJsonUtility.cs"),
                            str(cs / "TwinProtocolTest.cs")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    scene = tmp_path / "factory_100.usda"
    generate_factory(100, scene)
    b = bridge(scene, max_state_bytes=4096)
    run = subprocess.run(["mono", str(exe), b.url, OP_SECRET, "/Factory/Machines/M000", "heatInput", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "DONE" and any(ln.startswith("OK snapshot seq=") and ln.endswith(f" values={b.twin.table.n_entries}") for ln in lines)
    later = int(next(ln for ln in lines if ln.startswith("OK later parts=")).split("=")[1])
    assert later >= 3  # binary (6.5 kB), JSON and compact snapshots (~12 kB each) came in parts
    assert b.twin.get("/Factory/Machines/M000", "heatInput") == 0.0


def test_browser_client_applies_parts(bridge, tmp_path):
    """examples/browser (protocol.js + app.js) in headless Chromium, 100 machines, bound 4 KiB: the binary
    and JSON snapshots come in parts; the page knows every entry after the last, one snapshot, no gaps."""
    from pathlib import Path

    from _bridgeutil import wait_for
    from test_bridge_clients import _chromium

    from twinstage.scenes import generate_factory

    scene = tmp_path / "factory_100.usda"
    generate_factory(100, scene)
    b = bridge(scene, max_state_bytes=4096, http_dir=Path(__file__).resolve().parents[2] / "examples" / "browser")
    n = b.twin.table.n_entries
    driver = _chromium()
    try:
        js = driver.execute_script
        for encoding in ("binary", "json"):
            driver.get(f"http://127.0.0.1:{b.port}/index.html?token={VIEW_SECRET}&encoding={encoding}")
            assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.deltas") >= 3, 30), \
                js("return window.twin && [twin.status, twin.errors.map(String), twin.closeCode]")
            assert js("return twin.known.reduce((a, k) => a + k, 0)") == n
            assert js("return [twin.snapshots, twin.gaps]") == [1, 0]
            assert js("return twin.value('/Factory/Machines/M099', 'heatInput')") == b.twin.get("/Factory/Machines/M099", "heatInput")
    finally:
        driver.quit()


def test_fanout_workers_send_parts(tmp_path):
    """A fan-out worker process sends parts too, including for the binary delta the twin process encoded
    once for everyone (400 machines: 5.2 kB per tick, over a 4 KiB bound)."""
    import threading

    import twinstage
    from _bridgeutil import OPERATOR
    from twinstage.bridge._fanout import FanoutHub
    from twinstage.scenes import generate_factory

    scene = tmp_path / "factory_400.usda"
    generate_factory(400, scene)
    twin = twinstage.open(scene, rate=20, realtime=True)
    hub = FanoutHub(str(scene), 1, "127.0.0.1", 0, open_kwargs={"rate": 20, "realtime": True},
                    server_kwargs={"tokens": [OPERATOR], "max_state_bytes": 4096})
    twin.add_sink(hub)
    thread = threading.Thread(target=twin.run, kwargs={"ticks": 10**9, "wait_when_paused": True}, daemon=True)
    thread.start()
    try:
        arun(paused_session(hub.url, twin, "binary", 4096), 120)
    finally:
        twin.stop()
        thread.join(10)
        twin.close()
