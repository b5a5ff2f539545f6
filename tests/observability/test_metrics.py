"""The Prometheus endpoint, scraped for real over HTTP while a twin runs; JSON logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import twinstage
from twinstage.observability import METRIC_NAMES, MetricsSink, configure_logging

ROOT = Path(__file__).resolve().parents[2]


def _scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, list], name: str, **labels: str) -> float:
    for s in (x for samples in fams.values() for x in samples):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{name} {labels}")


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "twinstage", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("metrics on "):
        proc.kill()
        raise AssertionError(f"no metrics line: {line!r} {proc.stderr.read()}")
    return proc, line.split()[-1]


def test_scrape_running_twin(pump_scene):
    proc, url = _start([str(pump_scene), "--metrics-port", "0", "--realtime", "--duration", "60"])
    try:
        assert url.startswith("http://127.0.0.1:")
        fams = {}
        for _ in range(100):  # until a few ticks went by (bounded: 10 s)
            fams = _scrape(url)
            if _value(fams, "twinstage_ticks_total") >= 5:
                break
            time.sleep(0.1)
        assert _value(fams, "twinstage_ticks_total") >= 5
        assert _value(fams, "twinstage_tick_duration_seconds_count") >= 4
        assert _value(fams, "twinstage_sim_time_seconds") > 0.3
        assert _value(fams, "twinstage_alarms_active", severity="critical") == 0
        assert "twinstage_usd_commit_seconds" in fams and "twinstage_prim_staleness_seconds" in fams
        assert set(METRIC_NAMES) <= set(fams) | {f + "_total" for f in fams}  # every documented metric is exported
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_scrape_replay_freshness(pump_scene, shared_data):
    csv = shared_data / "skab" / "data" / "valve1" / "0.csv"
    proc, url = _start([str(pump_scene), "--replay", str(csv), "--metrics-port", "0", "--speed", "20", "--duration", "600"])
    try:
        applied = 0.0
        for _ in range(100):
            fams = _scrape(url)
            try:
                applied = _value(fams, "twinstage_source_samples_total", source="replay:0.csv", outcome="applied")
            except KeyError:
                applied = 0.0
            if applied > 10:
                break
            time.sleep(0.1)
        assert applied > 10
        fresh = [s for s in fams["twinstage_source_freshness_seconds"] if s.name == "twinstage_source_freshness_seconds"]
        assert {s.labels["channel"] for s in fresh} >= {"pressure", "flowRate"}
        assert all(s.value < 10 for s in fresh)  # SKAB samples each second
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sink_counts_alarms_and_sweep_progress():
    twin = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True)
    sink = twin.add_sink(MetricsSink(serve=False))
    twin.run(ticks=3)
    twin.set("/Testbed/Valve2", opening=0.5)
    twin.run(ticks=1)
    reg = sink.registry
    assert reg.get_sample_value("twinstage_ticks_total") == 4
    assert reg.get_sample_value("twinstage_tick_duration_seconds_count") == 3
    assert reg.get_sample_value("twinstage_alarms_active", {"severity": "warning"}) == 0
    sink.sweep_progress(3, 10, 1)
    assert reg.get_sample_value("twinstage_sweep_runs_done") == 3 and reg.get_sample_value("twinstage_sweep_runs_failed") == 1
    sink.set_bridge(lambda: {"clients": 2, "merged": 40, "dropped": 1})
    twin.run(ticks=1)
    assert reg.get_sample_value("twinstage_bridge_clients") == 2 and reg.get_sample_value("twinstage_bridge_messages_dropped_total") == 1
    twin.close()


def test_json_logs():
    buf = io.StringIO()
    configure_logging("json", level=logging.INFO, stream=buf)
    try:
        logging.getLogger("twinstage").error("tick %d: sink failed", 7, extra={"tick": 7})
        rec = json.loads(buf.getvalue().splitlines()[-1])
        assert rec["level"] == "error" and rec["message"] == "tick 7: sink failed" and rec["tick"] == 7 and rec["time"].endswith("Z")
    finally:
        configure_logging("text")
    with pytest.raises(ValueError):
        configure_logging("xml")


def test_cli_json_log_format(tmp_path):
    scene = tmp_path / "missing.usda"
    p = subprocess.run([sys.executable, "-m", "twinstage", "-v", "run", "-", "--scenario", str(ROOT / "scenes/scenarios/inlet_cavitation.toml"),
                        "--log-format", "json"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stderr.splitlines()]  # every log line is one JSON object
    hit = [r for r in lines if r.get("scenario") == "inlet_cavitation"]
    assert hit and hit[0]["status"] == "ok" and hit[0]["logger"] == "twinstage.scenarios"
    assert not scene.exists()


def test_scenario_and_sweep_feed_metrics(tmp_path):
    from twinstage.scenarios import run_scenario
    from twinstage.scenarios._sweep import run_sweep

    sink = MetricsSink(serve=False)
    res = run_scenario(ROOT / "scenes/scenarios/sensor_faults.toml", sinks=(sink,))
    assert res.passed and sink.registry.get_sample_value("twinstage_ticks_total") == res.ticks
    assert sink.registry.get_sample_value("twinstage_alarms_active", {"severity": "critical"}) == 0  # restored at the end
    seen = []
    sweep = MetricsSink(serve=False)
    run_sweep(ROOT / "scenes/scenarios/inlet_cavitation.toml", tmp_path / "s", grid={"events.close_inlet.to": [5.0, 40.0]}, workers=0,
              progress=False, on_progress=lambda *a: (seen.append(a), sweep.sweep_progress(*a)))
    assert seen == [(1, 2, 0), (2, 2, 0)]
    assert sweep.registry.get_sample_value("twinstage_sweep_runs_done") == 2 and sweep.registry.get_sample_value("twinstage_sweep_runs_total") == 2
