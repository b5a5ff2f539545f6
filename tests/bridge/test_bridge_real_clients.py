"""Failures found by clients written from docs/protocol.md alone (issue 10), each reproduced over a
real websocket on 127.0.0.1: bad input that must be ``bad_json``, acks that come after their
effects, floods that lose no ack, JsonUtility defaults, close frames."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from _bridgeutil import ADMIN_SECRET, OP_SECRET, VIEW_SECRET, arun, recv_json, request, ws_connect

from twinstage.bridge import Client


async def _hello(url: str, token: str = OP_SECRET, **kw) -> tuple[object, dict]:
    ws = await ws_connect(url, token=token, **kw)
    return ws, await recv_json(ws, lambda m: m["type"] == "hello")


def _tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("twinstage.bridge") and (r.exc_info or r.levelno >= logging.ERROR)]


def test_deep_nesting_and_huge_numbers_are_bad_json_with_the_id(bridge, caplog):
    b = bridge()
    caplog.set_level(logging.WARNING)

    async def go():
        ws, _ = await _hello(b.url)
        await ws.send("[" * 5000 + "]" * 5000)  # RecursionError in the parser
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert m["code"] == "bad_json" and "deep" in m["message"], m
        await ws.send('{"type": "command", "id": "deep", "command": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}")
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert (m["code"], m["id"]) == ("bad_json", "deep"), m
        big = '{"type": "set", "id": "big", "prim": "/Testbed/Valve1", "attribute": "opening", "value": 1' + "0" * 400 + "}"
        await ws.send(big)  # OverflowError converting to a double
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert (m["code"], m["id"]) == ("bad_json", "big") and "out of range" in m["message"], m
        await ws.send('{"type": "set", "id": "nan", "value": NaN}')
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert (m["code"], m["id"]) == ("bad_json", "nan"), m
        assert (await request(ws, {"type": "command", "id": "alive", "command": "ping"}))["type"] == "ack"
        await ws.close()

    arun(go())
    assert _tracebacks(caplog) == []


def test_missing_type_and_non_string_type_say_so(bridge):
    b = bridge()

    async def go():
        ws, _ = await _hello(b.url)
        await ws.send('{"id": "a1", "command": "ping"}')
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert m["code"] == "bad_message" and "'type'" in m["message"] and m["of"] != "None" and m["id"] == "a1", m
        await ws.send('{"type": 7, "id": "a2"}')
        m = await recv_json(ws, lambda m: m["type"] == "error")
        assert m["code"] == "bad_message" and m["id"] == "a2" and "string" in m["message"], m
        await ws.close()

    arun(go())


def test_two_concurrent_steps_are_acked_after_their_last_ticks_delta(bridge):
    b = bridge(rate=50)

    async def go():
        ws, _ = await _hello(b.url)
        assert (await request(ws, {"type": "subscribe", "id": "s", "encoding": "json"}))["type"] == "ack"
        p = await request(ws, {"type": "command", "id": "p", "command": "pause"})
        assert p["type"] == "ack" and p["paused"]
        for i in (1, 2):
            await ws.send(json.dumps({"type": "command", "id": f"st{i}", "command": "step", "steps": 5}))
        top, acks = 0, {}
        while len(acks) < 2:
            m = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot", "ack", "error"))
            if m["type"] in ("delta", "snapshot"):
                top = max(top, m["tick"])
            else:
                assert m["type"] == "ack", m
                assert top >= m["tick"], f"ack {m['id']} for tick {m['tick']} came before that tick's delta (latest seen {top})"
                acks[m["id"]] = m["tick"]
        assert sorted(acks.values()) == [p["tick"] + 5, p["tick"] + 10], (p["tick"], acks)
        try:  # paused again after 10 ticks: nothing newer comes
            extra = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot"), timeout=0.5)
            assert extra["tick"] <= max(acks.values()), extra
        except asyncio.TimeoutError:
            pass
        await ws.close()

    arun(go())


def test_pause_is_acked_with_the_last_tick_sent(bridge):
    b = bridge(rate=50)

    async def go():
        ws, _ = await _hello(b.url)
        await request(ws, {"type": "subscribe", "id": "s", "encoding": "json"})
        await recv_json(ws, lambda m: m["type"] == "delta")
        for round in range(3):
            await ws.send(json.dumps({"type": "command", "id": f"p{round}", "command": "pause"}))
            top = 0
            while True:
                m = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot", "ack", "error"))
                if m["type"] == "ack":
                    break
                top = max(top, m["tick"])
            assert m["paused"] and m["tick"] == top == b.twin.clock.tick, (m, top)
            with pytest.raises(asyncio.TimeoutError):  # no delta after the pause ack
                await recv_json(ws, lambda m: m["type"] == "delta", timeout=0.4)
            assert (await request(ws, {"type": "command", "id": f"r{round}", "command": "resume"}))["type"] == "ack"
            await recv_json(ws, lambda m: m["type"] == "delta")
        await ws.close()

    arun(go())


def test_a_flood_answers_every_accepted_request_and_no_unacked_set_takes_effect(bridge):
    b = bridge(rate=50, commands_per_second=20, command_burst=40)

    async def go():
        ws, _ = await _hello(b.url)
        n = 1000
        msgs = [json.dumps({"type": "set", "id": f"s{i}", "prim": "/Testbed/Valve1", "attribute": "opening", "value": round(0.1 + i * 0.0008, 6)})
                for i in range(n)]
        try:
            for m in msgs:
                await ws.send(m)
        except Exception:
            pass
        replies: dict[str, dict] = {}
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    m = json.loads(raw)
                    if m["type"] in ("ack", "error"):
                        assert m["id"] not in replies, m
                        replies[m["id"]] = m
        except Exception:
            pass
        assert ws.close_code == 1008
        acked = sorted(int(k[1:]) for k, m in replies.items() if m["type"] == "ack")
        assert acked and all(m.get("code") == "rate_limited" for m in replies.values() if m["type"] == "error")
        return acked

    acked = arun(go())
    t = b.twin.clock.tick
    assert _wait(lambda: b.twin.clock.tick >= t + 3)
    value = b.twin.get("/Testbed/Valve1", "opening")
    assert value == pytest.approx(round(0.1 + acked[-1] * 0.0008, 6)), (value, acked[-5:])  # the last acked set, not a later one


def _wait(pred, timeout=10.0) -> bool:
    from _bridgeutil import wait_for

    return wait_for(pred, timeout)


def test_jsonutility_defaults_mean_the_default(bridge):
    b = bridge()

    async def go():
        ws, _ = await _hello(b.url, token=VIEW_SECRET)
        sub = {"type": "subscribe", "id": "u", "prefixes": [], "attributes": [], "encoding": "", "maxRate": 0}
        a = await request(ws, sub)
        assert a["type"] == "ack", a
        snap = await recv_json(ws, lambda m: m["type"] == "snapshot")  # json: a text message
        assert snap["reason"] == "subscribe" and snap["indices"]
        for bad in ({**sub, "id": "neg", "maxRate": -1}, {**sub, "type": "resume", "id": "negseq", "session": "x", "lastSeq": -5}):
            e = await request(ws, bad)
            assert e["type"] == "error" and e["code"] == "bad_message", e
        await ws.close()

    arun(go())


def test_a_wrong_first_message_token_gets_an_error_frame_then_4401(bridge):
    b = bridge()

    async def go():
        ws = await ws_connect(b.url, origin=f"http://127.0.0.1:{b.port}")
        await ws.send(json.dumps({"type": "auth", "token": "wrong-wrong-wrong"}))
        msgs = []
        try:
            async for m in ws:
                msgs.append(json.loads(m))
        except Exception:
            pass
        assert ws.close_code == 4401
        assert [(m["type"], m["code"], m["of"]) for m in msgs] == [("error", "unauthorized", "auth")]

    arun(go())


def test_resume_at_the_current_seq_repeats_nothing(bridge):
    b = bridge(rate=50)

    async def go():
        async with Client(b.url, token=OP_SECRET) as c:
            await c.subscribe(encoding="json")
            await c.pause()
            session, seq = c.hello["session"], c.seq
            assert seq == b.server.seq
        ws, _ = await _hello(b.url)
        a = await request(ws, {"type": "resume", "id": "r", "session": session, "lastSeq": seq, "encoding": "json"})
        assert a["type"] == "ack" and a["detail"] == "current" and a["seq"] == seq, a
        with pytest.raises(asyncio.TimeoutError):
            m = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot"), timeout=0.5)
            assert m["seq"] > seq, f"a state message repeating seq {seq}"
        await ws.close()
        async with Client(b.url, token=OP_SECRET) as c:  # the Python client resumes the same way
            await c.subscribe(encoding="binary")
            s = c.seq
            ack = await c.reconnect()
            assert ack["detail"] == "current" and c.seq == s

    arun(go())


def test_shutdown_sends_every_client_a_close_frame_1001(bridge):
    b = bridge()

    async def go():
        ws1, _ = await _hello(b.url, token=VIEW_SECRET)
        c = Client(b.url, token=ADMIN_SECRET)
        await c.connect()
        await c.subscribe(encoding="binary")
        await asyncio.get_running_loop().run_in_executor(None, b.server.close)
        try:
            async for _ in ws1:
                pass
        except Exception:
            pass
        await c.wait_until(lambda c: c.closed_code is not None, 10)
        return ws1.close_code, c.closed_code

    assert arun(go()) == (1001, 1001)


def test_every_json_frame_validates_against_the_committed_schema(bridge):
    """hello, ack, error, snapshot, delta, alarm, event and structure, as sent, checked by jsonschema."""
    import pathlib

    import jsonschema

    schema = json.loads((pathlib.Path(__file__).parents[2] / "docs" / "protocol.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "oneOf": [{"$ref": "#/$defs/serverMessage"}]})
    b = bridge(run=False)
    twin = b.twin

    async def go():
        ws, hello = await _hello(b.url, token=ADMIN_SECRET)
        seen = [hello]

        async def reader():
            async for raw in ws:
                if isinstance(raw, str):
                    seen.append(json.loads(raw))

        task = asyncio.get_running_loop().create_task(reader())
        for msg in ({"type": "subscribe", "id": "s", "encoding": "json"}, {"type": "set", "id": "bad", "prim": "/Testbed/Valve1", "attribute": "opening",
                    "value": 7}, {"type": "command", "id": "c", "command": "clients"}):
            await ws.send(json.dumps(msg))
        await ws.send("{oops")
        await asyncio.sleep(0.3)

        def work():
            from pxr import UsdGeom

            twin.table["motorTemperature"][twin.table.row("/Testbed/Pump", "motorTemperature")] = 250.0
            twin.tick()
            UsdGeom.Cube.Define(twin.stage, "/Testbed/Marker")
            twin.tick()

        await asyncio.get_running_loop().run_in_executor(None, work)
        await ws.send(json.dumps({"type": "command", "id": "r", "command": "resume"}))
        want = {"hello", "ack", "error", "snapshot", "delta", "alarm", "event", "structure"}
        for _ in range(100):
            if {m["type"] for m in seen} >= want:
                break
            await asyncio.sleep(0.05)
        assert {m["type"] for m in seen} >= want, want - {m["type"] for m in seen}
        await ws.close()
        await task
        return seen

    for m in arun(go()):
        errors = sorted(validator.iter_errors(m), key=str)
        assert not errors, (m["type"], [e.message for e in errors[:3]])


def test_compact_json_carries_the_same_state_in_less_space(bridge, factory_1k):
    """encoding "compact": values in the snapshot's order, quality only where not good; the Python
    client applied it to the same state a binary client has, and it is smaller than indexed JSON."""
    import pathlib

    import jsonschema

    schema = json.loads((pathlib.Path(__file__).parents[2] / "docs" / "protocol.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "oneOf": [{"$ref": "#/$defs/serverMessage"}]})
    b = bridge(factory_1k, run=False)
    twin = b.twin

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as cc, Client(b.url, token=VIEW_SECRET) as cb:
            await cc.subscribe(["/Factory"], encoding="compact")
            await cb.subscribe(["/Factory"], encoding="binary")
            ws, _ = await _hello(b.url, token=VIEW_SECRET)
            sizes = {}
            for enc in ("json", "compact"):
                await ws.send(json.dumps({"type": "subscribe", "id": enc, "prefixes": ["/Factory/Machines"], "encoding": enc}))
                snap = await recv_json(ws, lambda m: m["type"] == "snapshot", 30)
                await asyncio.get_running_loop().run_in_executor(None, twin.tick)
                raw = await asyncio.wait_for(ws.recv(), 30)
                m = json.loads(raw)
                assert m["type"] == ("delta" if enc == "json" else "values"), m["type"]
                assert not list(validator.iter_errors(m))
                sizes[enc] = len(raw)
                if enc == "compact":  # 1000 of 5000 entries changed: the changed ones, with indices, no quality column
                    assert len(m["values"]) == len(m["indices"]) == 1000 and len(snap["indices"]) == 5000
                    assert len(m["flagged"]) == len(m["flaggedQuality"]) and all(q for q in m["flaggedQuality"])
            # every subscribed entry changes: the full vector in snapshot order, no indices at all
            await ws.send(json.dumps({"type": "subscribe", "id": "t", "attributes": ["temperature", "position"], "encoding": "compact"}))
            snap = await recv_json(ws, lambda m: m["type"] == "snapshot", 30)
            await asyncio.get_running_loop().run_in_executor(None, twin.tick)
            m = await recv_json(ws, lambda m: m["type"] == "values", 30)
            assert m["indices"] == [] and m["vec3Indices"] == [] and len(m["values"]) == len(snap["indices"]) == 1000
            assert len(m["vec3Values"]) == 3 * len(snap["vec3Indices"]) == 600
            sizes["full"] = len(json.dumps(m))
            loop = asyncio.get_running_loop()
            for _ in range(3):
                await loop.run_in_executor(None, twin.tick)
            await cc.wait_until(lambda c: c.tick == twin.clock.tick, 20)
            await cb.wait_until(lambda c: c.tick == twin.clock.tick, 20)
            assert cc.values() == cb.values() and len(cc.values()) > 1000
            assert all(cc.quality(p, a) == cb.quality(p, a) for p, a in list(cc.values())[:500])
            await ws.close()
            return sizes

    sizes = arun(go(), 120)
    assert sizes["compact"] < 0.95 * sizes["json"], sizes


def test_compact_hello_is_small_and_expands_to_the_same_tables(bridge, factory_1k):
    """?hello=compact: the attribute table once per channel, assets as columns; < 100 bytes per asset
    (so ≤ 1 MB at 10k assets) and the same information as the rows layout."""
    import pathlib

    import jsonschema

    schema = json.loads((pathlib.Path(__file__).parents[2] / "docs" / "protocol.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "oneOf": [{"$ref": "#/$defs/serverMessage"}]})
    b = bridge(factory_1k, run=False)

    async def go():
        ws = await ws_connect(b.url + "?hello=compact", token=VIEW_SECRET)
        raw = await asyncio.wait_for(ws.recv(), 30)
        await ws.close()
        ws = await ws_connect(b.url + "?hello=rows", token=VIEW_SECRET)  # without ?hello= this scene (rows > 1 MB) gets compact
        raw_rows = await asyncio.wait_for(ws.recv(), 30)
        await ws.close()
        async with Client(b.url, token=VIEW_SECRET, hello="compact") as cc, Client(b.url, token=VIEW_SECRET, hello="rows") as cr:
            assert cc.hello["layout"] == "compact" and cr.hello["layout"] == "rows"
            assert cc.attributes == cr.attributes
            for p, q in zip(cc.hello["prims"], cr.hello["prims"], strict=True):
                for k in ("position", "origin", "center", "size"):
                    assert p[k] == pytest.approx(q[k], abs=1e-5), (p["path"], k)
                    p[k] = q[k]
                assert p == q
            await cc.subscribe(["/Factory/Machines/M0003"], encoding="json")
            assert cc.get("/Factory/Machines/M0003", "temperature") == b.twin.get("/Factory/Machines/M0003", "temperature")
        return raw, raw_rows

    raw, raw_rows = arun(go(), 120)
    hello = json.loads(raw)
    assert not list(validator.iter_errors(hello))
    assets = hello["assets"]["count"]
    assert assets == len(json.loads(raw_rows)["prims"]) > 1000
    assert len(raw) < 100 * assets and len(raw) < len(raw_rows) / 10, (len(raw), len(raw_rows))
