"""The ``hello`` message: a static part (protocol, limits, the attribute table, the assets)
encoded once per server start, and a small per-connection part (role, user, tick, seq,
paused, prims added/removed while running).

Two layouts of the static part: compact (columns) is encoded at start; rows (a record per
attribute and per prim: ~1.3 kB per machine, 1.29 GB at 1M machines) only when a client first
gets it — ``?hello=rows``, or no ``?hello=`` on a scene small enough for rows to fit the server's
``max_state_bytes`` — and kept from then on (:attr:`HelloBuilder.rows_builds` counts it). Whether
rows fit is first checked against a lower bound of their size (:meth:`HelloBuilder.rows_floor`:
the records' keys and paths, without encoding them); only a scene under the bound has its rows
built to compare exactly, so the answer — and every byte of every hello — is what it was when both
were built at start.

The scene's GLB (:mod:`._scene_glb`: at start, in the background, or not at all above
``glb_max_prims``) is served at ``/scene.glb`` with the websocket's auth and announced as ``hello.glb``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from .. import __version__
from ._jsonio import dumps
from ._messages import PROTOCOL, UNBOUNDED, VERSION, Limits
from ._scene import SceneInfo, plain_prims
from ._scene_glb import GLB_MAX_PRIMS, GlbSource, SceneGlb

log = logging.getLogger("twinstage.bridge")
#: ``?hello=``: "auto" (no parameter) is the rows layout unless it is over the server's ``max_state_bytes``
HELLO_LAYOUTS = ("auto", "rows", "compact")
#: the keys of an attribute record (``Mirror.attribute_table``; tests/bridge/test_hello_lazy.py checks they match)
ATTRIBUTE_KEYS = ("index", "prim", "attribute", "type", "unit", "min", "max", "role", "drives", "description")
_GLB_MARK = "@twinstage-glb@"  # where hello.glb goes in the encoded static part (it changes when a background build ends)


def _floor(obj: Any) -> Any:
    """The shortest JSON value of the same shape's keys: strings empty, numbers 0, lists empty."""
    if isinstance(obj, dict):
        return {k: _floor(v) for k, v in obj.items()}
    if isinstance(obj, str):
        return ""
    return [] if isinstance(obj, (list, tuple, np.ndarray)) else 0


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
        else:
            self.prims = plain_prims(ctl)
        self.glb_source = GlbSource(stage, len(self.prims), getattr(server, "glb_max_prims", GLB_MAX_PRIMS),
                                    enabled=getattr(server, "scene_glb", True), on_change=self._glb_changed)
        limits = Limits(max_message_bytes=server.max_message_bytes, commands_per_second=server.commands_per_second, command_burst=server.command_burst,
                        command_timeout=server.command_timeout, send_deadline=server.send_deadline, max_rate=ctl.rate,
                        ring_frames=server.ring.max_frames, max_state_bytes=server.max_state_bytes)
        #: the static fields in hello order (attributes and prims: filled in by the layout)
        self._fields = {
            "protocol": PROTOCOL, "version": VERSION, "session": server.session, "server": f"twinstage {__version__}", "scene": ctl.scene_name,
            "tickRate": ctl.rate, "upAxis": up_axis, "metersPerUnit": mpu, "encodings": ["json", "binary", "compact"],
            "limits": limits.model_dump(by_alias=True, mode="json"), "attributes": [], "prims": [], "layout": "rows", "glb": _GLB_MARK,
        }
        self._lock = threading.Lock()
        self._rows: tuple[str, str] | None = None
        self._rows_len = 0
        self.rows_builds = 0
        self._attributes: list[dict[str, Any]] | None = None
        self._glb_text = ""
        self._glb_changed()
        static = dict(self._fields, attributes=[], prims=[], layout="compact", channels=self._channels(), assets=self._assets())
        self._compact = self._split(dumps(static)[1:-1])
        self._compact_len = len(self._compact[0]) + len(self._compact[1])
        self._floor: int | None = None

    @staticmethod
    def _split(text: str) -> tuple[str, str]:
        head, mark, tail = text.partition(f'"{_GLB_MARK}"')
        assert mark, "hello: no glb field"
        return head, tail

    # -- the GLB ------------------------------------------------------------------------------------
    @property
    def glb(self) -> SceneGlb | None:
        """The scene's GLB once built (None: none, or not yet)."""
        return self.glb_source.glb

    @glb.setter
    def glb(self, value: SceneGlb | None) -> None:
        self.glb_source.glb = value
        self._glb_changed()

    def _glb_changed(self) -> None:
        self._glb_text = dumps(self.glb_source.info())

    # -- rows, on demand ------------------------------------------------------------------------------
    @property
    def attributes(self) -> list[dict[str, Any]]:
        """The attribute table (a record per entry; built with the rows hello)."""
        if self._attributes is None:
            self._attributes = self.server.mirror.attribute_table()
        return self._attributes

    def _rows_text(self) -> tuple[str, str]:
        with self._lock:  # one build, whoever asks first
            if self._rows is None:
                t0 = time.perf_counter()
                self._rows = self._split(dumps(dict(self._fields, attributes=self.attributes, prims=self.prims))[1:-1])
                self._rows_len = len(self._rows[0]) + len(self._rows[1])
                self.rows_builds += 1
                log.info("bridge: rows hello built on first request: %d bytes in %.2f s", self._rows_len + len(self._glb_text) - 2,
                         time.perf_counter() - t0)
            return self._rows

    def rows_floor(self) -> int:
        """A lower bound of the rows hello's static size (what :attr:`sizes` ``["rows"]`` would be), from the
        records' shapes and names alone: the fixed fields as encoded; per prim the record with empty strings,
        zeros and empty lists plus its path and one digit and comma per attribute index; per attribute the
        record with every value 0 plus its prim's path and its name."""
        if self._floor is None:
            p = self.prims
            head, tail = self._split(dumps(self._fields)[1:-1])  # (hello.glb not counted: it changes when a build ends)
            n = len(head) + len(tail)
            if p:
                keys = p[0].keys()
                if all(r.keys() == keys for r in p):
                    n += len(p) * (len(dumps(_floor(p[0]))) + 1) - 1
                    n += sum(len(r["path"]) + max(0, 2 * len(r["attributes"]) - 1) for r in p)
            table = self.server.mirror.table
            path_len = np.fromiter(map(len, table.prims), dtype=np.int64, count=len(table.prims))
            row = len(dumps(dict.fromkeys(ATTRIBUTE_KEYS, 0))) + 1
            for ch in self.server.mirror.channels.values():
                k = len(ch.prim_index)
                n += k * (row + len(ch.name)) + int(path_len[np.asarray(ch.prim_index, dtype=np.int64)].sum()) if k else 0
            self._floor = n
        return self._floor

    @property
    def compact_bytes(self) -> int:
        """Static bytes of the compact hello (built at start)."""
        return self._compact_len + len(self._glb_text)

    @property
    def sizes(self) -> dict[str, int]:
        """Static bytes of each layout (reading ``rows`` builds the rows hello)."""
        self._rows_text()
        return {"rows": self._rows_len + len(self._glb_text), "compact": self.compact_bytes}

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
        if not bound:
            return "rows"
        if self.rows_floor() > bound:  # rows are bigger than the bound whatever they hold: never built
            return "compact"
        return "compact" if self.sizes["rows"] > bound else "rows"

    def hello(self, role: str, user: str, layout: str = "auto") -> str:
        server = self.server
        layout = self.layout(layout)
        m = server.mirror
        st = server.structure
        added = list(st.added.values()) if st is not None else []
        removed = list(st.removed) if st is not None else []
        dyn = {"type": "hello", "role": role, "user": user, "tick": m.tick, "simTime": m.sim_time, "seq": m.seq, "paused": server.control.paused,
               "added": added, "removed": removed}
        head, tail = self._compact if layout == "compact" else self._rows_text()
        return "{" + dumps(dyn)[1:-1] + "," + head + self._glb_text + tail + "}"


def _uniform(values: np.ndarray) -> Any:
    """One number per row, or a single number when every row has the same value."""
    return values[:1] if len(values) and (values == values[0]).all() else values


def _categories(values: list[str]) -> dict[str, Any]:
    """Distinct values and, unless there is just one, each row's index into them."""
    cats: dict[str, int] = {}
    index = [cats.setdefault(v, len(cats)) for v in values]
    return {"values": list(cats) or [""], "index": [] if len(cats) <= 1 else index}
