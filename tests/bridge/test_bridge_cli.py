"""``twinstage serve`` and ``twinstage demo --serve`` as a user runs them (subprocesses)."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request

from _bridgeutil import OP_SECRET, OPERATOR, arun

from twinstage.bridge import Client


def _spawn(*args: str) -> tuple[subprocess.Popen, "queue.Queue[str]"]:
    code = "import sys; from twinstage.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-u", "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    return proc, lines


def _url(lines: "queue.Queue[str]", seen: list[str]) -> str:
    while True:
        ln = lines.get(timeout=60)
        seen.append(ln)
        m = re.search(r"bridge (ws://127\.0\.0\.1:\d+/)", ln)
        if m:
            return m.group(1)


def test_serve_command(pump_scene, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# who may do what\n{OPERATOR}\n")
    proc, lines = _spawn("serve", str(pump_scene), "--port", "0", "--rate", "20", "--tokens", str(tokens))
    seen: list[str] = []
    try:
        url = _url(lines, seen)

        async def go():
            async with Client(url, token=OP_SECRET) as c:
                assert c.hello["tickRate"] == 20 and c.hello["role"] == "operator"
                await c.subscribe(prefixes=["/Testbed/Valve1"])
                await c.set("/Testbed/Valve1", "opening", 0.25)
                await c.wait_until(lambda c: c.get("/Testbed/Valve1", "opening") == 0.25)

        arun(go())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(seen) + "".join(lines.queue)
    assert "stopped after" in out and "ops (operator)" in out
    assert OP_SECRET not in out


def test_serve_rejects_a_bad_token_spec(pump_scene):
    proc, lines = _spawn("serve", str(pump_scene), "--port", "0", "--token", "justaname")
    assert proc.wait(60) == 2
    out = "".join(lines.queue)
    assert "NAME:ROLE:SECRET" in out and "Traceback" not in out


def test_demo_serves_the_bridge_and_the_browser_client(tmp_path):
    proc, lines = _spawn("demo", "--out", str(tmp_path / "demo"), "--ticks", "60", "--serve", "0")
    seen: list[str] = []
    try:
        url = _url(lines, seen)
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
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(seen) + "".join(lines.queue)
    assert "validate pump_testbed.usda: 0 errors" in out
