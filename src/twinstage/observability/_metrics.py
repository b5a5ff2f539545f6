"""Prometheus metrics of a running twin, as a Frame sink (``prometheus_client``, imported lazily).

Each :class:`MetricsSink` owns its own ``CollectorRegistry`` (several twins in one
process do not collide) and serves it with ``prometheus_client.start_http_server``
on 127.0.0.1 unless told otherwise. Per tick it observes the tick's duration (wall
time between consecutive Frames), ticks behind schedule (the clock's overruns), and,
where the twin has them, the USD writer's commit time and per-prim staleness, per
source ingest lag (p50/p99, ``Feeds.stats()``) / freshness (``SinkContext.freshness()``, ``stats()["telemetry"]``)
and active alarms (values flagged OUT_OF_RANGE or BAD). Gauges fed by callbacks cover
what lives elsewhere: bridge clients and merged/dropped messages (:meth:`set_bridge`),
sweep progress (:meth:`sweep_progress`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

ALARM_BITS = np.uint8(2 | 16)

#: metric names (also used by examples/grafana/twinstage.json)
NAMES = (
    "twinstage_tick_duration_seconds", "twinstage_ticks_total", "twinstage_ticks_behind_schedule", "twinstage_sim_time_seconds",
    "twinstage_usd_commit_seconds", "twinstage_prim_staleness_seconds", "twinstage_alarms_active", "twinstage_errors_total",
    "twinstage_source_freshness_seconds", "twinstage_source_ingest_lag_seconds", "twinstage_source_samples_total",
    "twinstage_bridge_clients", "twinstage_bridge_messages_merged_total", "twinstage_bridge_messages_dropped_total",
    "twinstage_sweep_runs_total", "twinstage_sweep_runs_done", "twinstage_sweep_runs_failed",
)


class MetricsSink:
    """A Frame sink exporting the twin's health as Prometheus metrics.

    ``twin.add_sink(MetricsSink(port=9108))``; ``port=0`` picks a free port
    (:attr:`port` after ``start``). ``serve=False`` only fills :attr:`registry`.
    """

    writes_stage = False

    def __init__(self, port: int | None = 0, *, host: str = "127.0.0.1", serve: bool = True):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.host, self.port, self.serve = host, port, serve
        self.registry = r = CollectorRegistry()
        self.tick_duration = Histogram("twinstage_tick_duration_seconds", "Wall time between consecutive ticks", registry=r,
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.ticks = Counter("twinstage_ticks", "Ticks run", registry=r)
        self.behind = Gauge("twinstage_ticks_behind_schedule", "Ticks that started later than the real-time schedule (clock overruns)", registry=r)
        self.sim_time = Gauge("twinstage_sim_time_seconds", "Simulation time", registry=r)
        self.commit = Gauge("twinstage_usd_commit_seconds", "Last USD live-layer commit time (writer)", registry=r)
        self.staleness = Gauge("twinstage_prim_staleness_seconds", "Largest per-prim staleness of the live layer (writer backlog)", registry=r)
        self.alarms = Gauge("twinstage_alarms_active", "Values flagged OUT_OF_RANGE or BAD", ["severity"], registry=r)
        self.errors = Gauge("twinstage_errors_total", "Errors logged by the engine", registry=r)
        self.freshness = Gauge("twinstage_source_freshness_seconds", "Age of the oldest last good sample per channel fed by telemetry",
                               ["channel"], registry=r)
        self.lag = Gauge("twinstage_source_ingest_lag_seconds", "Ingest lag per telemetry source: arrival wall time minus event time "
                         "(replay: tick sim time minus event time), p50/p99 over its last 1024 samples", ["source", "quantile"], registry=r)
        self.samples = Gauge("twinstage_source_samples_total", "Samples per telemetry source and outcome (received, applied, late, bad, …)",
                             ["source", "outcome"], registry=r)
        self.clients = Gauge("twinstage_bridge_clients", "Connected bridge clients", registry=r)
        self.merged = Gauge("twinstage_bridge_messages_merged_total", "Bridge messages merged (latest wins) before sending", registry=r)
        self.dropped = Gauge("twinstage_bridge_messages_dropped_total", "Bridge messages dropped (slow clients)", registry=r)
        self.sweep_total = Gauge("twinstage_sweep_runs_total", "Runs in the current sweep", registry=r)
        self.sweep_done = Gauge("twinstage_sweep_runs_done", "Runs of the current sweep finished", registry=r)
        self.sweep_failed = Gauge("twinstage_sweep_runs_failed", "Runs of the current sweep failed", registry=r)
        self._last_wall: float | None = None
        self._ctx: Any = None
        self._server: Any = None
        self._bridge: Callable[[], dict[str, float]] | None = None

    # -- sink protocol --------------------------------------------------------
    def start(self, twin: Any) -> None:
        self._ctx = twin
        if self.serve and self._server is None:
            self.listen()

    def listen(self) -> int:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(self.port or 0, addr=self.host, registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        return self.port

    def consume(self, frame: Any) -> None:
        now = time.perf_counter()
        if self._last_wall is not None:
            self.tick_duration.observe(now - self._last_wall)
        self._last_wall = now
        self.ticks.inc()
        self.sim_time.set(frame.sim_time)
        ctx = self._ctx
        if ctx is None:
            return
        st = ctx.stats()
        self.behind.set(st.get("overruns", 0))
        self.errors.set(st.get("errors", 0))
        w = st.get("writer")
        if w:
            self.commit.set(float(w.get("last_commit_s", w.get("commit_s", 0.0)) or 0.0))
            self.staleness.set(float(w.get("max_staleness_s", 0.0)))
        warn = crit = 0
        table = ctx.table
        for name, ch in table.channels.items():
            q = table.quality(name)
            crit += int(np.count_nonzero(q & np.uint8(16)))
            warn += int(np.count_nonzero(((q & np.uint8(2)) != 0) & ((q & np.uint8(16)) == 0)))
        self.alarms.labels("critical").set(crit)
        self.alarms.labels("warning").set(warn)
        tel = st.get("telemetry")
        if tel:
            self._telemetry(ctx, tel)
        if self._bridge is not None:
            self._pull_bridge()

    def _telemetry(self, ctx: Any, tel: Any) -> None:
        try:
            ages = ctx.freshness()
        except Exception:
            ages = {}
        for ch, a in (ages or {}).items():
            a = np.asarray(a, dtype=float)
            fed = a[~np.isnan(a)]
            if len(fed):
                worst = float(fed.max())
                self.freshness.labels(ch).set(worst if math.isfinite(worst) else float("inf"))
        sources = tel.get("sources", tel) if isinstance(tel, dict) else {}
        for name, s in (sources.items() if isinstance(sources, dict) else []):
            if not isinstance(s, dict):
                continue
            for q, key in (("0.5", "lag_s"), ("0.99", "lag_p99_s")):  # Feeds.stats(): per-sample ingest lag
                lag = s.get(key)
                if isinstance(lag, (int, float)) and math.isfinite(lag):
                    self.lag.labels(name, q).set(float(lag))
            for outcome in ("received", "applied", "late", "bad", "duplicates", "overflow"):
                n = s.get(outcome)
                if isinstance(n, (int, float)):
                    self.samples.labels(name, outcome).set(float(n))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- callbacks for what lives outside the engine ----------------------------
    def set_bridge(self, stats: Callable[[], dict[str, float]]) -> None:
        """``stats()`` → ``{"clients": n, "merged": n, "dropped": n}``, read every tick (the bridge server's counters)."""
        self._bridge = stats

    def _pull_bridge(self) -> None:
        try:
            s = self._bridge() or {}
        except Exception:
            return
        for key, g in (("clients", self.clients), ("merged", self.merged), ("dropped", self.dropped)):
            if key in s:
                g.set(float(s[key]))

    def sweep_progress(self, done: int, total: int, failed: int) -> None:
        """A ``run_sweep(progress=...)`` callback."""
        self.sweep_total.set(total)
        self.sweep_done.set(done)
        self.sweep_failed.set(failed)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def bridge_counters(server: Any) -> Callable[[], dict[str, float]]:
    """The :meth:`MetricsSink.set_bridge` callback of a bridge server (``serve --metrics-port``):
    connected clients, frames merged for slow readers (summed over the connected clients),
    and clients dropped for stalling a send (the server's ``aborted`` count)."""

    def stats() -> dict[str, float]:
        st = server.stats()
        sessions = list(getattr(server, "sessions", ()) or ())
        merged = st["merged"] if isinstance(st.get("merged"), (int, float)) else sum(getattr(s, "merged", 0) for s in sessions)
        return {"clients": float(st.get("clients", len(sessions))), "merged": float(merged), "dropped": float(st.get("aborted", 0))}

    return stats
