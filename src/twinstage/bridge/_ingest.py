"""``ingest`` messages: telemetry pushed by clients with the ``ingest`` (or ``admin``) role, handed
to the server's :class:`~twinstage.telemetry._ingest.BridgeIngestSource`, which validates the
whole batch against its bindings and queues it for the next tick — or rejects it whole."""

from __future__ import annotations

from typing import Any

from ._commands import ack, error


def handle_ingest(session: Any, msg: Any) -> str:
    server = session.server
    role = session.role or "viewer"
    if role not in ("ingest", "admin"):
        return error("forbidden", f"role {role!r} may not ingest (a token with role ingest or admin is needed)", msg.id, "ingest")
    src = server.ingest
    if src is None:
        return error("not_found", "this server takes no ingest (start it with Server(ingest=BridgeIngestSource(...)))", msg.id, "ingest")
    from ..telemetry._source import TelemetryError

    known = set(src.keys)
    for i, s in enumerate(msg.samples):
        if s.key not in known:
            return error("not_found", f"samples[{i}]: unknown ingest key {s.key[:80]!r}; nothing of this batch was accepted", msg.id, "ingest")
    try:
        n = src.push([s.key for s in msg.samples], [s.value for s in msg.samples], [s.time for s in msg.samples], [s.quality for s in msg.samples])
    except TelemetryError as exc:
        return error("invalid_value", f"{exc}; nothing of this batch was accepted", msg.id, "ingest")
    server.count("ingested", n)
    return ack(server, msg.id, "ingest", count=n, detail="queued; it enters the next tick")
