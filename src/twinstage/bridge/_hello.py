"""The ``hello`` message: a static part (protocol, limits, the attribute table, the assets)
encoded once per server start, and a small per-connection part (role, user, tick, seq,
paused, prims added/removed while running).

The scene's GLB (:func:`twinstage.export.to_glb` of the twin's stage, built once here) is
served at :data:`GLB_PATH` with the websocket's auth and announced as ``hello.glb``."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np

from .. import __version__
from ._jsonio import dumps
from ._messages import PROTOCOL, UNBOUNDED, VERSION, Limits
from ._scene import SceneInfo, plain_prims

log = logging.getLogger("twinstage.bridge")
GLB_PATH = "/scene.glb"
#: ``?hello=``: "auto" (no parameter) is the rows layout unless it is over the server's ``max_state_bytes``
HELLO_LAYOUTS = ("auto", "rows", "compact")
GLB_TYPE = "model/gltf-binary"
NO_GLB = {"url": "", "mediaType": GLB_TYPE, "bytes": 0, "sha256": "", "upAxis": "Y", "metersPerUnit": 1.0}


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
        return {"url": GLB_PATH, "mediaType": GLB_TYPE, "bytes": len(self.data), "sha256": self.sha256, "upAxis": "Y", "metersPerUnit": 1.0}


class HelloBuilder:
    def __init__(self, server: Any):
        self.server = server
        ctl = server.control
        stage = ctl.stage
        up_axis, mpu = "Z", 1.0
        if stage is not None:
            from pxr import UsdGeom

            up_axis, mpu = str(UsdGeom.GetStageUpAxis(stage)), float(UsdGeom.GetStageMetersPerUnit(stage))
            self.prims = SceneInfo(stage).twin_prims(ctl)
            self.glb = self._build_glb(stage) if getattr(server, "scene_glb", True) else None
        else:
            self.glb = None
            self.prims = plain_prims(ctl)
        self.attributes = server.mirror.attribute_table()
        limits = Limits(max_message_bytes=server.max_message_bytes, commands_per_second=server.commands_per_second, command_burst=server.command_burst,
                        command_timeout=server.command_timeout, send_deadline=server.send_deadline, max_rate=ctl.rate,
                        ring_frames=server.ring.max_frames, max_state_bytes=server.max_state_bytes)
        static = {
            "protocol": PROTOCOL, "version": VERSION, "session": server.session, "server": f"twinstage {__version__}", "scene": ctl.scene_name,
            "tickRate": ctl.rate, "upAxis": up_axis, "metersPerUnit": mpu, "encodings": ["json", "binary", "compact"],
            "limits": limits.model_dump(by_alias=True, mode="json"), "attributes": self.attributes, "prims": self.prims, "layout": "rows",
            "glb": self.glb.info() if self.glb is not None else NO_GLB,
        }
        self._static = dumps(static)[1:-1]
        static.update(attributes=[], prims=[], layout="compact", channels=self._channels(), assets=self._assets())
        self._static_compact = dumps(static)[1:-1]
        self.sizes = {"rows": len(self._static), "compact": len(self._static_compact)}

    @staticmethod
    def _build_glb(stage: Any) -> SceneGlb | None:
        try:
            glb = SceneGlb(stage)
        except Exception as exc:  # the state still streams; clients fall back to boxes
            log.warning("bridge: no scene GLB for clients (%s: %s)", type(exc).__name__, exc)
            return None
        log.info("bridge: scene GLB %d bytes in %.2f s", len(glb.data), glb.seconds)
        return glb

    def _channels(self) -> list[dict[str, Any]]:
        """The attribute table once per channel: per-row columns only where rows differ."""
        m = self.server.mirror
        out = []
        for ch in m.channels.values():
            lo = np.clip(np.asarray(ch.lo, dtype=np.float64), -UNBOUNDED, UNBOUNDED)
            hi = np.clip(np.asarray(ch.hi, dtype=np.float64), -UNBOUNDED, UNBOUNDED)
            prims = np.asarray(ch.prim_index, dtype=np.int64)
            start = int(prims[0]) if len(prims) else 0
            contiguous = bool(len(prims) and (prims == np.arange(start, start + len(prims))).all())
            out.append({"name": ch.name, "type": ch.type, "unit": ch.unit, "offset": int(ch.offset), "count": len(ch), "primStart": start,
                        "prims": [] if contiguous else prims, "min": _uniform(lo), "max": _uniform(hi), "role": _categories([str(r) for r in ch.role]),
                        "drives": _categories(list(ch.drives)), "description": _categories(list(ch.description))})
        return out

    def _assets(self) -> dict[str, Any]:
        """The assets as columns: paths as parent + name, categories for strings, distinct triples for sizes."""
        p = self.prims
        parents: dict[str, int] = {}
        parent, names = [], []
        for r in p:
            head, _, name = r["path"].rpartition("/")
            parent.append(parents.setdefault(head, len(parents)))
            names.append(name)

        def vec(key: str, categorical: bool) -> Any:
            a = np.round(np.asarray([r[key] for r in p], dtype=np.float64).reshape(-1, 3), 5)
            if not categorical:
                return a.reshape(-1)
            uniq, inv = np.unique(a, axis=0, return_inverse=True) if len(a) else (a, np.zeros(0, np.int64))
            return {"values": uniq.reshape(-1), "index": [] if len(uniq) <= 1 else inv.reshape(-1)}

        return {"count": len(p), "parents": list(parents), "parent": parent, "names": names, "kinds": _categories([r["kind"] for r in p]),
                "assetIds": _categories([r["assetId"] for r in p]), "models": _categories([r["model"] for r in p]),
                "position": vec("position", False), "origin": vec("origin", True), "center": vec("center", True), "size": vec("size", True),
                "colorBy": np.asarray([r["colorBy"] for r in p], dtype=np.int64)}

    def layout(self, asked: str) -> str:
        """The layout a client gets: what it asked for; without ``?hello=``, rows unless rows would exceed
        the server's ``max_state_bytes`` (then compact, which a default-configured client can receive)."""
        if asked != "auto":
            return asked
        bound = self.server.max_state_bytes
        return "compact" if bound and self.sizes["rows"] > bound else "rows"

    def hello(self, role: str, user: str, layout: str = "auto") -> str:
        server = self.server
        layout = self.layout(layout)
        m = server.mirror
        st = server.structure
        added = list(st.added.values()) if st is not None else []
        removed = list(st.removed) if st is not None else []
        dyn = {"type": "hello", "role": role, "user": user, "tick": m.tick, "simTime": m.sim_time, "seq": m.seq, "paused": server.control.paused,
               "added": added, "removed": removed}
        return "{" + dumps(dyn)[1:-1] + "," + (self._static_compact if layout == "compact" else self._static) + "}"


def _uniform(values: np.ndarray) -> Any:
    """One number per row, or a single number when every row has the same value."""
    return values[:1] if len(values) and (values == values[0]).all() else values


def _categories(values: list[str]) -> dict[str, Any]:
    """Distinct values and, unless there is just one, each row's index into them."""
    cats: dict[str, int] = {}
    index = [cats.setdefault(v, len(cats)) for v in values]
    return {"values": list(cats) or [""], "index": [] if len(cats) <= 1 else index}
