"""``twinstage serve`` and ``twinstage demo --serve`` as a user runs them (subprocesses)."""

from __future__ import annotations

import re
import urllib.request

from _bridgeutil import OP_SECRET, OPERATOR, arun, bridge_url, reap, spawn_cli, stop

from twinstage.bridge import Client


def test_serve_command(pump_scene, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# who may do what\n{OPERATOR}\n")
    proc, lines = spawn_cli("serve", str(pump_scene), "--port", "0", "--rate", "20", "--tokens", str(tokens))
    seen: list[str] = []
    try:
        url = bridge_url(lines, seen)

        async def go():
            async with Client(url, token=OP_SECRET) as c:
                assert c.hello["tickRate"] == 20 and c.hello["role"] == "operator"
                await c.subscribe(prefixes=["/Testbed/Valve1"])
                await c.set("/Testbed/Valve1", "opening", 0.25)
                await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.25)

        arun(go())
        assert stop(proc, 30) == 0
    finally:
        reap(proc)
    out = "".join(seen) + "".join(lines.queue)
    assert "stopped after" in out and "ops (operator)" in out
    assert OP_SECRET not in out


def test_serve_rejects_a_bad_token_spec(pump_scene):
    proc, lines = spawn_cli("serve", str(pump_scene), "--port", "0", "--token", "justaname")
    assert proc.wait(60) == 2
    out = "".join(lines.queue)
    assert "NAME:ROLE:SECRET" in out and "Traceback" not in out


def test_demo_serves_the_bridge_and_the_browser_client(tmp_path):
    proc, lines = spawn_cli("demo", "--out", str(tmp_path / "demo"), "--ticks", "60", "--serve", "0")
    seen: list[str] = []
    try:
        url = bridge_url(lines, seen)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        while not (m := re.search(r"viewer \(read-only\).*\?token=(\S+)", seen[-1])):  # the generated viewer token
            seen.append(lines.get(timeout=60))
        viewer_token = m.group(1)

        async def go():
            async with Client(url, token=viewer_token) as c:
                assert c.hello["role"] == "viewer" and c.hello["scene"] == "pump_testbed.usda"
                await c.subscribe(prefixes=["/Testbed/Pump"])
                t = c.tick
                await c.wait_until(lambda c: c.tick >= t + 5)
                return c.get("/Testbed/Pump", "flowRate")

        assert arun(go()) > 0
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "app.js" in page
        assert proc.wait(60) == 0
    finally:
        reap(proc)
    out = "".join(seen) + "".join(lines.queue)
    assert "validate pump_testbed.usda: 0 errors" in out
