"""One connection's outgoing side: a control queue, a latest-wins state mailbox and a single
sender task that sends with a deadline, keeps the kernel's share of the backlog small, and
closes with a code only after the replies it owes have gone out.

Why not ``websockets.broadcast`` + keepalive: measured here, a client that never reads
keeps such a connection OPEN for tens of seconds while the server buffers megabytes, and
a slow reader gets a backlog of stale deltas from kernel buffers. Here each connection
has few state messages in flight: the next one is built only once

* the kernel's send queue for the client holds at most ``drain_bytes`` (``SIOCOUTQ``), and
* at most ``max_unconfirmed`` earlier state messages are unconfirmed, or the oldest
  unconfirmed one went out less than ``hold_after`` (2 ticks) ago: after a state message the
  sender pings, and the client's websocket stack answers the ping only once it has read
  past that message. A client that keeps up is never held back by a hiccup shorter than
  that; one that reads slowly gets merged state at most about 2 ticks behind. Kernel receive buffers (autotuned up to tens of MB) ack data
  the client application never read; the pong does not lie about it.

Frames arriving meanwhile are merged by the mailbox (latest value wins), so a slow reader
gets fresh, merged state. A send (or a wait for drain) that does not complete within the
deadline aborts the transport at once.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import struct
import termios
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

log = logging.getLogger("twinstage.bridge")
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # unsent + unacknowledged bytes of a TCP socket (Linux)


class Closed(Exception):
    """The connection is gone (closed, aborted); the session ends."""


class AfterState:
    """A reply that must follow the state it acknowledges (``step``, ``pause``): whatever state is
    pending when it reaches the head of the control queue is sent first."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def now() -> float:
    return time.monotonic()


