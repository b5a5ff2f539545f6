"""The Foxglove dialect, checked by a client that follows the foxglove.websocket.v1 spec:
serverInfo, advertise (JSON channels with JSON Schemas), subscribe/unsubscribe, binary message
data (opcode 1, subscription id, timestamp, payload) validated against the advertised schema."""

from __future__ import annotations

import asyncio
import json
import struct

import base64
from pathlib import Path

import jsonschema
import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun
from test_bridge_scene import gltf_validator, glb_json  # noqa: F401  (gltf_validator is a fixture)

from twinstage.bridge import Client
from twinstage.scenes import generate_factory

ROOT = Path(__file__).resolve().parents[2]


class FoxgloveClient:
    def __init__(self, url: str, token: str):
        self.url = f"{url}?token={token}"  # Foxglove cannot set headers either

    async def __aenter__(self) -> "FoxgloveClient":
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, subprotocols=["foxglove.websocket.v1"], compression=None, max_size=None, proxy=None)
        assert self.ws.subprotocol == "foxglove.websocket.v1"
        self.info = json.loads(await self.ws.recv())
        assert self.info["op"] == "serverInfo" and isinstance(self.info["name"], str) and isinstance(self.info["capabilities"], list)
        adv = json.loads(await self.ws.recv())
        assert adv["op"] == "advertise"
        self.channels = {}
        for ch in adv["channels"]:
            for key, typ in (("id", int), ("topic", str), ("encoding", str), ("schemaName", str), ("schema", str)):
                assert isinstance(ch[key], typ), (key, ch)
            assert ch["encoding"] == "json"
            schema = json.loads(ch["schema"])
            jsonschema.validators.validator_for(schema).check_schema(schema)
            self.channels[ch["schemaName"]] = {**ch, "validator": jsonschema.validators.validator_for(schema)(schema)}
        self.subs: dict[int, str] = {}
        self.status: list[dict] = []
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def subscribe(self, sub_id: int, schema_name: str) -> None:
        ch = self.channels[schema_name]
        self.subs[sub_id] = schema_name
        await self.ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": sub_id, "channelId": ch["id"]}]}))

    async def unsubscribe(self, sub_id: int) -> None:
        await self.ws.send(json.dumps({"op": "unsubscribe", "subscriptionIds": [sub_id]}))

    async def message(self, timeout: float = 10.0) -> tuple[int, int, dict]:
        """Next message data frame: (subscription id, timestamp ns, payload), validated."""
        async def _go():
            while True:
                raw = await self.ws.recv()
                if isinstance(raw, str):
                    self.status.append(json.loads(raw))
                    continue
                op, sid, ts = struct.unpack_from("<BIQ", raw, 0)
                assert op == 0x01, f"unknown binary opcode {op}"
                payload = json.loads(raw[13:])
                self.channels[self.subs[sid]]["validator"].validate(payload)
                return sid, ts, payload
        return await asyncio.wait_for(_go(), timeout)


def _color(entity: dict) -> tuple:
    c = entity["models"][0]["color"] if entity["models"] else entity["cubes"][0]["color"]
    return (c["r"], c["g"], c["b"])


