"""The Kit extension: on startup, stream the bridge into the open stage's session sublayer."""

from __future__ import annotations

import asyncio
import logging

import carb.settings
import omni.ext
import omni.usd

from .client import LiveClient, Update
from .usd_writer import SessionLayerWriter

log = logging.getLogger("twinstage_live")
_SETTINGS = "/exts/twinstage.live"


class TwinstageLiveExtension(omni.ext.IExt):
    def on_startup(self, ext_id: str) -> None:
        s = carb.settings.get_settings()
        url = s.get(f"{_SETTINGS}/url") or "ws://127.0.0.1:8765/"
        token = s.get(f"{_SETTINGS}/token") or ""
        encoding = s.get(f"{_SETTINGS}/encoding") or "binary"
        max_rate = float(s.get(f"{_SETTINGS}/maxRate") or 0.0)
        self._writer: SessionLayerWriter | None = None
        self._client = LiveClient(url, token=token, encoding=encoding, max_rate=max_rate, on_hello=self._on_hello, on_state=self._on_state)
        # Kit runs an asyncio loop on its main thread: USD is written there, between frames.
        self._task = asyncio.ensure_future(self._client.run())
        log.info("twinstage live: connecting to %s", url)

    def _on_hello(self, hello: dict) -> None:
        stage = omni.usd.get_context().get_stage()
        if stage is None:
            log.warning("twinstage live: no stage open")
            return
        if self._writer is None or self._writer.stage != stage:
            if self._writer is not None:
                self._writer.detach()
            self._writer = SessionLayerWriter(stage)
        self._writer.bind(hello)
        if self._writer.missing:
            log.warning("twinstage live: %d twin prims are not on this stage (first: %s)", len(set(self._writer.missing)), self._writer.missing[0])

    def _on_state(self, up: Update) -> None:
        if self._writer is not None:
            self._writer.apply(up.indices, up.values, up.vec3_indices, up.vec3_values)

    def on_shutdown(self) -> None:
        asyncio.ensure_future(self._client.stop())
        self._task.cancel()
        if self._writer is not None:
            self._writer.detach()
            self._writer = None