def outq(sock: Any) -> int:
    """Bytes the kernel still holds for this socket (not sent or not acknowledged); 0 if unknown."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError, AttributeError):
        return 0


class Sender:
    """Outgoing side of a session; subclasses provide the state mailbox (``state_delay``/``next_state``)."""

    def __init__(self, server: Any, ws: Any):
        self.server = server
        self.ws = ws
        self.control: collections.deque[str | bytes | AfterState] = collections.deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.closing: tuple[int, str] | None = None
        self.sent = 0
        self.drain_waits = 0
        self.states_sent = 0  # state messages sent
        self.states_confirmed = 0  # ... of which the client has read past (pong)
        self._probe: Any = None
        self._unconfirmed: collections.deque[tuple[int, float]] = collections.deque()  # (state number, sent at)
        self._sender_task: asyncio.Task | None = None
        self.sending_since: float | None = None
        self.sending_allowance = 0.0
        self._sock = ws.transport.get_extra_info("socket") if getattr(ws, "transport", None) is not None else None

    # -- hooks ---------------------------------------------------------------------------
    def state_delay(self) -> float | None:
        """None: no state pending; 0: send now; >0: pending but rate-limited for that long."""
        return None

    def next_state(self) -> str | bytes | list | None:
        """The next state message, or the list of its parts (sent one after another)."""
        return None

    def outstanding(self) -> int:
        """Requests still owed a reply (a close waits for them)."""
        return 0

    # -- queueing --------------------------------------------------------------------------
    def queue(self, msg: str | bytes | AfterState) -> None:
        """Queue a control message (reply, event, alarm): sent before state, in order."""
        if self.closed:
            return
        if len(self.control) >= self.server.max_control_queue:
            log.warning("bridge client %d (%s): %d unsent replies/events; closing (it does not read)", self.id, self.user or "anonymous",  # type: ignore[attr-defined]
                        len(self.control))
            self.control.clear()
            self.close(1008, "too many unsent messages")
            return
        self.control.append(msg)
        self.wake.set()

    # -- sending ---------------------------------------------------------------------------
    async def send(self, data: str | bytes) -> None:
        """Send one message. The server's watchdog aborts the connection if this takes longer
        than ``send_deadline`` plus 1 s per MB of message (a big scene's hello on a slow link)."""
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

    async def send_state(self, data: str | bytes) -> None:
        """Send a state message, then probe (ping) how far the client has read, unless a probe is out."""
        await self.send(data)
        self.states_sent += 1
        self._unconfirmed.append((self.states_sent, now()))
        await self._ensure_probe()

    async def send_states(self, payload: str | bytes | list | None) -> None:
        """A state message, or each part of one in order (nothing else goes between them)."""
        for part in payload if isinstance(payload, list) else () if payload is None else (payload,):
            await self.send_state(part)

    async def _ensure_probe(self) -> None:
        """A ping covering the newest state message sent, unless one is already out."""
        if not self.server.max_unconfirmed or not self._unconfirmed or (self._probe is not None and not self._probe.done()):
            return
        at = self.states_sent
        try:
            self._probe = await self.ws.ping()
        except ConnectionClosed:
            self.closed = True
            raise Closed() from None
        self._probe.add_done_callback(lambda f, at=at: self._confirmed(f, at))

    def _confirmed(self, fut: Any, at: int) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.states_confirmed = max(self.states_confirmed, at)
            while self._unconfirmed and self._unconfirmed[0][0] <= at:
                self._unconfirmed.popleft()
            self.wake.set()

    def _drained(self) -> bool:
        s = self.server
        if s.max_unconfirmed and len(self._unconfirmed) > s.max_unconfirmed and now() - self._unconfirmed[0][1] >= s.hold_after:
            return False
        return not (s.drain_bytes and self._sock is not None and outq(self._sock) > s.drain_bytes)

    async def wait_drain(self) -> None:
        """Before building a state message: wait (bounded by the send deadline) until the client has
        read all but ``max_unconfirmed`` state messages and the kernel holds at most ``drain_bytes``
        for it, so the mailbox — not the kernel — holds the backlog and merges it."""
        if self._drained():
            return
        self.drain_waits += 1
        self.sending_since = now()
        self.sending_allowance = max(self.server.send_deadline, self.server.read_timeout)
        try:
            delay = 0.001
            while not self.closed and not self._drained():
                await self._ensure_probe()  # the messages sent while the last probe was out need one of their own
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                delay = min(0.02, delay * 2)
                if self.control:
                    return  # replies and events are not held back by state
        finally:
            self.sending_since = None
        if self.closed:
            raise Closed()

    async def sender(self) -> None:
        try:
            while not self.closed:
                self.wake.clear()
                if self.control:
                    item = self.control.popleft()
                    if isinstance(item, AfterState):
                        if self.closing is None and self.state_delay() is not None:
                            await self.send_states(self.next_state())
                        item = item.text
                    await self.send(item)
                    continue
                if self.closing is not None:
                    if self.outstanding():
                        await self.wake.wait()
                        continue
                    await self._close_now()
                    return
                delay = self.state_delay()
                if delay == 0:
                    await self.wait_drain()
                    if self.control or not self._drained():
                        continue
                    await self.send_states(self.next_state())
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        except Closed:
            pass
        except Exception:  # a bug here must not take the server down; the client reconnects
            log.exception("bridge client %d: sender failed", self.id)  # type: ignore[attr-defined]
            self.abort()

    def start_sender(self) -> None:
        self._sender_task = asyncio.get_running_loop().create_task(self.sender())

    # -- ending ----------------------------------------------------------------------------
    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (it would wait on the stalled socket)."""
        self.closed = True
        self.wake.set()
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    def close(self, code: int, reason: str) -> None:
        """Close with a code once the queued replies (and those still owed) have been sent; abort if
        that, or the closing handshake, does not finish within the deadline."""
        if self.closed or self.closing is not None:
            return
        self.closing = (code, reason)
        self.wake.set()
        if self._sender_task is None or self._sender_task.done():
            self.start_sender()

    async def _close_now(self) -> None:
        code, reason = self.closing or (1000, "")
        self.sending_since = now()
        self.sending_allowance = self.server.send_deadline
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.server.send_deadline)
        except Exception:
            self.abort()
        finally:
            self.sending_since = None
            self.closed = True

    async def finish(self) -> None:
        """End of the handler: let a requested close (replies first, then the code) finish, then stop the sender."""
        task = self._sender_task
        if self.closing is not None and not self.closed and task is not None and not task.done():
            budget = self.server.send_deadline * 2 + self.server.command_timeout + 1
            try:
                await asyncio.wait_for(asyncio.shield(task), budget)
            except Exception:
                self.abort()
        self.closed = True
        self.wake.set()
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def credit_stall(self, t: float, stall: float) -> None:
        """The server's loop could not run for the ``stall`` s before ``t``: a send in flight gets the part of
        it since the send began back (the deadline measures the client, not the server's own stalls)."""
        since = self.sending_since
        if since is not None:
            self.sending_since = since + max(0.0, min(stall, t - since))

    def check_deadline(self, t: float) -> None:
        """Called by the server's watchdog: abort a send stuck past the deadline."""
        since = self.sending_since
        if since is not None and not self.closed and t - since > self.sending_allowance:
            log.warning("bridge client %d (%s): a send took longer than %.1f s; disconnecting the stalled client", self.id,  # type: ignore[attr-defined]
                        self.user or "anonymous", self.server.send_deadline)  # type: ignore[attr-defined]
            self.server.count("aborted")
            self.abort()
