"""Helpers for the fan-out tests (imported as ``_fanoututil``): which process serves a connection,
and a raw websocket that records every message it receives, in order."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Callable


def owner_pid(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among ``pids`` holding the server side of the loopback connection from ``client_port``."""
    inode = None
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f_ = line.split()
            if int(f_[1].rsplit(":", 1)[1], 16) == server_port and int(f_[2].rsplit(":", 1)[1], 16) == client_port:
                inode = f_[9]
    if inode is None:
        return None
    want = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == want:
                    return pid
            except OSError:
                continue
    return None


def client_port(ws: Any) -> int:
    return int(ws.transport.get_extra_info("sockname")[1])


class Recorder:
    """A websocket whose every text message is decoded and kept in arrival order (``msgs``)."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.msgs: list[dict[str, Any]] = []
        self.binary = 0
        self._new = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, str):
                    self.msgs.append(json.loads(raw))
                else:
                    self.binary += 1
                self._new.set()
        except Exception:
            self._new.set()

    async def send(self, msg: Any) -> None:
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        """The first message from index ``start`` on that matches ``pred`` (waiting for it)."""
        async def go() -> dict[str, Any]:
            i = start
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i]):
                        return self.msgs[i]
                    i += 1
                self._new.clear()
                if i < len(self.msgs):
                    continue
                await self._new.wait()
        return await asyncio.wait_for(go(), timeout)

    async def reply(self, msg: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send a request with an id; its one ack/error."""
        start = len(self.msgs)
        await self.send(msg)
        return await self.until(lambda m: m.get("type") in ("ack", "error") and m.get("id") == msg["id"], timeout, start)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