def test_foxglove_scene_update_and_transforms(bridge, tmp_path, gltf_validator):
    b = bridge()

    async def go():
        async with FoxgloveClient(b.url, VIEW_SECRET) as fx:
            assert set(fx.channels) == {"foxglove.SceneUpdate", "foxglove.FrameTransforms"}
            await fx.subscribe(7, "foxglove.FrameTransforms")
            await fx.subscribe(8, "foxglove.SceneUpdate")
            prims = list(b.twin.table.prims)
            scene, tf = None, None
            while scene is None or tf is None:
                sid, ts, payload = await fx.message()
                assert ts > 0
                if sid == 8 and len(payload["entities"]) == 2 * len(prims) + 1:  # label + model per asset, the scenery
                    scene = payload
                if sid == 7:
                    tf = payload
            frames = {t["child_frame_id"]: t for t in tf["transforms"]}
            assert all(t["parent_frame_id"] == "world" for t in tf["transforms"])
            ents = {e["id"]: e for e in scene["entities"]}
            assert set(ents) == {*prims, *(p + "#model" for p in prims), "scene#scenery"}
            pump = ents["/Testbed/Pump"]
            assert pump["frame_id"] in frames and frames[pump["frame_id"]]["translation"]["x"] == 0.2
            meta = {m["key"]: m["value"] for m in pump["metadata"]}
            assert meta["flowRate"].endswith(" L/min") and meta["motorTemperature"].endswith(" degC")
            assert pump["cubes"] == [] and "motorTemperature" in pump["texts"][0]["text"]
            # the real geometry: the asset's own GLB in its frame, the scenery in world, each valid glTF
            model = ents["/Testbed/Pump#model"]
            assert model["frame_id"] == pump["frame_id"] and model["models"][0]["media_type"] == "model/gltf-binary"
            scenery = ents["scene#scenery"]
            assert scenery["frame_id"] == "world" and not scenery["models"][0]["override_color"]
            for name, ent, want in (("pump", model, {"/Testbed/Pump"}), ("scenery", scenery, {"/Testbed/Base", "/Testbed/Pipes/Pipe0"})):
                data = base64.b64decode(ent["models"][0]["data"])
                path = tmp_path / f"{name}.glb"
                path.write_bytes(data)
                assert not [m for m in gltf_validator(path)["issues"]["messages"] if m["severity"] == 0]
                got = {n.get("extras", {}).get("twinId") or n.get("extras", {}).get("usdPath") for n in glb_json(data)["nodes"]}
                assert want <= got and "/Testbed/Tank" not in got, got  # only its own part
            open_color = _color(ents["/Testbed/Valve1#model"])
            # later updates are deltas: the scenery is never resent, a model only when its colour changed
            later: list[str] = []
            try:
                while True:
                    later += [e["id"] for e in (await fx.message(timeout=1.0))[2].get("entities", [])]
            except (asyncio.TimeoutError, TimeoutError):
                pass
            assert "scene#scenery" not in later and sum(i.endswith("#model") for i in later) < len(prims), later
            # an operator (twinstage dialect) closes the valve: Foxglove sees value and colour change
            async with Client(b.url, token=OP_SECRET) as op:
                await op.set("/Testbed/Valve1", "opening", 0.0)
            valve = valve_model = None
            after: list[str] = []
            while valve is None or valve_model is None:
                sid, ts, payload = await fx.message()
                after += [e["id"] for e in payload.get("entities", [])]
                for e in payload.get("entities", []):
                    if e["id"] == "/Testbed/Valve1" and {m["key"]: m["value"] for m in e["metadata"]}["opening"] == "0 1":
                        valve = e
                    if e["id"] == "/Testbed/Valve1#model" and valve is not None:
                        valve_model = e
            assert _color(valve_model) != open_color and _color(valve_model) == (0.1, 0.3, 0.9)  # blue: at its minimum
            assert valve_model["models"][0]["override_color"]
            end = asyncio.get_running_loop().time() + 1.5
            try:
                while asyncio.get_running_loop().time() < end:
                    after += [e["id"] for e in (await fx.message(timeout=0.5))[2].get("entities", [])]
            except (asyncio.TimeoutError, TimeoutError):
                pass
            # deltas: only what changed; a label whose value moved goes without its model when the colour stayed
            assert "scene#scenery" not in after and "/Testbed/Valve2" not in after and "/Testbed/Valve2#model" not in after, after
            assert any(p in after and p + "#model" not in after for p in prims), after
            # unsupported ops get an error status; the connection stays
            await fx.ws.send(json.dumps({"op": "advertise", "channels": []}))
            await fx.ws.send("not json")
            await fx.unsubscribe(8)

            async def drain(seconds: float) -> list[int]:
                got = []
                try:
                    while True:
                        sid, _, _ = await fx.message(timeout=seconds)
                        got.append(sid)
                except (asyncio.TimeoutError, TimeoutError):
                    return got

            await drain(0.5)  # what was already in flight
            assert 8 not in await drain(1.0), "scene messages after unsubscribe"  # the twin ticks at 20 Hz meanwhile
            assert [s["level"] for s in fx.status[:2]] == [2, 2]

    arun(go())


