"""Telemetry: the Source protocol, bindings, sources, alignment, units and quality."""

from ._binding import Binding, Resolved, resolve
from ._source import Inbox, Samples, Source, TelemetryError

__all__ = ["Binding", "Inbox", "Resolved", "Samples", "Source", "TelemetryError", "resolve"]
