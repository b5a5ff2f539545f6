"""A server that starts at 1M assets: the rows hello is built only for a client that gets it (and kept),
``auto`` decides from a lower bound of the rows' size when it can, every hello is byte for byte what the
eager builder sent; the scene GLB is capped (``glb_max_prims``), built in the background above
``GLB_SYNC_PRIMS`` (hello says ``building``, ``GET /scene.glb`` answers 503 + Retry-After meanwhile),
and the cap is announced in ``hello.glb`` and the log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest
from _bridgeutil import ADMIN, OPERATOR, VIEW_SECRET, VIEWER, RawClient, arun, bridge_url, reap, spawn_cli, stop, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import twinstage
from twinstage import __version__
from twinstage.bridge import Client, Server
from twinstage.bridge import _scene_glb
from twinstage.bridge._hello import ATTRIBUTE_KEYS
from twinstage.bridge._jsonio import dumps
from twinstage.bridge._messages import PROTOCOL, VERSION, Hello, Limits


@pytest.fixture
def served():
    """``make(scene, **server_kwargs)`` → a Server on a twin that does not tick (its hello stays put)."""
    made = []

    def make(scene, **kw):
        twin = twinstage.open(scene, rate=20.0)
        kw.setdefault("tokens", [OPERATOR, VIEWER, ADMIN])
        server = Server("127.0.0.1", 0, **kw)
        twin.add_sink(server)
        made.append(twin)
        return server

    yield make
    for twin in made:
        twin.close()


def eager_hello(server: Server, layout: str) -> str:
    """The hello as the builder made it before (both layouts encoded at start): the reference bytes."""
    from pxr import UsdGeom

    hb, ctl, stage = server.hello_builder, server.control, server.control.stage
    limits = Limits(max_message_bytes=server.max_message_bytes, commands_per_second=server.commands_per_second, command_burst=server.command_burst,
                    command_timeout=server.command_timeout, send_deadline=server.send_deadline, max_rate=ctl.rate,
                    ring_frames=server.ring.max_frames, max_state_bytes=server.max_state_bytes)
    static = {"protocol": PROTOCOL, "version": VERSION, "session": server.session, "server": f"twinstage {__version__}", "scene": ctl.scene_name,
              "tickRate": ctl.rate, "upAxis": str(UsdGeom.GetStageUpAxis(stage)), "metersPerUnit": float(UsdGeom.GetStageMetersPerUnit(stage)),
              "encodings": ["json", "binary", "compact"], "limits": limits.model_dump(by_alias=True, mode="json"),
              "attributes": server.mirror.attribute_table(), "prims": hb.prims, "layout": "rows", "glb": hb.glb_source.info()}
    rows = dumps(static)[1:-1]
    static.update(attributes=[], prims=[], layout="compact", channels=hb._channels(), assets=hb._assets())
    compact = dumps(static)[1:-1]
    bound = server.max_state_bytes
    if layout == "auto":
        layout = "compact" if bound and len(rows) > bound else "rows"
    m = server.mirror
    dyn = {"type": "hello", "role": "viewer", "user": "watch", "tick": m.tick, "simTime": m.sim_time, "seq": m.seq, "paused": ctl.paused,
           "added": [], "removed": []}
    return "{" + dumps(dyn)[1:-1] + "," + (compact if layout == "compact" else rows) + "}"


async def _hello(url: str, query: str = "") -> str:
    async with connect(url + query, additional_headers={"Authorization": f"Bearer {VIEW_SECRET}"}, subprotocols=["twinstage.v1"],
                       compression=None, proxy=None, max_size=None) as ws:
        return await asyncio.wait_for(ws.recv(), 60)


def _prototypes_numbered_alike(glb: bytes) -> bytes:
    return re.sub(rb"__Prototype_\d+", b"__Prototype_N", glb)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_rows_hello_is_built_only_when_a_client_gets_it(served, factory_1k):
    s = served(factory_1k, max_state_bytes=100_000)  # rows (1.4 MB) are far over the bound: auto decides without them
    hb = s.hello_builder
    assert hb.rows_builds == 0 and hb.rows_floor() > s.max_state_bytes

    async def go():
        auto = await _hello(s.url)
        compact = await _hello(s.url, "?hello=compact")
        assert json.loads(auto)["layout"] == "compact" and auto == compact
        async with Client(s.url, token=VIEW_SECRET, max_size=None) as c:  # the default client: auto
            assert c.hello["layout"] == "compact"
        assert hb.rows_builds == 0  # nobody got rows: never built
        rows = await _hello(s.url, "?hello=rows")
        assert json.loads(rows)["layout"] == "rows" and hb.rows_builds == 1
        assert await _hello(s.url, "?hello=rows") == rows and hb.rows_builds == 1  # kept
        for bad in ("?hello=big", "?hello=rows&hello=compact", "?hello="):
            with pytest.raises(InvalidStatus) as err:
                await _hello(s.url, bad)
            assert err.value.response.status_code == 400 and b"hello must be one of rows, compact" in err.value.response.body
        Hello.model_validate(json.loads(rows))
        Hello.model_validate(json.loads(compact))

    arun(go(), 120)


@pytest.mark.parametrize("scene,bound", [("pump", 1_000_000), ("factory", 1_000_000), ("factory", 100_000), ("factory", 0)])
def test_every_hello_is_the_eager_builders_bytes(served, pump_scene, factory_1k, scene, bound):
    s = served(pump_scene if scene == "pump" else factory_1k, max_state_bytes=bound)
    hb = s.hello_builder
    for layout in ("auto", "compact", "rows", "auto"):
        assert hb.hello("viewer", "watch", layout) == eager_hello(s, layout), (scene, bound, layout)
    assert hb.rows_floor() <= hb.sizes["rows"]  # a lower bound indeed
    assert hb.compact_bytes == hb.sizes["compact"]


def test_the_rows_bound_knows_the_attribute_records(served, pump_scene):
    s = served(pump_scene)
    assert all(tuple(a) == ATTRIBUTE_KEYS for a in s.mirror.attribute_table())  # rows_floor counts exactly these keys


def test_glb_cap_is_honoured_and_announced(served, factory_1k, caplog):
    with caplog.at_level(logging.INFO, logger="twinstage.bridge"):
        s = served(factory_1k, glb_max_prims=100)
    n = len(s.control.table.prims)
    h = json.loads(s.hello("viewer", "watch", "compact"))
    Hello.model_validate(h)
    g = h["glb"]
    assert g["url"] == "" and g["bytes"] == 0 and g["status"] == "none"
    assert f"{n} twin prims" in g["reason"] and "glb-max-prims" in g["reason"]
    assert s.hello_builder.glb_source.builds == 0  # not built at all
    assert any("no scene GLB" in r.getMessage() and "glb-max-prims" in r.getMessage() for r in caplog.records)
    status, _, body = http_get(f"http://127.0.0.1:{s.port}/scene.glb?token={VIEW_SECRET}")
    assert status == 404 and b"more than this server builds a GLB for" in body
    with pytest.raises(ValueError, match="glb_max_prims"):
        Server("127.0.0.1", 0, glb_max_prims=-1)


@pytest.mark.parametrize("scene", ["pump", "factory"])
def test_big_scene_glb_is_built_in_the_background_and_served(served, pump_scene, factory_1k, monkeypatch, scene):
    gate = threading.Event()

    class Gated(_scene_glb.SceneGlb):  # the real build, held until the test has seen "building"
        def __init__(self, stage):
            assert gate.wait(60)
            super().__init__(stage)

    monkeypatch.setattr(_scene_glb, "GLB_SYNC_PRIMS", 0)  # every scene is "big"
    monkeypatch.setattr(_scene_glb, "GLB_WAIT_S", 0.2)
    monkeypatch.setattr(_scene_glb, "SceneGlb", Gated)
    monkeypatch.setattr("twinstage.bridge.infra.listener.GLB_WAIT_S", 0.2)
    s = served(pump_scene if scene == "pump" else factory_1k)  # (the pump's parts are a reference: the private stage resolves it)
    src = s.hello_builder.glb_source
    http = f"http://127.0.0.1:{s.port}/scene.glb"
    early = json.loads(s.hello("viewer", "watch", "compact"))["glb"]
    assert early["status"] == "building" and early["url"] == "/scene.glb" and early["bytes"] == 0 and early["sha256"] == ""
    assert http_get(http)[0] == 401  # auth first, as always
    status, headers, body = http_get(http + f"?token={VIEW_SECRET}")
    assert status == 503 and headers["Retry-After"] == str(_scene_glb.GLB_RETRY_S) and b"being built" in body
    gate.set()
    assert src.wait(120) and src.status == "ready"
    late = json.loads(s.hello("viewer", "watch", "compact"))["glb"]
    Hello.model_validate(json.loads(s.hello("viewer", "watch", "rows")))
    status, headers, data = http_get(http, {"Authorization": f"Bearer {VIEW_SECRET}"})
    assert status == 200 and data[:4] == b"glTF" and headers["ETag"] == f'"{late["sha256"][:32]}"'
    assert late["status"] == "ready" and late["bytes"] == len(data) and late["sha256"] == hashlib.sha256(data).hexdigest()
    assert src.builds == 1
    # what a build from the twin's own stage gives (but for USD's instancing prototypes, numbered per process: __Prototype_<n>)
    at_start = _scene_glb.SceneGlb.__mro__[1](s.control.stage).data
    assert _prototypes_numbered_alike(data) == _prototypes_numbered_alike(at_start)


def test_serve_glb_max_prims_flag(pump_scene):
    proc, lines = spawn_cli("serve", str(pump_scene), "--port", "0", "--glb-max-prims", "0", "--token", OPERATOR, "--duration", "600")
    try:
        url = bridge_url(lines, [])

        async def go():
            async with Client(url, token=OPERATOR.split(":", 2)[2]) as c:
                return c.hello["glb"]

        g = arun(go(), 60)
        assert g["url"] == "" and g["status"] == "none" and "(0; serve --glb-max-prims)" in g["reason"]
        stop(proc)
    finally:
        reap(proc)
    proc, lines = spawn_cli("serve", str(pump_scene), "--glb-max-prims", "-5")
    try:
        assert proc.wait(60) == 2
        assert "--glb-max-prims" in "".join(lines.queue)
    finally:
        reap(proc)


def _read_frame(r: RawClient) -> bytes:
    """One whole server frame (unmasked, FIN) from a raw client, reading as it arrives."""
    buf = bytearray(r.rest)
    r.sock.settimeout(30)

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = r.sock.recv(65536)
            assert chunk, f"connection closed after {len(buf)} bytes"
            buf.extend(chunk)

    need(2)
    n, j = buf[1] & 0x7F, 2
    if n == 126:
        need(4)
        n, j = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, j = struct.unpack(">Q", buf[2:10])[0], 10
    need(j + n)
    return bytes(buf[j:j + n])


def test_a_stall_of_the_servers_own_loop_is_not_charged_to_the_client(served, factory_1k):
    """The mechanism of the 1M abort (1006 during the snapshot) at small scale: while a big message is
    being sent, the server's loop cannot run for longer than the send's deadline (at 1M: a tick holding
    the GIL for seconds — a gen-2 GC pass, a USD call — or a 5M-entry frame applied on the loop). The
    client that reads is kept; one that never reads is still dropped once the deadline has passed."""
    s = served(factory_1k, send_deadline=0.3, send_buffer=16384)
    auth = {"Authorization": f"Bearer {VIEW_SECRET}"}
    reader = RawClient(s.port, path="/?hello=rows", headers=auth, rcvbuf=4096)  # a 1.4 MB hello: its send waits on the client
    deaf = RawClient(s.port, path="/?hello=rows", headers=auth, rcvbuf=4096)
    try:
        assert reader.status == deaf.status == 101
        assert wait_for(lambda: sum(x.sending_since is not None for x in list(s.sessions)) == 2, 30), "no send in flight"
        allowance = max(x.sending_allowance for x in s.sessions)  # deadline + 1 s per MB
        s.post(time.sleep, allowance + 2.0)  # the loop is busy for longer than the whole allowance
        hello = json.loads(_read_frame(reader))
        assert hello["type"] == "hello" and hello["layout"] == "rows" and len(hello["attributes"]) == len(s.mirror.attribute_table())
        st = s.stats()
        assert st.get("loop_stalls", 0) >= 1 and st.get("loop_stall_ms", 0) >= 1000 * (allowance + 1.0)
        assert wait_for(lambda: s.stats().get("aborted", 0) >= 1, 30)  # the one that never reads: dropped
        assert s.stats()["aborted"] == 1 and s.stats()["clients"] == 1  # the reader is still connected
    finally:
        reader.close()
        deaf.close()


def test_browser_client_waits_for_a_glb_being_built(bridge, pump_scene, monkeypatch):
    """The browser client (examples/browser) against a server whose GLB is still being built: boxes, the
    503 answered with retries ('waiting'), then the GLB's nodes once it is ready."""
    from test_bridge_clients import EXAMPLES, _chromium

    gate = threading.Event()

    class Gated(_scene_glb.SceneGlb):
        def __init__(self, stage):
            assert gate.wait(120)
            super().__init__(stage)

    monkeypatch.setattr(_scene_glb, "GLB_SYNC_PRIMS", 0)
    monkeypatch.setattr(_scene_glb, "SceneGlb", Gated)
    monkeypatch.setattr("twinstage.bridge.infra.listener.GLB_WAIT_S", 0.2)
    monkeypatch.setattr("twinstage.bridge.infra.listener.GLB_RETRY_S", 1)
    b = bridge(pump_scene, http_dir=EXAMPLES / "browser")
    driver = _chromium()
    js = driver.execute_script
    try:
        driver.get(f"http://127.0.0.1:{b.port}/index.html?token={VIEW_SECRET}")
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.glb") == "waiting", 30), js(
            "return window.twin && [twin.status, twin.glb, twin.errors.map(String)]")
        assert js("return twin.hello.glb.status") == "building" and js("return twin.meshes.size") == len(b.twin.table.prims)  # boxes meanwhile
        gate.set()
        assert wait_for(lambda: js("return twin.glb") == "loaded", 60), js("return [twin.glb, twin.errors.map(String)]")
        assert js("return twin.nodes.size") > 0 and js("return [...twin.meshes.values()].every(o => !o.userData.box)")
    finally:
        gate.set()
        driver.quit()
