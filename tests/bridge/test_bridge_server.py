"""The server over real loopback sockets: hello/snapshot/delta, filtering, rates, merging,
resume, stalled clients, structure, alarms, commands and their replies."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _bridgeutil import ADMIN_SECRET, OP_SECRET, VIEW_SECRET, RawClient, arun, recv_json, request, wait_for, ws_frame, ws_connect

import twinstage
from twinstage.bridge import BridgeError, Client, Server
from twinstage.bridge._messages import SERVER_TYPES


def test_hello_snapshot_deltas_validate_against_the_protocol_classes(bridge):
    b = bridge()

    async def go():
        ws = await ws_connect(b.url, token=VIEW_SECRET)
        assert ws.subprotocol == "twinstage.v1"
        hello = json.loads(await ws.recv())
        SERVER_TYPES["hello"].model_validate(hello)
        assert hello["session"] == b.server.session and hello["role"] == "viewer" and hello["user"] == "watch"
        assert len(hello["attributes"]) == b.twin.table.n_entries
        assert [a["index"] for a in hello["attributes"]] == list(range(b.twin.table.n_entries))
        pump = next(p for p in hello["prims"] if p["path"] == "/Testbed/Pump")
        assert pump["kind"] == "pump" and pump["size"][0] > 0 and hello["attributes"][pump["colorBy"]]["prim"] == "/Testbed/Pump"
        flow = next(a for a in hello["attributes"] if a["prim"] == "/Testbed/Pump" and a["attribute"] == "flowRate")
        assert (flow["unit"], flow["type"], flow["min"], flow["max"]) == ("L/min", "float", 0.0, 300.0)
        ack = await request(ws, {"type": "subscribe", "id": "s1", "encoding": "json"})
        SERVER_TYPES["ack"].model_validate(ack)
        assert ack["count"] == b.twin.table.n_entries
        snap = await recv_json(ws, lambda m: m["type"] == "snapshot")
        SERVER_TYPES["snapshot"].model_validate(snap)
        assert snap["reason"] == "subscribe" and len(snap["indices"]) + len(snap["vec3Indices"]) == b.twin.table.n_entries
        seqs = [snap["seq"]]
        for _ in range(8):
            d = await recv_json(ws, lambda m: m["type"] == "delta")
            SERVER_TYPES["delta"].model_validate(d)
            seqs.append(d["seq"])
        assert all(b > a for a, b in zip(seqs, seqs[1:]))
        await ws.close()

    arun(go())


def test_json_and_binary_carry_the_same_state(bridge):
    b = bridge(run=False)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as cj, Client(b.url, token=VIEW_SECRET) as cb:
            await cj.subscribe(encoding="json")
            await cb.subscribe(encoding="binary")
            assert cj.values() == cb.values()
            for _ in range(3):
                await asyncio.get_running_loop().run_in_executor(None, b.twin.tick)
            await cj.wait_until(lambda c: c.tick == b.twin.tick_count)
            await cb.wait_until(lambda c: c.tick == b.twin.tick_count)
            assert cj.values() == cb.values()
            assert cj.values()[("/Testbed/Pump", "flowRate")] == b.twin.get("/Testbed/Pump", "flowRate")

    arun(go())


def test_subscription_filters_by_prefix_and_attribute_and_rate(bridge):
    b = bridge(rate=40)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as c:
            ack = await c.subscribe(prefixes=["/Testbed/Sensors"], attributes=["pressure", "flowRate"], encoding="json")
            assert ack["count"] == 2
            assert set(c.values()) == {("/Testbed/Sensors/PressureSensor", "pressure"), ("/Testbed/Sensors/FlowMeter", "flowRate")}
            with pytest.raises(KeyError):
                c.get("/Testbed/Pump", "flowRate")
            # a prefix matches the prim and its descendants, not siblings that share a name prefix
            ack = await c.subscribe(prefixes=["/Testbed/Valve1"], encoding="binary")
            assert set(c.values()) == {("/Testbed/Valve1", "opening")}
            with pytest.raises(BridgeError) as e:
                await c.subscribe(attributes=["noSuchThing"])
            assert e.value.code == "not_found"
            await c.subscribe(encoding="binary", max_rate=5)
            n0, t0 = c.deltas, c.tick
            await c.wait_until(lambda c: c.tick >= t0 + 40, 20)  # 1 s of twin time at 40 Hz
            assert c.deltas - n0 <= 10  # ~5 per second, merged (latest wins)
            assert c.gaps >= 1 and c.merged >= 1

    arun(go())


def test_every_reply_matches_its_id_exactly_once(bridge):
    b = bridge()

    async def go():
        ws = await ws_connect(b.url, token=OP_SECRET)
        await recv_json(ws, lambda m: m["type"] == "hello")
        msgs = []
        for i in range(30):
            if i % 3 == 0:
                msgs.append({"type": "set", "id": f"r{i}", "prim": "/Testbed/Valve1", "attribute": "opening", "value": (i % 10) / 10})
            elif i % 3 == 1:
                msgs.append({"type": "command", "id": f"r{i}", "command": "ping"})
            else:
                msgs.append({"type": "set", "id": f"r{i}", "prim": "/Testbed/Nope", "attribute": "opening", "value": 1})
        for m in msgs:
            await ws.send(json.dumps(m))
        replies: dict[str, list[dict]] = {}
        while sum(len(v) for v in replies.values()) < len(msgs):
            r = await recv_json(ws, lambda m: m["type"] in ("ack", "error"))
            replies.setdefault(r["id"], []).append(r)
        await asyncio.sleep(0.3)  # nothing more may come for these ids
        try:
            while True:
                r = await recv_json(ws, lambda m: m["type"] in ("ack", "error"), timeout=0.2)
                replies.setdefault(r["id"], []).append(r)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        assert sorted(replies) == sorted(m["id"] for m in msgs)
        assert all(len(v) == 1 for v in replies.values())
        for i, m in enumerate(msgs):
            want = "error" if i % 3 == 2 else "ack"
            assert replies[m["id"]][0]["type"] == want
        await ws.close()

    arun(go())


def test_commands_pause_step_resume_and_events(bridge):
    b = bridge()

    async def go():
        async with Client(b.url, token=OP_SECRET) as c, Client(b.url, token=VIEW_SECRET) as v:
            await c.subscribe()
            ack = await c.pause()
            assert ack["paused"] is True and b.twin.clock.paused
            await asyncio.sleep(0.2)
            t = b.twin.tick_count
            ack = await c.step(3)
            assert ack["count"] == 3 and ack["tick"] >= t + 3 and b.twin.clock.paused
            await c.wait_until(lambda c: c.tick >= t + 3)
            await asyncio.sleep(0.2)
            assert b.twin.tick_count == t + 3  # exactly three ticks while paused
            with pytest.raises(BridgeError) as e:
                await v.pause()
            assert e.value.code == "forbidden"
            with pytest.raises(BridgeError) as e:
                await c.command("clients")
            assert e.value.code == "forbidden"
            with pytest.raises(BridgeError) as e:
                await c.command("selfdestruct")
            assert e.value.code == "unknown_type"
            await c.play()
            await c.wait_until(lambda c: c.tick > t + 5)
            kinds = [e["kind"] for e in v.events]
            assert {"paused", "stepped", "resumed"} <= set(kinds)
        async with Client(b.url, token=ADMIN_SECRET) as a:
            ack = await a.command("clients")
            assert ack["count"] == 1 and ack["clients"][0]["user"] == "root"

    arun(go())


def test_step_times_out_when_the_twin_does_not_tick(bridge):
    b = bridge(run=False, command_timeout=0.5)

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            await c.pause()
            with pytest.raises(BridgeError) as e:
                await c.step(2)
            assert e.value.code == "timeout"
            assert await c.ping() >= 0  # the connection is fine

    arun(go())


def test_set_times_out_when_the_twin_holds_its_lock(bridge):
    b = bridge(run=False, command_timeout=0.5)

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            b.twin._lock.acquire()  # a twin that does not answer
            try:
                with pytest.raises(BridgeError) as e:
                    await c.set("/Testbed/Valve1", "opening", 0.5)
                assert e.value.code == "timeout"
            finally:
                b.twin._lock.release()

    arun(go())


def test_scenario_command_runs_timed_sets(bridge):
    scenarios = {"close_valve": [(0.0, "/Testbed/Valve1", "opening", 0.5), (0.2, "/Testbed/Valve1", "opening", 0.25)]}
    b = bridge(scenarios=scenarios)

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed/Valve1"])
            ack = await c.command("scenario", scenario="close_valve")
            assert ack["count"] == 2
            await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.25, 10)
            await c.wait_until(lambda c: any("finished" in e["message"] for e in c.events), 10)
            with pytest.raises(BridgeError) as e:
                await c.command("scenario", scenario="nope")
            assert e.value.code == "not_found"

    arun(go())


def test_resume_replays_missed_frames_as_one_delta_or_sends_a_snapshot(bridge):
    b = bridge(rate=40, ring_frames=40)

    async def go():
        c = Client(b.url, token=VIEW_SECRET)
        await c.connect()
        await c.subscribe(encoding="binary")
        await c.wait_until(lambda c: c.deltas >= 3)
        await c.ws.close()
        seen = c.seq
        await asyncio.sleep(0.3)  # ~12 frames at 40 Hz: inside the 40-frame ring
        ack = await c.reconnect()
        assert ack["detail"] == "delta" and ack["seq"] > seen + 1
        await c.wait_until(lambda c: c.seq >= ack["seq"])
        assert c.snapshots == 1  # no new snapshot: the missed frames came as one merged delta
        await c.ws.close()
        await asyncio.sleep(2.0)  # 80 frames: outside the ring
        ack = await c.reconnect()
        assert ack["detail"] == "snapshot"
        await c.wait_until(lambda c: c.snapshots == 2)
        # a resume from another session (a restarted server) gets a snapshot
        await c.ws.close()
        c.hello["session"] = "not-this-one"
        ack = await c.reconnect()
        assert ack["detail"] == "snapshot"
        await c.close()

    arun(go())


def test_sessions_are_new_per_server_start(pump_scene):
    ids = set()
    for _ in range(2):
        twin = twinstage.open(pump_scene, rate=10)
        s = Server("127.0.0.1", 0)
        twin.add_sink(s)
        ids.add(s.session)
        twin.close()
    assert len(ids) == 2


def test_a_slow_reader_gets_merged_deltas_with_seq_jumps_and_a_consistent_state(bridge, factory_1k):
    b = bridge(factory_1k, rate=50, send_buffer=16384, send_deadline=30, max_behind=100_000)

    async def go():
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", b.port))
        from websockets.asyncio.client import connect

        ws = await connect(b.url, sock=sock, additional_headers={"Authorization": f"Bearer {VIEW_SECRET}"}, compression=None, max_size=None,
                           subprotocols=["twinstage.v1"], max_queue=1)
        await recv_json(ws, lambda m: m["type"] == "hello")
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "encoding": "json"}))
        await recv_json(ws, lambda m: m["type"] == "snapshot", timeout=20)
        await asyncio.sleep(2.0)  # do not read: the server cannot send, frames pile up and are merged
        merged, seqs = [], []
        for _ in range(40):
            m = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot"), timeout=20)
            seqs.append(m["seq"])
            if m["type"] == "delta":
                merged.append(m["merged"])
        await ws.close()
        return merged, seqs

    merged, seqs = arun(go())
    assert all(b2 > a for a, b2 in zip(seqs, seqs[1:])), "seq must increase strictly"
    assert max(merged) > 1, "a reader that stopped for 2 s must get merged deltas"


def test_merged_delta_carries_the_latest_values(bridge):
    """The mailbox, driven directly: frames that arrive while a send is in flight are merged."""
    b = bridge(run=False)
    twin, server = b.twin, b.server

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed/Valve1", "/Testbed/Tank"], encoding="binary")
            session = next(s for s in server.sessions if getattr(s, "selection", None) is not None)
            gate = asyncio.Event()
            real_send = session.ws.send

            async def held_send(data):  # the client "stops reading": sends wait for the gate
                await gate.wait()
                await real_send(data)

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: (twin.set("/Testbed/Valve1", opening=0.9), twin.tick()))
            await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.9)
            server.loop.call_soon_threadsafe(setattr, session.ws, "send", held_send)
            before = c.seq
            for v in (0.1, 0.2, 0.3):
                await loop.run_in_executor(None, lambda v=v: (twin.set("/Testbed/Valve1", opening=v), twin.set("/Testbed/Tank", level=v), twin.tick()))
            await asyncio.sleep(0.2)
            server.loop.call_soon_threadsafe(gate.set)
            await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.3 and c.get("/Testbed/Tank", "level") == 0.3)
            assert c.seq == server.seq and c.seq - before == 3
            assert c.merged >= 1  # the first held frame went out alone, the other two merged

    arun(go())


def test_a_stalled_client_is_aborted_and_others_see_no_gap(bridge, factory_1k):
    b = bridge(factory_1k, rate=20, send_deadline=1.0, send_buffer=16384)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as good:
            await good.subscribe(["/Factory/Machines/M0007", "/Factory/Conveyors/Loop0/Item000"], encoding="binary")
            stalled = RawClient(b.port, headers={"Authorization": f"Bearer {VIEW_SECRET}"}, rcvbuf=4096)
            assert stalled.status == 101
            stalled.sock.sendall(ws_frame(json.dumps({"type": "subscribe", "id": "s", "encoding": "json"}).encode()))
            seq0, gaps0 = good.seq, good.gaps
            ok = await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(lambda: b.server.stats().get("aborted", 0) >= 1, 30))
            assert ok, "the stalled client was not aborted"
            await good.wait_until(lambda c: c.seq >= seq0 + 20, 20)
            assert good.gaps == gaps0, "the other client missed frames while one was stalled"
            stalled.close()
            assert len([s for s in b.server.sessions]) == 1

    arun(go(), 90)


def test_structure_messages_for_prims_added_and_removed(bridge, pump_scene):
    b = bridge(run=False)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as c:
            loop = asyncio.get_running_loop()

            def add():
                from pxr import UsdGeom

                cube = UsdGeom.Cube.Define(b.twin.stage, "/Testbed/Marker")
                UsdGeom.XformCommonAPI(cube).SetTranslate((1.0, 2.0, 3.0))

            await loop.run_in_executor(None, add)
            # the prim is announced when defined, and again (same path) once it has moved
            await c.wait_until(lambda c: any(a["position"] == [1.0, 2.0, 3.0] for s in c.structure for a in s["added"]))
            added = c.structure[-1]["added"][0]
            assert added["path"] == "/Testbed/Marker" and added["kind"] == "Cube" and added["size"] == [2.0, 2.0, 2.0]
            async with Client(b.url, token=VIEW_SECRET) as late:  # a late joiner learns it from the hello
                assert [(p["path"], p["position"]) for p in late.hello["added"]] == [("/Testbed/Marker", [1.0, 2.0, 3.0])]
            await loop.run_in_executor(None, lambda: b.twin.stage.RemovePrim("/Testbed/Marker"))
            await c.wait_until(lambda c: any(s["removed"] for s in c.structure))
            assert c.structure[-1]["removed"] == ["/Testbed/Marker"]
            # value writes by the twin are not structure changes
            n = len(c.structure)
            for _ in range(3):
                await loop.run_in_executor(None, b.twin.tick)
            await asyncio.sleep(0.2)
            assert len(c.structure) == n

    arun(go())


def test_alarms_when_a_value_leaves_its_limits(bridge):
    b = bridge(run=False)

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as c:
            await c.subscribe(prefixes=["/Testbed/Pump"])
            loop = asyncio.get_running_loop()

            def overheat():
                b.twin.table["motorTemperature"][b.twin.table.row("/Testbed/Pump", "motorTemperature")] = 250.0  # a model gone wrong
                b.twin.tick()

            await loop.run_in_executor(None, overheat)
            await c.wait_until(lambda c: any(a["active"] for a in c.alarms))
            a = c.alarms[0]
            assert (a["prim"], a["attribute"], a["severity"]) == ("/Testbed/Pump", "motorTemperature", "warning")
            await c.wait_until(lambda c: c.quality("/Testbed/Pump", "motorTemperature") & 2)  # the delta with the flag follows

    arun(go())


def test_server_survives_many_connects_and_disconnects(bridge):
    b = bridge()

    async def go():
        for i in range(20):
            ws = await ws_connect(b.url, token=VIEW_SECRET)
            await recv_json(ws, lambda m: m["type"] == "hello")
            if i % 2:
                await ws.send(json.dumps({"type": "subscribe", "id": "s", "encoding": "binary"}))
            ws.transport.abort() if i % 3 == 0 else await ws.close()
        async with Client(b.url, token=VIEW_SECRET) as c:
            await c.subscribe()
            await c.wait_until(lambda c: c.deltas >= 3)

    arun(go())
    assert wait_for(lambda: len(b.server.sessions) == 0, 10)
    assert np.isfinite(b.twin.get("/Testbed/Pump", "flowRate"))


def test_a_port_in_use_is_a_clear_error(bridge, pump_scene):
    b = bridge(run=False)
    twin = twinstage.open(pump_scene)
    try:
        with pytest.raises(OSError, match="cannot listen"):
            twin.add_sink(Server("127.0.0.1", b.port))
    finally:
        twin.close()


def test_an_alarm_attribute_raises_and_clears_alarm_events(pump_scene):
    """A bool attribute with twin:<name>:alarmHigh authored (the detector's anomalyAlarm) becomes alarm events."""
    import twinstage
    from twinstage.bridge._alarms import alarm_flags, derive_alarms
    from twinstage.bridge._state import Mirror

    twin = twinstage.open(pump_scene, headless=True)
    try:
        flags = alarm_flags(twin.table, twin.stage)
        assert "anomalyAlarm" in flags and flags["anomalyAlarm"].sum() == 1
        mirror = Mirror(twin.table)
        mirror.alarm_flags = flags
        twin.set("/Testbed/Pump", anomalyAlarm=True, anomalyScore=7.5)
        frame = twin.tick()
        alarms, extra = derive_alarms(mirror, 1, frame)
        mirror.apply(frame, 1)
        raised = [json.loads(a) for name, _, a in alarms if name == "anomalyAlarm"]
        assert extra == 0 and len(raised) == 1, alarms
        assert raised[0]["active"] is True and raised[0]["severity"] == "critical" and "score 7.5" in raised[0]["message"]
        frame = twin.tick()  # nothing changed: no alarm again
        assert not [a for a in derive_alarms(mirror, 2, frame)[0] if a[0] == "anomalyAlarm"]
        mirror.apply(frame, 2)
        twin.set("/Testbed/Pump", anomalyAlarm=False)
        frame = twin.tick()
        cleared = [json.loads(a) for name, _, a in derive_alarms(mirror, 3, frame)[0] if name == "anomalyAlarm"]
        assert len(cleared) == 1 and cleared[0]["active"] is False and "cleared" in cleared[0]["message"]
    finally:
        twin.close()
