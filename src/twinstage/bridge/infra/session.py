"""A connected client: identity, role, counters and the hooks the server calls on it."""

from __future__ import annotations

from typing import Any

from .sender import AfterState, Closed, Sender, now

__all__ = ["AfterState", "Closed", "Session", "now"]


class Session(Sender):
    dialect = "base"

    def __init__(self, server: Any, ws: Any, role: str | None, user: str):
        super().__init__(server, ws)
        self.id = server.next_client_id()
        self.role = role
        self.user = user
        self.merged = 0
        self.snapshots = 0
        self.encoding = "json"
        self.hello_sent = False

    async def run(self) -> None:  # pragma: no cover - dialects implement it
        raise NotImplementedError

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