def test_foxglove_moves_assets_driven_by_a_vec3(bridge, tmp_path):
    scene = tmp_path / "factory.usda"
    generate_factory(4, scene, items=3)
    b = bridge(scene, rate=20)

    async def go():
        async with FoxgloveClient(b.url, VIEW_SECRET) as fx:
            await fx.subscribe(1, "foxglove.FrameTransforms")
            seen: dict[str, list] = {}
            while not any(len(v) >= 3 for k, v in seen.items() if "Item" in k):
                _, _, payload = await fx.message()
                for t in payload["transforms"]:
                    seen.setdefault(t["child_frame_id"], []).append(t["translation"]["x"])
            item = next(v for k, v in seen.items() if "Item" in k and len(v) >= 3)
            assert len(set(item)) > 1  # the conveyor item moves

    arun(go())


def test_foxglove_without_token_is_refused(bridge):
    b = bridge()

    async def go():
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            await connect(b.url, subprotocols=["foxglove.websocket.v1"], proxy=None)
        except InvalidStatus as e:
            assert e.response.status_code == 401
        else:
            raise AssertionError("connected without a token")

    arun(go())


def test_foxglove_falls_back_to_cubes_without_a_usable_glb(bridge):
    """No GLB (or one that cannot be split): a cube per asset, as before; the state still flows."""
    for broken in ("none", "junk"):
        b = bridge()
        if broken == "none":
            b.server.hello_builder.glb = None
        else:
            b.server.hello_builder.glb.data = b"glTF junk, not a GLB"

        async def go():
            async with FoxgloveClient(b.url, VIEW_SECRET) as fx:
                await fx.subscribe(1, "foxglove.SceneUpdate")
                _, _, payload = await fx.message()
                ents = {e["id"]: e for e in payload["entities"]}
                assert set(ents) == set(b.twin.table.prims), set(ents)
                assert all(e["cubes"] and not e["models"] for e in ents.values())

        arun(go())


def test_glb_split_refuses_what_it_cannot_split():
    from twinstage.bridge.dialects._glb_split import read_glb, split_glb, write_glb
    from twinstage.export import to_glb

    with pytest.raises(ValueError, match="not a GLB"):
        split_glb(b"glTF\x01\x00\x00\x00" + bytes(12), set())
    with pytest.raises(ValueError, match="not a GLB"):
        split_glb(b"PK\x03\x04 a zip file", set())
    doc, binary = read_glb(to_glb(ROOT / "scenes" / "pump_testbed.usda"))
    doc["scenes"][0]["nodes"] = [1, 2]
    with pytest.raises(ValueError, match="one root node, found 2"):
        split_glb(write_glb(doc, binary), {"/Testbed/Pump"})


def test_glb_split_on_hostile_bytes_says_value_error():
    """Any bytes: split parts, or a ValueError that says what is wrong — never a crash of another kind."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from twinstage.bridge.dialects._glb_split import split_glb, write_glb

    @settings(max_examples=150, deadline=None)
    @given(st.one_of(st.binary(max_size=64), st.builds(lambda b: b"glTF\x02\x00\x00\x00" + b, st.binary(max_size=64)),
                     st.builds(lambda d: write_glb(d, b""), st.dictionaries(st.sampled_from(["scenes", "scene", "nodes"]),
                                                                            st.lists(st.integers(-2, 3), max_size=3), max_size=3))))
    def run(data: bytes) -> None:
        try:
            split_glb(data, {"/A"})
        except ValueError as exc:
            assert "GLB" in str(exc)

    run()
