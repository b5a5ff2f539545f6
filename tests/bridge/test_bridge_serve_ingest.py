"""``twinstage serve --ingest MAPPING``: ingest tokens feed a served twin, end to end through the CLI."""

from __future__ import annotations

import subprocess
import sys

from _bridgeutil import OP_SECRET, OPERATOR, arun, bridge_url, reap, spawn_cli, stop

import pytest

from twinstage.bridge import Client
from twinstage.bridge._client import BridgeError

INGEST = "plc:ingest:ingest-secret-1"
MAPPING = """version = 1
description = "pushed by a PLC gateway"

[[bindings]]
prim = "/Testbed/Pump"
attribute = "ambientTemperature"
kind = "ingest"
key = "room.temp"
unit = "degF"
"""


@pytest.mark.parametrize("fanout", [[], ["--fanout-procs", "1"]], ids=["one-process", "fanout-worker"])
def test_serve_ingest_mapping_feeds_the_twin(pump_scene, tmp_path, fanout):
    """Also through a fan-out worker: the batch is forwarded to the twin process's source and answered from there."""
    mapping = tmp_path / "ingest.toml"
    mapping.write_text(MAPPING)
    proc, lines = spawn_cli("serve", str(pump_scene), "--port", "0", "--rate", "20", "--token", INGEST, "--token", OPERATOR,
                         "--ingest", str(mapping), *fanout)
    seen: list[str] = []
    try:
        url = bridge_url(lines, seen)

        async def go():
            async with Client(url, token=OP_SECRET) as watcher, Client(url, token=INGEST.split(":", 2)[2]) as plc:
                assert plc.hello["role"] == "ingest"
                await watcher.subscribe(prefixes=["/Testbed/Pump"], attributes=["ambientTemperature"])
                ack = await plc.request({"type": "ingest", "samples": [{"key": "room.temp", "value": 86.0}]})
                assert ack["type"] == "ack" and ack["count"] == 1, ack
                # 86 °F is 30 °C: converted to the attribute's unit and in the twin at a later tick
                await watcher.wait_until(lambda c: abs(c.get("/Testbed/Pump", "ambientTemperature") - 30.0) < 1e-9, timeout=20)
                with pytest.raises(BridgeError, match="nope"):
                    await plc.request({"type": "ingest", "samples": [{"key": "nope", "value": 1.0}]})
                with pytest.raises(BridgeError) as no:  # an operator token may not ingest
                    await watcher.request({"type": "ingest", "samples": [{"key": "room.temp", "value": 50.0}]})
                assert no.value.code == "forbidden"

        arun(go())
        assert stop(proc, 30) == 0
    finally:
        reap(proc)
    out = "".join(seen) + "".join(lines.queue)
    assert "ingest: bridge ingest" in out and "room.temp" in out and ("fan-out: 1 worker" in out) == bool(fanout)


def _serve_fails(*args: str) -> str:
    code = "import sys; from twinstage.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "serve", *args, "--port", "0", "--duration", "0.1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    return r.stderr


def test_serve_ingest_bad_mapping_names_file_and_binding(pump_scene, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MAPPING.replace("ambientTemperature", "noSuchAttribute"))
    err = _serve_fails(str(pump_scene), "--ingest", str(bad))
    assert "bad.toml" in err and "bindings[0]" in err and "noSuchAttribute" in err
    mqtt_only = tmp_path / "mqtt.toml"
    mqtt_only.write_text(MAPPING.replace('kind = "ingest"', 'kind = "mqtt"'))
    err = _serve_fails(str(pump_scene), "--ingest", str(mqtt_only))
    assert "mqtt.toml" in err and "no bindings of kind 'ingest'" in err
    # the scene itself has no ingest bindings
    err = _serve_fails(str(pump_scene), "--ingest")
    assert "the scene: no bindings of kind 'ingest'" in err
