"""Telemetry: the Source protocol, bindings, sources, alignment, units and quality.

Heavy parts (pandas, pyarrow, network clients) are imported by the sources that
need them, when they are built.
"""

from twinstage._lazy import lazy_names

from ._binding import Binding, Resolved, resolve
from ._replay import ReplaySource, bindings_by_asset_id
from ._source import Inbox, Samples, Source, TelemetryError

#: bindings in USD and mapping files (T3): loaded on first use (pydantic, pxr)
_LAZY = {
    "Mapping": "._mapping",
    "MappingError": "._mapping",
    "load_mapping": "._mapping",
    "validate_mapping": "._mapping",
    "write_bindings_layer": "._mapping",
    "read_bindings": "twinstage.usd._binding",
    "declare_binding": "twinstage.usd._binding",
    # live and historian sources (T2; paho / asyncua / psycopg load when a source starts)
    "MqttSource": "._mqtt",
    "OpcUaSource": "._opcua",
    "SqlSource": "._sql",
    "BridgeIngestSource": "._ingest",  # fed by the bridge's ingest messages (twinstage serve --ingest)
    "read_window": "._sql",
    "encode_batch": "._payload",
    "parse_payload": "._payload",
    "PayloadError": "._payload",
}

__all__ = ["Binding", "Inbox", "ReplaySource", "Resolved", "Samples", "Source", "TelemetryError", "bindings_by_asset_id", "resolve", *_LAZY]

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
