"""The twin's error log (``twin.errors``: a bounded deque of strings) → the entries added since the last
look, which the bridge sends as ``event`` messages of kind ``error`` (the single server from its loop
thread, the fan-out hub from the tick thread, with the frame)."""

from __future__ import annotations

from typing import Any, Sequence

MAX_PER_LOOK = 20


class ErrorWatch:
    def __init__(self, errors: Sequence[Any]):
        self._last = errors[-1] if errors else None

    def new(self, errors: Sequence[Any]) -> list[str]:
        """Entries appended since the previous call (the oldest :data:`MAX_PER_LOOK` of them), as text."""
        if not errors or errors[-1] is self._last:
            return []
        new = []
        for e in reversed(errors):
            if e is self._last:
                break
            new.append(e)
        self._last = errors[-1]
        return [str(e) for e in reversed(new[-MAX_PER_LOOK:])]
