"""Bridge test helpers: raw websocket clients for misbehaving peers, JSON request helpers, an asyncio
runner with a hard timeout, and the CLI run as a user runs it (imported by the bridge tests as ``_bridgeutil``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

OPERATOR = "ops:operator:operator-secret-1"
VIEWER = "watch:viewer:viewer-secret-1"
ADMIN = "root:admin:admin-secret-12"
OP_SECRET, VIEW_SECRET, ADMIN_SECRET = (t.split(":", 2)[2] for t in (OPERATOR, VIEWER, ADMIN))


def arun(coro: Any, timeout: float = 60.0) -> Any:
    """Run a coroutine with a hard timeout (a hung test fails instead of hanging CI)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ws_connect(url: str, *, token: str | None = None, origin: str | None = None, subprotocols: list[str] | None = None, **kw: Any) -> Any:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await connect(url, additional_headers=headers, origin=origin, subprotocols=subprotocols or ["twinstage.v1"], compression=None,
                         proxy=None, max_size=None, **kw)


async def recv_json(ws: Any, pred: Callable[[dict], bool] = lambda m: True, timeout: float = 10.0) -> dict:
    """Next text message matching ``pred`` (binary frames and others are skipped)."""
    async def _go() -> dict:
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                m = json.loads(raw)
                if pred(m):
                    return m
    return await asyncio.wait_for(_go(), timeout)


async def request(ws: Any, msg: dict, timeout: float = 10.0) -> dict:
    """Send a message with an id; return the ack/error with that id."""
    await ws.send(json.dumps(msg))
    return await recv_json(ws, lambda m: m.get("type") in ("ack", "error") and m.get("id") == msg["id"], timeout)


# -- raw sockets for misbehaving clients ------------------------------------------------------

def ws_frame(payload: bytes, opcode: int = 1, *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` overrides the announced payload length (to lie)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A websocket client written by hand: handshake, then whatever a test wants to send (or not read)."""

    def __init__(self, port: int, *, path: str = "/", headers: dict[str, str] | None = None, rcvbuf: int | None = None, subprotocol: str = "twinstage.v1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Protocol: {subprotocol}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.rest = buf.partition(b"\r\n\r\n")
        self.response = head.decode(errors="replace")
        self.status = int(self.response.split()[1]) if self.response else 0

    def read_all(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes (or the timeout)."""
        self.sock.settimeout(timeout)
        data = self.rest
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(data: bytes) -> int | None:
    """The close code in a server close frame found in raw bytes (server frames are unmasked)."""
    i = 0
    while i + 2 <= len(data):
        op = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n = struct.unpack(">H", data[j:j + 2])[0]
            j += 2
        elif n == 127:
            n = struct.unpack(">Q", data[j:j + 8])[0]
            j += 8
        if op == 8:
            return struct.unpack(">H", data[j:j + 2])[0] if n >= 2 else 1005
        i = j + n
    return None


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def spawn_cli(*args: str) -> tuple[subprocess.Popen, "queue.Queue[str]"]:
    """``python -m twinstage ARGS``, stdout and stderr line by line into a queue (read by a thread)."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "twinstage", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    return proc, lines


def bridge_url(lines: "queue.Queue[str]", seen: list[str]) -> str:
    """The ``ws://`` URL the CLI printed (every line read on the way is appended to ``seen``)."""
    while True:
        ln = lines.get(timeout=60)
        seen.append(ln)
        m = re.search(r"bridge (ws://127\.0\.0\.1:\d+/)", ln)
        if m:
            return m.group(1)


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Ctrl-C's sibling, SIGTERM, as a service manager stops it; its exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def reap(proc: subprocess.Popen) -> None:
    """Kill it if a failed test left it running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
