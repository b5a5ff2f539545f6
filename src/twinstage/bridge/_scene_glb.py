"""The scene's GLB for ``GET /scene.glb`` and ``hello.glb``: when it is built, and what hello says meanwhile.

Measured here (2 shared cores): ``export.glb_bytes`` of the factory scene costs ~1.2 ms and ~0.8 kB
of GLB per prim (10k machines: 12 s, 8.2 MB); at 1M machines the build ran out of memory (20.7 GB of
23 GB). So:

* up to :data:`GLB_SYNC_PRIMS` twin prims it is built when the server starts, as it always was:
  every hello announces it complete (``status`` "ready", ``bytes``, ``sha256``);
* above that, up to the server's ``glb_max_prims`` (``serve --glb-max-prims``, default
  :data:`GLB_MAX_PRIMS`), it is built in a background thread from a private copy of the scene file
  (the twin's own stage is written by the tick thread every tick; USD does not allow reading it
  meanwhile), so the server listens at once. Until it is done hello says ``status`` "building"
  with ``url`` set and ``bytes`` 0, ``sha256`` ""; ``GET /scene.glb`` waits up to
  :data:`GLB_WAIT_S` for it, then answers ``503`` with ``Retry-After`` (the browser client retries);
* above ``glb_max_prims``, or when the stage has no file to read privately, or the export fails,
  there is none: ``url`` "", ``status`` "none" and ``reason`` saying why (also logged). Clients draw
  a box per asset, as they do for any ``url`` "".
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

log = logging.getLogger("twinstage.bridge")
GLB_PATH = "/scene.glb"
GLB_TYPE = "model/gltf-binary"
#: twin prims up to which the GLB is built at start (hello then always announces it complete)
GLB_SYNC_PRIMS = 5_000
#: default ``glb_max_prims``: no GLB above it (~2 min and ~80 MB of GLB here at the cap)
GLB_MAX_PRIMS = 100_000
#: how long ``GET /scene.glb`` waits for a GLB being built before answering 503 (under websockets' open_timeout)
GLB_WAIT_S = 5.0
#: ``Retry-After`` of that 503 (s)
GLB_RETRY_S = 5


def no_glb(reason: str) -> dict[str, Any]:
    return {"url": "", "mediaType": GLB_TYPE, "bytes": 0, "sha256": "", "upAxis": "Y", "metersPerUnit": 1.0, "status": "none", "reason": reason}


class SceneGlb:
    """The stage as GLB bytes (Y-up metres, node ``extras.twinId`` = prim path) with its ETag."""

    def __init__(self, stage: Any):
        from ..export._glb import glb_bytes

        t0 = time.perf_counter()
        self.data = glb_bytes(stage, animation=None)
        self.seconds = time.perf_counter() - t0
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.etag = f'"{self.sha256[:32]}"'

    def info(self) -> dict[str, Any]:
        return {"url": GLB_PATH, "mediaType": GLB_TYPE, "bytes": len(self.data), "sha256": self.sha256, "upAxis": "Y", "metersPerUnit": 1.0,
                "status": "ready", "reason": ""}


def private_stage(stage: Any) -> Any:
    """A stage of its own on the scene file, for another thread to read while the twin writes its own: the root
    layer read afresh from disk as a layer of its own (a file format argument makes it a distinct layer, anchored
    at the same path, so relative references resolve), no session layer (the twin's live values are there).
    None when the root layer has no file or unsaved edits."""
    from pxr import Sdf, Usd

    root = stage.GetRootLayer()
    if root.anonymous or not root.realPath or root.dirty:
        return None
    layer = Sdf.Layer.FindOrOpen(root.realPath, {"twinstage_private": "scene-glb"})
    return Usd.Stage.Open(layer, Usd.Stage.LoadAll) if layer is not None else None


class GlbSource:
    """Builds (or declines to build) the scene's GLB and says where it stands: :attr:`glb` once ready,
    :meth:`info` for hello, :meth:`wait` for the HTTP handler. ``on_change`` runs (in the building
    thread) when a background build ends."""

    def __init__(self, stage: Any, prims: int, max_prims: int | None, *, enabled: bool = True, on_change: Any = None):
        self.glb: SceneGlb | None = None
        self.status, self.reason = "none", ""
        self.prims = int(prims)
        self.builds = 0
        self.on_change = on_change
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if stage is None:
            self._end(None, "the server has no stage", quiet=True)
        elif not enabled:
            self._end(None, "the server was started without a scene GLB", quiet=True)
        elif max_prims is not None and self.prims > max_prims:
            self._end(None, f"the scene has {self.prims} twin prims, more than this server builds a GLB for ({max_prims}; serve --glb-max-prims)")
        elif self.prims <= GLB_SYNC_PRIMS:
            self._end(*self._build(stage))
        else:
            private = private_stage(stage)
            if private is None:
                self._end(*self._build(stage))  # no file to read privately: at start, on this thread, as before
            else:
                self.status = "building"
                log.info("bridge: building the scene GLB (%d twin prims) in the background; hello says 'building' until it is done", self.prims)
                self._thread = threading.Thread(target=self._background, args=(private,), name="twinstage-bridge-glb", daemon=True)
                self._thread.start()

    def _build(self, stage: Any) -> tuple[SceneGlb | None, str]:
        self.builds += 1
        try:
            glb = SceneGlb(stage)
        except Exception as exc:  # the state still streams; clients fall back to boxes
            return None, f"the export failed ({type(exc).__name__}: {exc})"[:300]
        log.info("bridge: scene GLB %d bytes in %.2f s", len(glb.data), glb.seconds)
        return glb, ""

    def _background(self, stage: Any) -> None:
        glb, reason = self._build(stage)
        del stage
        self._end(glb, reason)
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # pragma: no cover - a bug in the hook must not hide the GLB
                log.exception("bridge: scene GLB hook failed")

    def _end(self, glb: SceneGlb | None, reason: str, quiet: bool = False) -> None:
        self.glb, self.reason = glb, reason
        self.status = "ready" if glb is not None else "none"
        if glb is None:
            (log.info if quiet else log.warning)("bridge: no scene GLB for clients: %s (they draw a box per asset)", reason)
        self._done.set()

    def info(self) -> dict[str, Any]:
        glb = self.glb
        if glb is not None:
            return glb.info()
        if self.status == "building":
            return {**no_glb(f"being built ({self.prims} twin prims); GET {GLB_PATH} answers 503 with Retry-After until it is ready"),
                    "url": GLB_PATH, "status": "building"}
        return no_glb(self.reason)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a build in progress (True when it has ended)."""
        return self._done.wait(timeout)
