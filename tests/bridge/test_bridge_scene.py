"""The scene's GLB over the bridge's port: same auth as the websocket, an ETag, announced in
``hello``, valid for the Khronos glTF validator, every twin prim a node ``extras.twinId``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun, recv_json, ws_connect

from twinstage.bridge._hello import HelloBuilder
from twinstage.bridge._messages import Hello

EXPORT_TESTS = Path(__file__).parents[1] / "export"


@pytest.fixture(scope="module")
def gltf_validator():
    """``validate(path)`` → the Khronos report (the export tests' npm gltf-validator install)."""
    spec = importlib.util.spec_from_file_location("_export_conftest", EXPORT_TESTS / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    node = mod._install_gltf_validator()

    def run(path: Path) -> dict:
        r = subprocess.run([node, str(EXPORT_TESTS / "node" / "validate.mjs"), str(path)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)[0]

    return run


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def glb_json(data: bytes) -> dict:
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    n, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    return json.loads(data[20:20 + n])


def test_scene_glb_served_with_auth_and_announced(bridge, tmp_path, gltf_validator):
    b = bridge()
    http = f"http://127.0.0.1:{b.port}/scene.glb"

    async def hello() -> dict:
        ws = await ws_connect(b.url, token=VIEW_SECRET)
        try:
            return await recv_json(ws, lambda m: m["type"] == "hello")
        finally:
            await ws.close()

    h = arun(hello())
    Hello.model_validate(h)  # the pydantic message (docs/protocol.schema.json) has the field
    ann = h["glb"]
    assert ann["url"] == "/scene.glb" and ann["mediaType"] == "model/gltf-binary" and ann["upAxis"] == "Y"

    # no token, a wrong token, a disallowed Origin: refused
    assert http_get(http)[0] == 401
    assert http_get(http + "?token=not-the-secret")[0] == 401
    assert http_get(http, {"Authorization": "Bearer nope-nope-nope"})[0] == 401
    assert http_get(http + f"?token={VIEW_SECRET}", {"Origin": "http://evil.example"})[0] == 403
    # the token by query, header or cookie: the same bytes, as announced
    status, headers, data = http_get(http + f"?token={VIEW_SECRET}")
    assert status == 200 and headers["Content-Type"] == "model/gltf-binary" and int(headers["Content-Length"]) == len(data)
    assert len(data) == ann["bytes"] and hashlib.sha256(data).hexdigest() == ann["sha256"]
    assert http_get(http, {"Authorization": f"Bearer {OP_SECRET}"})[2] == data
    assert http_get(http, {"Cookie": f"a=b; twinstage_token={OP_SECRET}"})[2] == data
    # the ETag revalidates
    status, _, body = http_get(http + f"?token={VIEW_SECRET}", {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""

    path = tmp_path / "served.glb"
    path.write_bytes(data)
    report = gltf_validator(path)
    errors = [m for m in report["issues"]["messages"] if m["severity"] == 0]
    assert not errors, errors
    ids = {n.get("extras", {}).get("twinId") for n in glb_json(data)["nodes"]}
    prims = set(b.twin.table.prims)
    assert prims and prims <= ids, prims - ids
    assert {p["path"] for p in h["prims"]} <= ids


def test_scene_glb_anonymous_and_disabled(bridge):
    b = bridge(tokens=[], anonymous="viewer")
    status, _, data = http_get(f"http://127.0.0.1:{b.port}/scene.glb")
    assert status == 200 and data[:4] == b"glTF"
    off = bridge(tokens=[], anonymous="viewer")
    off.server.scene_glb = False  # what a server without a stage (or a failed export) has
    off.server.hello_builder = HelloBuilder(off.server)
    h = json.loads(off.server.hello_builder.hello("viewer", ""))
    assert h["glb"]["url"] == "" and h["glb"]["bytes"] == 0
    Hello.model_validate(h)
    status, _, body = http_get(f"http://127.0.0.1:{off.port}/scene.glb")
    assert status == 404 and b"no scene GLB" in body
