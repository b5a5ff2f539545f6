"""Observability of a running twin: Prometheus metrics (a Frame sink) and structured logs.

    from twinstage.observability import MetricsSink
    sink = twin.add_sink(MetricsSink(port=9108))   # GET http://127.0.0.1:9108/metrics

``prometheus_client`` is imported when a :class:`MetricsSink` is created, not before.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "MetricsSink": ("twinstage.observability._metrics", "MetricsSink"),
    "METRIC_NAMES": ("twinstage.observability._metrics", "NAMES"),
    "JsonFormatter": ("twinstage.observability._logs", "JsonFormatter"),
    "configure_logging": ("twinstage.observability._logs", "configure_logging"),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
