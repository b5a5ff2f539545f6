"""The Foxglove dialect, checked by a client that follows the foxglove.websocket.v1 spec:
serverInfo, advertise (JSON channels with JSON Schemas), subscribe/unsubscribe, binary message
data (opcode 1, subscription id, timestamp, payload) validated against the advertised schema."""

from __future__ import annotations

import asyncio
import json
import struct

import jsonschema
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun

from twinstage.bridge import Client
from twinstage.scenes import generate_factory


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
    c = entity["cubes"][0]["color"]
    return (c["r"], c["g"], c["b"])


def test_foxglove_scene_update_and_transforms(bridge):
    b = bridge()

    async def go():
        async with FoxgloveClient(b.url, VIEW_SECRET) as fx:
            assert set(fx.channels) == {"foxglove.SceneUpdate", "foxglove.FrameTransforms"}
            await fx.subscribe(7, "foxglove.FrameTransforms")
            await fx.subscribe(8, "foxglove.SceneUpdate")
            scene, tf = None, None
            while scene is None or tf is None:
                sid, ts, payload = await fx.message()
                assert ts > 0
                if sid == 8 and len(payload["entities"]) == len(b.twin.table.prims):
                    scene = payload
                if sid == 7:
                    tf = payload
            frames = {t["child_frame_id"]: t for t in tf["transforms"]}
            assert all(t["parent_frame_id"] == "world" for t in tf["transforms"])
            ents = {e["id"]: e for e in scene["entities"]}
            pump = ents["/Testbed/Pump"]
            assert pump["frame_id"] in frames and frames[pump["frame_id"]]["translation"]["x"] == 0.2
            meta = {m["key"]: m["value"] for m in pump["metadata"]}
            assert meta["flowRate"].endswith(" L/min") and meta["motorTemperature"].endswith(" degC")
            assert pump["cubes"][0]["size"]["x"] > 0 and "motorTemperature" in pump["texts"][0]["text"]
            open_color = _color(ents["/Testbed/Valve1"])
            # an operator (twinstage dialect) closes the valve: Foxglove sees value and colour change
            async with Client(b.url, token=OP_SECRET) as op:
                await op.set("/Testbed/Valve1", "opening", 0.0)
            while True:
                sid, ts, payload = await fx.message()
                valve = next((e for e in payload.get("entities", []) if e["id"] == "/Testbed/Valve1"), None)
                if valve and {m["key"]: m["value"] for m in valve["metadata"]}["opening"] == "0 1":
                    break
            assert _color(valve) != open_color and _color(valve) == (0.1, 0.3, 0.9)  # blue: at its minimum
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
