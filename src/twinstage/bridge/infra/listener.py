"""The listening socket: the websocket handshake (Origin, token, subprotocol), the scene's
GLB (``GET /scene.glb``, same auth), the optional static file server, one session per connection, the send-deadline watchdog and shutdown.

The dialect is chosen by subprotocol (``foxglove.websocket.v1`` → Foxglove, else twinstage);
everything a dialect needs from the twin it gets from the server, never from here.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import socket
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from ... import __version__
from .._hello import HELLO_LAYOUTS
from .._scene_glb import GLB_PATH, GLB_RETRY_S, GLB_TYPE, GLB_WAIT_S
from .._messages import FOXGLOVE_SUBPROTOCOL, SUBPROTOCOL
from .auth import Auth, origin_allowed
from .session import Closed, Session, now

log = logging.getLogger("twinstage.bridge")

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png"}


def static_response(base: Path, path: str) -> Response:
    """A file below ``base`` (no traversal), or 404."""
    rel = urlsplit(path).path.lstrip("/") or "index.html"
    target = (base / rel).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return Response(404, "Not Found", Headers([("Content-Type", "text/plain"), ("Content-Length", "10")]), b"not found\n")
    body = target.read_bytes()
    ctype = _TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return Response(200, "OK", Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
                                        ("X-Content-Type-Options", "nosniff")]), body)


def _plain(status: int, reason: str, text: str, extra: Sequence[tuple[str, str]] = ()) -> Response:
    body = text.encode()
    return Response(status, reason, Headers([("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra]), body)


def _cookie_token(headers: Any) -> str | None:
    for cookie in headers.get_all("Cookie") if hasattr(headers, "get_all") else []:
        for part in cookie.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "twinstage_token" and v:
                return v
    return None


async def glb_response(server: Any, request: Any) -> Response:
    """``GET /scene.glb``: the scene's GLB with the websocket's auth (token by ?token=, Bearer header or
    cookie; 401 without an accepted one unless anonymous access is on; 403 for a disallowed Origin).
    While it is being built: wait up to ``GLB_WAIT_S`` for it, then 503 with ``Retry-After``."""
    headers = request.headers
    if not origin_allowed(headers.get("Origin"), server.origins, headers.get("Host")):
        server.count("rejected_origin")
        return _plain(403, "Forbidden", "Origin not allowed\n")
    secret = Auth.from_request(request.path, headers) or _cookie_token(headers)
    if secret is not None:
        if server.auth.check(secret) is None:
            server.count("rejected_token")
            return _plain(401, "Unauthorized", "wrong token\n", [("WWW-Authenticate", 'Bearer realm="twinstage"')])
    elif server.auth.anonymous is None:
        server.count("rejected_token")
        return _plain(401, "Unauthorized", "this server needs a token (?token=, Authorization: Bearer or cookie twinstage_token)\n",
                      [("WWW-Authenticate", 'Bearer realm="twinstage"')])
    hb = getattr(server, "hello_builder", None)
    source = getattr(hb, "glb_source", None)
    if source is not None and source.status == "building":
        end = now() + GLB_WAIT_S
        while source.status == "building" and now() < end:
            await asyncio.sleep(0.05)
        if source.status == "building":
            return _plain(503, "Service Unavailable", f"the scene GLB is being built ({source.prims} twin prims); retry in {GLB_RETRY_S} s\n",
                          [("Retry-After", str(GLB_RETRY_S)), ("Cache-Control", "no-store")])
    glb = getattr(hb, "glb", None)
    if glb is None:
        why = getattr(source, "reason", "") or "no stage, or it could not be exported: see the server log"
        return _plain(404, "Not Found", f"this server has no scene GLB: {why}\n")
    common = [("ETag", glb.etag), ("Cache-Control", "private, no-cache"), ("X-Content-Type-Options", "nosniff")]
    if glb.etag in [t.strip() for t in headers.get("If-None-Match", "").split(",")]:
        return Response(304, "Not Modified", Headers([*common, ("Content-Length", "0")]), b"")
    return Response(200, "OK", Headers([("Content-Type", GLB_TYPE), ("Content-Length", str(len(glb.data))), *common]), glb.data)


class Listener:
    """Accepts connections for a :class:`~twinstage.bridge.Server` (on its event loop)."""

    def __init__(self, server: Any):
        self.server = server
        self.ws_server: Any = None
        self.port = 0
        self._watchdog_task: asyncio.Task | None = None

    async def start(self) -> int:
        s = self.server
        sock = getattr(s, "listen_socket", None)  # a fan-out worker: its SO_REUSEPORT socket on the shared port
        self.ws_server = await ws_serve(
            self._handler, None if sock else s.host, None if sock else s.requested_port, sock=sock, compression=None, max_size=s.max_message_bytes, max_queue=16, write_limit=s.write_limit,
            ping_interval=s.ping_interval, ping_timeout=s.ping_interval, close_timeout=s.send_deadline, open_timeout=10,
            process_request=self._process_request, select_subprotocol=self._select_subprotocol, logger=s.wslog,
            server_header=f"twinstage/{__version__}",
        )
        sock = next(iter(self.ws_server.sockets))
        self.port = sock.getsockname()[1]
        self._watchdog_task = asyncio.get_running_loop().create_task(self._watchdog())
        return self.port

    async def _watchdog(self) -> None:
        """Abort connections whose current send has taken longer than its deadline.

        A deadline counts the time the server could have sent, not the time its own loop could not
        run: when this wakes later than asked (a tick holding the GIL — a gen-2 GC pass or a USD
        call takes seconds at 1M assets —, a big frame applied or a big snapshot encoded on the
        loop), the sends in flight get that stall back (:meth:`Sender.credit_stall`). Without it
        such stalls were charged to the client: a likely part of why the 1M bench's client was
        aborted (1006) during its snapshot (docs/performance.md, "A 1M-asset run")."""
        server = self.server
        period = max(0.02, min(0.25, server.send_deadline / 4))
        last = now()
        while True:
            await asyncio.sleep(period)
            t = now()
            stall = t - last - period
            last = t
            if stall > period:  # (lateness of a period or less is ordinary scheduling)
                server.count("loop_stalls")
                server.count("loop_stall_ms", int(stall * 1000))
                for s in list(server.sessions):
                    s.credit_stall(t, stall)
            for s in list(server.sessions):
                s.check_deadline(t)

    async def shutdown(self) -> None:
        """Stop listening; close every client with 1001 (going away), abort those that do not finish in time."""
        server = self.server
        if self.ws_server is not None:
            self.ws_server.close(close_connections=False)
        for s in list(server.sessions):
            s.close(1001, "server shutting down")
        end = now() + server.send_deadline + 1
        while server.sessions and now() < end:
            await asyncio.sleep(0.02)
        for s in list(server.sessions):
            s.abort()
        if self.ws_server is not None:
            try:
                await asyncio.wait_for(self.ws_server.wait_closed(), 3)
            except Exception:
                pass
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()

    # -- handshake -------------------------------------------------------------------------
    def _select_subprotocol(self, connection: Any, offered: Sequence[str]) -> str | None:
        if FOXGLOVE_SUBPROTOCOL in offered:
            return FOXGLOVE_SUBPROTOCOL
        if SUBPROTOCOL in offered:
            return SUBPROTOCOL
        return None

    def _process_request(self, connection: Any, request: Any) -> Response | None:
        s = self.server
        headers = request.headers
        if "websocket" not in headers.get("Upgrade", "").lower():
            if urlsplit(request.path).path == GLB_PATH:
                return glb_response(s, request)
            if s.http_dir is not None:
                return static_response(s.http_dir, request.path)
            return None
        origin = headers.get("Origin")
        if not origin_allowed(origin, s.origins, headers.get("Host")):
            s.count("rejected_origin")
            return connection.respond(403, "Forbidden: Origin not allowed\n")
        layouts = parse_qs(urlsplit(request.path).query, keep_blank_values=True).get("hello", ["auto"])
        if len(layouts) != 1 or layouts[0] not in HELLO_LAYOUTS:
            s.count("rejected_request")
            return connection.respond(400, f"Bad Request: hello must be one of {', '.join(HELLO_LAYOUTS[1:])} (or absent), got {layouts!r}\n"[:300])
        connection.twinstage_hello = layouts[0]
        secret = Auth.from_request(request.path, headers)
        if secret is not None:
            tok = s.auth.check(secret)
            if tok is None:
                s.count("rejected_token")
                return connection.respond(401, "Unauthorized\n")
            connection.twinstage_auth = (tok.role, tok.name)
        elif s.auth.anonymous is not None:
            connection.twinstage_auth = (s.auth.anonymous, "")
        elif origin is not None:
            connection.twinstage_auth = None  # a browser: it authenticates with its first message
        else:
            s.count("rejected_token")
            return connection.respond(401, "Unauthorized\n")
        return None

    async def _handler(self, ws: Any) -> None:
        server = self.server
        if server.send_buffer:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(server.send_buffer))
        auth = getattr(ws, "twinstage_auth", None)
        role, user = auth if auth else (None, "")
        if ws.subprotocol == FOXGLOVE_SUBPROTOCOL:
            from ..dialects.foxglove import FoxgloveSession

            session: Session = FoxgloveSession(server, ws, role, user)
        else:
            from ..dialects.twinstage import TwinSession

            session = TwinSession(server, ws, role, user)
        server.sessions.add(session)
        server.count("connections")
        try:
            await session.run()
        except (ConnectionClosed, Closed):
            pass
        except Exception:
            log.exception("bridge client %d: handler failed", session.id)
        finally:
            await session.finish()
            server.sessions.discard(session)
