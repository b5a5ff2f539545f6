"""``twinstage serve --metrics-port``: the twin's and the bridge's metrics, scraped while a client is connected."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from twinstage.bridge import Client

SECRET = "operator-secret-1"


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_serve_metrics_port_exports_bridge_counters(pump_scene):
    code = "import sys; from twinstage.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-u", "-c", code, "serve", str(pump_scene), "--port", "0", "--rate", "20",
                             "--token", f"ops:operator:{SECRET}", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        metrics_url = bridge_url = None
        while metrics_url is None or bridge_url is None:
            ln = lines.get(timeout=60)
            seen.append(ln)
            if m := re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", ln):
                metrics_url = m.group(1)
            if m := re.search(r"bridge (ws://127\.0\.0\.1:\d+/)", ln):
                bridge_url = m.group(1)
        before = _scrape(metrics_url)
        assert before["twinstage_bridge_clients"] == 0

        async def go() -> dict[str, float]:
            async with Client(bridge_url, token=SECRET) as c:
                await c.subscribe()
                await c.wait_until(lambda c: c.tick > 0, 20)
                deadline = time.monotonic() + 20
                while True:  # the gauge is refreshed every tick
                    now = await asyncio.to_thread(_scrape, metrics_url)
                    if now["twinstage_bridge_clients"] == 1 or time.monotonic() > deadline:
                        return now

        during = asyncio.run(go())
        assert during["twinstage_bridge_clients"] == 1
        assert during["twinstage_ticks_total"] > before["twinstage_ticks_total"] >= 0
        assert "twinstage_bridge_messages_merged_total" in during and during["twinstage_bridge_messages_dropped_total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
