"""The twinstage dialect (``twinstage.v1``): hello, subscribe/resume, set/command, ingest.

Every client message gets exactly one reply or none at all: a message that is read is
answered (``ack`` or ``error`` with its id, recovered from the text when the JSON is
bad); a flood past the rate limit stops reading, answers what it has accepted, and only
then closes with 1008.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from .._commands import ack, error, run_request
from .._jsonio import parse_json, recover_id
from .._messages import CLIENT_TYPES
from ..infra.auth import TokenBucket
from ..infra.session import Closed
from ._mailbox import MailboxSession

log = logging.getLogger("twinstage.bridge")
MAX_INFLIGHT = 64


def validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


class TwinSession(MailboxSession):
    """A client speaking the twinstage protocol."""

    dialect = "twinstage"

    def __init__(self, server: Any, ws: Any, role: str | None, user: str):
        super().__init__(server, ws, role, user)
        self.bucket = TokenBucket(server.commands_per_second, server.command_burst)
        self.violations = 0
        self.inflight: set[asyncio.Task] = set()
        self.hello_layout = getattr(ws, "twinstage_hello", "auto")

    def outstanding(self) -> int:
        return len(self.inflight)

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> None:
        server = self.server
        self.start_sender()
        if self.role is None:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), server.auth_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                self.close(4401, "unauthorized: no token")
                return
            if not self._authenticate(raw):
                return
        else:
            self.queue(server.hello(self.role, self.user, self.hello_layout))
            self.hello_sent = True
        async for raw in self.ws:
            if self.closed or self.closing:
                break
            try:
                self._handle(raw)
            except Closed:
                break
            except Exception:
                log.exception("bridge client %d: handling a message failed", self.id)
                self.queue(error("internal", "the server failed to handle this message; it has been logged", recover_id(raw)))
            if self.closing:
                break  # stop reading: nothing more is accepted

    def _authenticate(self, raw: Any) -> bool:
        """First-message (or later re-) authentication; a wrong token gets an error, then close 4401."""
        tok = None
        if isinstance(raw, str):
            try:
                obj = parse_json(raw)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("type") == "auth" and isinstance(obj.get("token"), str):
                tok = self.server.auth.check(obj["token"])
        if tok is None:
            self.server.count("rejected_token")
            self.queue(error("unauthorized", "missing or wrong token", of="auth"))
            self.close(4401, "unauthorized")
            return False
        self.role, self.user = tok.role, tok.name
        self.queue(self.server.hello(self.role, self.user, self.hello_layout))
        self.hello_sent = True
        return True

    # -- incoming ----------------------------------------------------------------------------
    def _handle(self, raw: Any) -> None:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            self.queue(error("binary_not_accepted", "send JSON text messages; binary frames are server → client only"))
            return
        try:
            obj = parse_json(raw)
        except ValueError as exc:
            self.queue(error("bad_json", f"not valid JSON: {exc}", recover_id(raw)))
            return
        if not isinstance(obj, dict):
            self.queue(error("bad_message", f"a message is a JSON object with a 'type', got {type(obj).__name__}"))
            return
        mid = obj.get("id") if isinstance(obj.get("id"), str) else ""
        mtype = obj.get("type")
        if "type" not in obj:
            self.queue(error("bad_message", f"the message has no 'type' field (client messages: {', '.join(CLIENT_TYPES)})", mid))
            return
        if not isinstance(mtype, str):
            self.queue(error("bad_message", f"'type' must be a string, got {type(mtype).__name__}", mid))
            return
        model = CLIENT_TYPES.get(mtype)
        if model is None:
            self.queue(error("unknown_type", f"unknown message type {mtype[:64]!r} (client messages: {', '.join(CLIENT_TYPES)})", mid, mtype[:64]))
            return
        if mtype == "auth":
            self._authenticate(raw)
            return
        if not self.bucket.take():
            self.violations += 1
            self.server.count("rate_limited")
            if self.violations > 10 * self.server.command_burst:
                self.close(1008, "rate limit exceeded")  # this message is not accepted: the connection closes before it
                raise Closed()
            self.queue(error("rate_limited", f"more than {self.server.commands_per_second:g} requests/s (burst {self.server.command_burst}); slow down",
                             mid, mtype))
            return
        try:
            msg = model.model_validate(obj)
        except ValidationError as exc:
            self.queue(error("bad_message", f"{mtype}: {validation_message(exc)}", mid, mtype))
            return
        if mtype == "subscribe":
            self._subscribe(msg)
        elif mtype == "resume":
            self._resume(msg)
        elif mtype == "ingest":
            self._ingest(msg)
        else:
            if len(self.inflight) >= MAX_INFLIGHT:
                self.queue(error("rate_limited", f"more than {MAX_INFLIGHT} requests awaiting an answer", mid, mtype))
                return
            task = asyncio.get_running_loop().create_task(run_request(self, msg))
            self.inflight.add(task)
            task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self.wake.set()

    def _set_selection(self, msg: Any) -> Any:
        server = self.server
        sel = server.selection(msg.prefixes, msg.attributes)
        if sel.unknown_attributes:
            self.queue(error("not_found", f"unknown attribute(s) {', '.join(sel.unknown_attributes)}", msg.id, msg.type))
            return None
        self.selection = sel
        self.encoding = msg.encoding
        rate = float(msg.max_rate)
        self.min_interval = 1.0 / rate if 0 < rate < server.control.rate else 0.0
        self.next_allowed = 0.0
        self.pending.clear()
        return sel

    def _subscribe(self, msg: Any) -> None:
        sel = self._set_selection(msg)
        if sel is None:
            return
        self.need_snapshot = "subscribe"
        self.resume_pending = False
        detail = "" if sel.count else "nothing matches these prefixes/attributes"
        self.queue(ack(self.server, msg.id, "subscribe", count=sel.count, paused=False, detail=detail))
        self.wake.set()

    def _resume(self, msg: Any) -> None:
        sel = self._set_selection(msg)
        if sel is None:
            return
        server = self.server
        m = server.mirror
        self.resume_pending = False
        self.need_snapshot = None
        if msg.session == server.session and 0 < msg.last_seq == m.seq:
            detail = "current"  # nothing new: no state message follows
        else:
            entries = server.ring.since(msg.last_seq) if msg.session == server.session and 0 < msg.last_seq < m.seq else None
            if entries is None:
                self.need_snapshot = "resume"
                detail = "snapshot"
            else:
                self.pending = [e.seq for e in entries if self.touches(e)]
                self.resume_pending = True
                detail = "delta"
        self.queue(ack(server, msg.id, "resume", count=sel.count, paused=False, detail=detail))
        self.wake.set()

    def _ingest(self, msg: Any) -> None:
        from .._ingest import handle_ingest

        self.queue(handle_ingest(self, msg))

    # -- server events -------------------------------------------------------------------------
    def on_event(self, text: str) -> None:
        if self.hello_sent:
            self.queue(text)

    def on_alarm(self, name: str, row: int, text: str) -> None:
        if self.selection is not None and self.selection.contains(name, row):
            self.queue(text)

    def on_structure(self, text: str, added: list[dict], removed: list[str]) -> None:
        if self.hello_sent:
            self.queue(text)
