"""One websocket connection's outgoing side: a control queue, a latest-wins state mailbox
and a single sender task that sends with a deadline and aborts a stalled client.

Why not ``websockets.broadcast`` + keepalive: measured here, a client that never
reads keeps such a connection OPEN (or CLOSING) for tens of seconds while the
server buffers megabytes. Here each connection has at most one message in flight;
state that arrives meanwhile is merged (latest value wins) and sent next; a send
that does not complete within ``send_deadline`` aborts the transport at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from ._server import Server

log = logging.getLogger("twinstage.bridge")


class Closed(Exception):
    """The connection is gone (closed, aborted); the session ends."""


class Session:
    dialect = "base"

    def __init__(self, server: "Server", ws: Any, role: str | None, user: str):
        self.server = server
        self.ws = ws
        self.id = server._next_client_id()
        self.role = role
        self.user = user
        self.control: collections.deque[str | bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.sent = 0
        self.merged = 0
        self.snapshots = 0
        self.encoding = "json"
        self._sender_task: asyncio.Task | None = None
        self._close_task: asyncio.Task | None = None
        self.sending_since: float | None = None
        self.sending_allowance = 0.0

    # -- outgoing --------------------------------------------------------------------
    def queue(self, msg: str | bytes) -> None:
        """Queue a control message (reply, event, alarm): sent before state, in order."""
        if self.closed:
            return
        if len(self.control) >= self.server.max_control_queue:
            log.warning("bridge client %d (%s): %d unsent replies/events; closing (it does not read)", self.id, self.user or "anonymous",
                        len(self.control))
            self.control.clear()
            self.close(1008, "too many unsent messages")
            return
        self.control.append(msg)
        self.wake.set()

    def state_delay(self) -> float | None:
        """None: no state pending; 0: send now; >0: pending but rate-limited for that long."""
        return None

    def next_state(self) -> str | bytes | None:
        return None

    async def send(self, data: str | bytes) -> None:
        """Send one message. The server's watchdog aborts the connection if this takes longer
        than ``send_deadline`` plus 1 s per MB of message (a big scene's hello on a slow link)
        — cheaper than a ``wait_for`` task per message."""
        self.sending_since = now()
        self.sending_allowance = self.server.send_deadline + len(data) / 1e6
        try:
            await self.ws.send(data)
        except ConnectionClosed:
            self.closed = True
            raise Closed() from None
        finally:
            self.sending_since = None
        if self.closed:
            raise Closed()
        self.sent += 1

    def check_deadline(self, t: float) -> None:
        """Called by the server's watchdog: abort a send stuck past the deadline."""
        since = self.sending_since
        if since is not None and not self.closed and t - since > self.sending_allowance:
            log.warning("bridge client %d (%s): a send took longer than %.1f s; disconnecting the stalled client", self.id, self.user or "anonymous",
                        self.server.send_deadline)
            self.server._stats["aborted"] += 1
            self.abort()

    async def sender(self) -> None:
        try:
            while not self.closed:
                self.wake.clear()
                if self.control:
                    await self.send(self.control.popleft())
                    continue
                delay = self.state_delay()
                if delay == 0:
                    payload = self.next_state()
                    if payload is not None:
                        await self.send(payload)
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        except Closed:
            pass
        except Exception:  # a bug here must not take the server down; the client reconnects
            log.exception("bridge client %d: sender failed", self.id)
            self.abort()

    def start_sender(self) -> None:
        self._sender_task = asyncio.get_running_loop().create_task(self.sender())

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (it would wait on the stalled socket)."""
        self.closed = True
        self.wake.set()
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    def close(self, code: int, reason: str) -> None:
        """Close with a code; abort if the closing handshake does not finish within the deadline."""
        if self.closed:
            return
        self.closed = True
        self.wake.set()

        async def _close() -> None:
            try:
                await asyncio.wait_for(self.ws.close(code, reason), self.server.send_deadline)
            except Exception:
                self.abort()

        self._close_task = asyncio.get_running_loop().create_task(_close())

    async def finish(self) -> None:
        """End of the handler: let a requested close (code, reason) finish first, then stop the sender."""
        self.closed = True
        self.wake.set()
        if self._close_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._close_task), self.server.send_deadline + 1)
            except Exception:
                self.abort()
        if self._sender_task is not None:
            self._sender_task.cancel()
            try:
                await self._sender_task
            except (asyncio.CancelledError, Exception):
                pass

    # -- incoming from the server -------------------------------------------------------
    def on_frame(self, entry: Any) -> None:
        pass

    def on_event(self, text: str) -> None:
        pass

    def on_alarm(self, name: str, row: int, text: str) -> None:
        pass

    def on_structure(self, text: str, added: list[dict], removed: list[str]) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "role": self.role or "", "dialect": self.dialect, "encoding": self.encoding, "sent": self.sent,
                "merged": self.merged, "snapshots": self.snapshots}


def now() -> float:
    return time.monotonic()
