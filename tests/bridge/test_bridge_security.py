"""Security and bad input, each over a real loopback connection, while an observer client checks
that the server stays up and other clients see no gap."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from _bridgeutil import (ADMIN_SECRET, OP_SECRET, VIEW_SECRET, RawClient, arun, close_code, recv_json, request, wait_for, ws_connect,
                         ws_frame)

from twinstage.bridge import BridgeError, Client


class Observer:
    """A viewer subscribed to everything whose deltas must stay contiguous."""

    def __init__(self, url: str, prefixes: tuple[str, ...] = ()):
        self.c = Client(url, token=VIEW_SECRET)
        self.prefixes = list(prefixes)

    async def __aenter__(self) -> "Observer":
        await self.c.connect()
        await self.c.subscribe(self.prefixes, encoding="binary")
        self.seq0 = self.c.seq
        return self

    async def __aexit__(self, *exc) -> None:
        c = self.c
        seq = c.seq
        await c.wait_until(lambda c: c.seq >= seq + 3, 20)  # still live after the abuse
        # Not hurt: still live, never resynchronised, and at most an occasional merge — a client that
        # falls more than 2 ticks behind on a loaded machine gets merged deltas by design (bounded age)
        frames = c.seq - self.seq0
        assert c.snapshots == 1 and c.gaps * 10 <= frames + 10, f"observer saw {c.gaps} gaps in {frames} frames, {c.snapshots} snapshots"
        assert c.closed_code is None
        await c.close()


def _http_401_without_state(raw: RawClient) -> None:
    data = raw.read_all()
    assert raw.status == 401, raw.response
    assert b"TWB1" not in data and b"hello" not in data and b"snapshot" not in data
    raw.close()


def test_missing_or_wrong_token_is_401_before_any_state_byte(bridge):
    b = bridge()

    async def go():
        async with Observer(b.url):
            _http_401_without_state(RawClient(b.port))  # no token at all (not a browser)
            _http_401_without_state(RawClient(b.port, headers={"Authorization": "Bearer wrong-secret-123"}))
            _http_401_without_state(RawClient(b.port, path="/?token=wrong-secret-123"))
            from websockets.exceptions import InvalidStatus

            with pytest.raises(InvalidStatus) as e:
                await ws_connect(b.url, token="nope-nope-nope")
            assert e.value.response.status_code == 401

    arun(go())


def test_tokens_by_header_query_and_first_message(bridge):
    b = bridge()

    async def go():
        for send in ("header", "query"):
            async with Client(b.url, token=OP_SECRET, send_token=send) as c:
                assert (c.hello["role"], c.hello["user"]) == ("operator", "ops")
        # a browser (it sends an Origin) may connect without a token and authenticate first
        async with Client(b.url, token=ADMIN_SECRET, send_token="message", origin=f"http://127.0.0.1:{b.port}") as c:
            assert (c.hello["role"], c.hello["user"]) == ("admin", "root")
            await c.subscribe()
        # ... a wrong first-message token closes with 4401 and no state
        ws = await ws_connect(b.url, origin=f"http://127.0.0.1:{b.port}")
        await ws.send(json.dumps({"type": "auth", "token": "wrong-wrong-wrong"}))
        msgs = []
        try:
            async for m in ws:
                msgs.append(m)
        except Exception:
            pass
        assert ws.close_code == 4401
        assert all(json.loads(m)["type"] == "error" for m in msgs)

    arun(go())


def test_browser_that_never_authenticates_is_closed(bridge):
    b = bridge(auth_timeout=0.5)

    async def go():
        ws = await ws_connect(b.url, origin=f"http://127.0.0.1:{b.port}")
        got = []
        try:
            async for m in ws:
                got.append(m)
        except Exception:
            pass
        assert got == [] and ws.close_code == 4401

    arun(go())


def test_viewer_cannot_set_and_the_stage_stays_bit_identical(bridge):
    b = bridge(run=False)
    twin = b.twin

    def stage_bytes() -> tuple[str, str, dict]:
        return twin.stage.GetRootLayer().ExportToString(), twin.live_layer.ExportToString(), {k: v.tobytes() for k, v in twin.table.snapshot().items()}

    before = stage_bytes()
    valve = twin.get("/Testbed/Valve1", "opening")

    async def go():
        async with Client(b.url, token=VIEW_SECRET) as v, Client(b.url, token=OP_SECRET) as op:
            with pytest.raises(BridgeError) as e:
                await v.set("/Testbed/Valve1", "opening", 0.1)
            assert e.value.code == "forbidden"
            with pytest.raises(BridgeError) as e:  # an operator may not overwrite model state
                await op.set("/Testbed/Pump", "flowRate", 1.0)
            assert e.value.code == "forbidden"

    arun(go())
    assert stage_bytes() == before
    twin.tick()
    assert twin.get("/Testbed/Valve1", "opening") == valve  # nothing was queued either


def test_wrong_origin_is_403_and_allowed_origins_pass(bridge):
    b = bridge(origins=["https://control.example.org"])

    async def go():
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as e:
            await ws_connect(b.url, token=VIEW_SECRET, origin="https://evil.example.com")
        assert e.value.response.status_code == 403
        for origin in ("https://control.example.org", f"http://127.0.0.1:{b.port}"):  # allow-listed, same-origin
            ws = await ws_connect(b.url, token=VIEW_SECRET, origin=origin)
            assert (await recv_json(ws))["type"] == "hello"
            await ws.close()

    arun(go())


def test_bad_messages_get_clear_errors_and_the_connection_lives(bridge):
    b = bridge()

    async def go():
        async with Observer(b.url):
            ws = await ws_connect(b.url, token=OP_SECRET)
            await recv_json(ws, lambda m: m["type"] == "hello")

            async def err(raw, code):
                await ws.send(raw)
                m = await recv_json(ws, lambda m: m["type"] in ("error", "ack"))
                assert m["type"] == "error" and m["code"] == code, (raw, m)
                return m

            await err("{not json", "bad_json")
            await err('{"type": "set", "id": "n", "prim": "/Testbed/Valve1", "attribute": "opening", "value": NaN}', "bad_json")
            await err('{"type": "set", "id": "n", "prim": "/Testbed/Valve1", "attribute": "opening", "value": Infinity}', "bad_json")
            await err('{"type": "set", "id": "n", "prim": "/Testbed/Valve1", "attribute": "opening", "value": 1e999}', "bad_json")
            await err("[1, 2, 3]", "bad_message")
            await err('{"type": "launch", "id": "x"}', "unknown_type")
            m = await err('{"no": "type", "id": "t1"}', "bad_message")  # names the missing field, keeps the id
            assert "'type'" in m["message"] and m["of"] == "" and m["id"] == "t1"
            await ws.send(b"\x00\x01binary")
            assert (await recv_json(ws, lambda m: m["type"] == "error"))["code"] == "binary_not_accepted"

            async def set_err(value, code, prim="/Testbed/Valve1", attribute="opening", unit=""):
                r = await request(ws, {"type": "set", "id": f"v{value!r}{prim}{attribute}", "prim": prim, "attribute": attribute, "value": value,
                                       "unit": unit})
                assert r["type"] == "error" and r["code"] == code, (value, r)
                assert r["id"].startswith("v")
                return r

            await set_err(True, "invalid_value")  # a bool is not a number
            await set_err("0.5", "bad_message")
            await set_err(None, "bad_message")
            await set_err([0.1, 0.2], "bad_message")
            await set_err(1.5, "invalid_value")  # out of limits [0, 1]
            await set_err(-0.1, "invalid_value")
            await set_err(0.5, "not_found", prim="/Testbed/Nope")
            await set_err(0.5, "not_found", attribute="closing")
            await set_err(0.5, "not_found", prim="/Testbed/Pump", attribute="opening")
            await set_err(20.0, "invalid_value", prim="/Testbed/Pump", attribute="ambientTemperature", unit="furlong")
            r = await request(ws, {"type": "set", "id": "zero", "prim": "/Testbed/Valve1", "attribute": "opening", "value": 0})
            assert r["type"] == "ack"  # JSON's 0 is a fine double
            r = await request(ws, {"type": "set", "id": "unit", "prim": "/Testbed/Pump", "attribute": "ambientTemperature", "value": 77,
                                   "unit": "degF"})
            assert r["type"] == "ack"
            await asyncio.sleep(0.3)
            assert b.twin.get("/Testbed/Valve1", "opening") == 0.0
            assert b.twin.get("/Testbed/Pump", "ambientTemperature") == pytest.approx(25.0)
            r = await request(ws, {"type": "command", "id": "p", "command": "ping"})
            assert r["type"] == "ack"
            await ws.close()

    arun(go())


def test_command_flood_is_rate_limited_with_one_reply_each_then_closed(bridge):
    b = bridge(commands_per_second=20, command_burst=10)

    async def go():
        async with Observer(b.url):
            ws = await ws_connect(b.url, token=OP_SECRET)
            await recv_json(ws, lambda m: m["type"] == "hello")
            n = 60
            for i in range(n):
                await ws.send(json.dumps({"type": "command", "id": f"f{i}", "command": "ping"}))
            replies = {}
            while len(replies) < n:
                m = await recv_json(ws, lambda m: m["type"] in ("ack", "error"))
                assert m["id"] not in replies
                replies[m["id"]] = m
            codes = [r.get("code", "ok") for r in replies.values()]
            assert codes.count("ok") >= 10 and codes.count("rate_limited") >= 30
            await ws.close()
            # a flood that keeps going is cut off (1008), that connection only
            ws = await ws_connect(b.url, token=OP_SECRET)
            await recv_json(ws, lambda m: m["type"] == "hello")
            for i in range(400):
                try:
                    await ws.send(json.dumps({"type": "command", "id": f"g{i}", "command": "ping"}))
                except Exception:
                    break
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass
            assert ws.close_code == 1008

    arun(go())


def test_oversize_frame_closes_1009_that_connection_only(bridge):
    b = bridge(max_message_bytes=4096)

    async def go():
        async with Observer(b.url):
            ws = await ws_connect(b.url, token=OP_SECRET)
            await recv_json(ws, lambda m: m["type"] == "hello")
            await ws.send(json.dumps({"type": "command", "id": "big", "command": "ping", "scenario": "x" * 10000}))
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass
            assert ws.close_code == 1009
            raw = RawClient(b.port, headers={"Authorization": f"Bearer {OP_SECRET}"})
            raw.sock.sendall(ws_frame(b"x" * 100, length=1 << 20)[:200])  # announces 1 MiB
            assert close_code(raw.read_all()) == 1009
            raw.close()

    arun(go())


def test_clients_that_disconnect_mid_message_or_mid_handshake(bridge):
    b = bridge()

    async def go():
        async with Observer(b.url):
            for cut in (3, 10, 60):
                raw = RawClient(b.port, headers={"Authorization": f"Bearer {OP_SECRET}"})
                frame = ws_frame(json.dumps({"type": "set", "id": "x", "prim": "/Testbed/Valve1", "attribute": "opening", "value": 0.5}).encode())
                raw.sock.sendall(frame[:cut])
                raw.close()
            import socket

            s = socket.create_connection(("127.0.0.1", b.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")  # half a handshake
            s.close()
            await asyncio.sleep(0.3)

    arun(go())
    assert wait_for(lambda: len(b.server.sessions) == 0, 10)
    assert b.twin.get("/Testbed/Valve1", "opening") == 1.0  # no half message was applied


def test_clients_that_never_read_are_dropped_without_hurting_others(bridge, factory_1k):
    b = bridge(factory_1k, send_deadline=1.0, send_buffer=16384)

    async def go():
        async with Observer(b.url, ("/Factory/Machines/M0007",)):  # a small subscription: it keeps up on a loaded machine
            raws = []
            for _ in range(3):
                r = RawClient(b.port, headers={"Authorization": f"Bearer {VIEW_SECRET}"}, rcvbuf=4096)
                r.sock.sendall(ws_frame(json.dumps({"type": "subscribe", "id": "s", "encoding": "json"}).encode()))
                raws.append(r)
            ok = await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(lambda: b.server.stats().get("aborted", 0) >= 3, 30))
            assert ok
            for r in raws:
                r.close()

    arun(go(), 90)


def test_secrets_are_never_logged(bridge, caplog):
    b = bridge()
    caplog.set_level(logging.DEBUG)

    async def go():
        for send in ("header", "query", "message"):
            async with Client(b.url, token=OP_SECRET, send_token=send, origin=f"http://127.0.0.1:{b.port}" if send == "message" else None) as c:
                await c.ping()
        for bad in ("header", "query"):
            try:
                async with Client(b.url, token="wrong-but-secret-99", send_token=bad):
                    pass
            except Exception:
                pass

    arun(go())
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "connection" in caplog.text  # websockets did log at DEBUG
    assert OP_SECRET not in text and "wrong-but-secret-99" not in text
