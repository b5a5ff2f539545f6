"""A real ingest lag per source (arrival − event time, p50/p99) in Feeds.stats(), exported by MetricsSink."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import twinstage
from twinstage.observability import MetricsSink
from twinstage.runtime._feeds import LAG_WINDOW
from twinstage.telemetry import Binding
from twinstage.telemetry._ingest import BridgeIngestSource

ROOT = Path(__file__).resolve().parents[2]


def _twin():
    twin = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True)
    src = twin.add_source(BridgeIngestSource([Binding("/Testbed/Pump", "ambientTemperature", "ingest", "room.temp")]))
    return twin, src


def test_live_lag_is_arrival_minus_event_time_p50_p99():
    twin, src = _twin()
    sink = twin.add_sink(MetricsSink(serve=False))
    arrival = 1_700_000_000.0
    lags = np.concatenate([np.full(98, 0.2), [5.0, 9.0]])  # 2 % of samples badly delayed
    for i, lag in enumerate(lags):
        src.push(["room.temp"], [20.0 + i * 0.01], [arrival + i - lag], arrival=arrival + i)
    twin.run(ticks=2)
    st = twin.stats()["telemetry"]["sources"]["ingest"]
    assert st["lag_s"] == pytest.approx(0.2)
    assert st["lag_p99_s"] == pytest.approx(np.percentile(lags, 99)) and st["lag_p99_s"] > 4.0
    reg = sink.registry
    assert reg.get_sample_value("twinstage_source_ingest_lag_seconds", {"source": "ingest", "quantile": "0.5"}) == pytest.approx(0.2)
    assert reg.get_sample_value("twinstage_source_ingest_lag_seconds", {"source": "ingest", "quantile": "0.99"}) > 4.0
    twin.close()


def test_lag_window_forgets_old_samples_and_no_samples_no_lag():
    twin, src = _twin()
    twin.run(ticks=1)
    assert "lag_s" not in twin.stats()["telemetry"]["sources"]["ingest"]  # nothing arrived: no figure, not 0
    t = 1_700_000_000.0
    n = LAG_WINDOW + 10
    src.push(["room.temp"] * n, [20.0] * n, [t - 30.0] * n, arrival=t)  # an old backlog: 30 s late
    twin.run(ticks=1)
    assert twin.stats()["telemetry"]["sources"]["ingest"]["lag_s"] == pytest.approx(30.0)
    for _ in range(3):  # then a full window of fresh samples (several batches, wrapping the ring)
        src.push(["room.temp"] * 400, [21.0] * 400, [t + 1.0] * 400, arrival=t + 1.5)
        twin.run(ticks=1)
    st = twin.stats()["telemetry"]["sources"]["ingest"]
    assert st["lag_s"] == pytest.approx(0.5) and st["lag_p99_s"] == pytest.approx(0.5)
    twin.close()


def test_replay_lag_is_sim_time_behind_the_tick(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("time,temp\n" + "".join(f"{i * 0.05:.2f},{20 + i * 0.01:.2f}\n" for i in range(100)))
    twin = twinstage.open(ROOT / "scenes/pump_testbed.usda", headless=True, rate=10)
    from twinstage.telemetry import ReplaySource

    twin.add_source(ReplaySource(csv, [Binding("/Testbed/Pump", "ambientTemperature", "csv", "temp")]))
    twin.run(ticks=20)
    st = next(iter(twin.stats()["telemetry"]["sources"].values()))
    assert 0.0 <= st["lag_s"] <= 0.1 + 1e-9 and st["lag_p99_s"] <= 0.1 + 1e-9  # at most one 0.1 s tick behind
    twin.close()
