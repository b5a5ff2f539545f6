"""The Foxglove dialect: ``foxglove.websocket.v1`` for Foxglove's 3D panel, no custom client code.

A client that offers the subprotocol ``foxglove.websocket.v1`` gets ``serverInfo`` and
an ``advertise`` of two JSON channels:

* ``/twin/scene`` — ``foxglove.SceneUpdate`` with the scene's real geometry (the bridge's
  GLB, split by :mod:`._glb_split`): entity ``<prim path>#model`` per twin asset is a
  ``ModelPrimitive`` (embedded GLB, ``model/gltf-binary``) in the asset's frame, coloured
  by its state (blue → red over the attribute's limits; red when out of range, magenta
  when bad; assets without a colour attribute keep their materials); ``scene#scenery``
  is the rest (plate, pipes) in ``world``; entity ``<prim path>`` carries a text label and
  every value with its unit in ``metadata`` (a cube sized by the bounds when the server
  has no GLB or the asset has no geometry in it). Updates are deltas: an entity is sent
  again only when what it shows changed (the model when its colour, quantised to
  :data:`COLOR_STEPS` steps of the ramp, changed; the label when its text or metadata did);
* ``/tf`` — ``foxglove.FrameTransforms``: ``world`` → one frame per asset (its world
  translation; assets moved by a vec3 attribute that drives ``xformOp:translate``
  move with it).

Data goes out as binary "message data" frames (opcode 0x01, subscription id u32,
timestamp ns u64, JSON payload), latest-wins at ``foxglove_rate`` Hz per client,
with the same send deadline as the twinstage dialect. Only ``subscribe`` and
``unsubscribe`` are accepted from clients; anything else gets a ``status`` error.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

import base64
import logging

from ._foxglove_schemas import FRAME_TRANSFORMS, SCENE_UPDATE
from .._jsonio import dumps, parse_json
from ..infra.session import Session, now

SCENE_CHANNEL, TF_CHANNEL = 1, 2
ROOT_FRAME = "world"
MAX_ENTITIES = 2000  # per message; the rest follow in the next ones
_DATA = struct.Struct("<BIQ")
_IDENTITY = {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}
_ORIGIN = {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "orientation": _IDENTITY}
_UNIT = {"x": 1.0, "y": 1.0, "z": 1.0}
_WHITE = {"r": 1.0, "g": 1.0, "b": 1.0, "a": 1.0}
COLOR_STEPS = 32  # the model's colour is resent when its ramp position moves by 1/32
SCENERY_ID = "scene#scenery"
GLB_TYPE = "model/gltf-binary"
log = logging.getLogger("twinstage.bridge")


class SceneModels:
    """The scene's GLB split for Foxglove: base64 data per twin asset and for the scenery (once per server)."""

    def __init__(self, data: bytes, twin_ids: set[str]):
        from ._glb_split import split_glb

        scenery, parts = split_glb(data, twin_ids)
        self.scenery = base64.b64encode(scenery).decode() if scenery else None
        self.parts = {k: base64.b64encode(v).decode() for k, v in parts.items()}

    @staticmethod
    def of(server: Any) -> "SceneModels | None":
        glb = getattr(server.hello_builder, "glb", None)
        if glb is None:
            return None
        models = getattr(glb, "foxglove_models", None)
        if models is None:
            try:
                models = SceneModels(glb.data, set(server.control.table.prims))
            except Exception as exc:  # boxes instead
                log.warning("bridge: scene GLB not usable for Foxglove (%s)", exc)
                models = False
            glb.foxglove_models = models
        return models or None


def _model(data: str, color: dict[str, float] | None) -> dict[str, Any]:
    return {"pose": _ORIGIN, "scale": _UNIT, "color": color or _WHITE, "override_color": color is not None, "url": "",
            "media_type": GLB_TYPE, "data": data}


def _empty(stamp: dict, frame: str, eid: str) -> dict[str, Any]:
    return {"timestamp": stamp, "frame_id": frame, "id": eid, "lifetime": {"sec": 0, "nsec": 0}, "frame_locked": True, "metadata": [],
            "arrows": [], "cubes": [], "spheres": [], "cylinders": [], "lines": [], "triangles": [], "texts": [], "models": []}


def _ramp(t: float) -> dict[str, float]:
    """Blue → cyan → green → yellow → red."""
    t = min(1.0, max(0.0, t))
    stops = [(0.0, (0.1, 0.3, 0.9)), (0.25, (0.1, 0.8, 0.9)), (0.5, (0.2, 0.8, 0.2)), (0.75, (0.95, 0.85, 0.1)), (1.0, (0.9, 0.15, 0.1))]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            r, g, b = (a + (b_ - a) * f for a, b_ in zip(c0, c1))
            return {"r": round(r, 4), "g": round(g, 4), "b": round(b, 4), "a": 1.0}
    return {"r": 0.9, "g": 0.15, "b": 0.1, "a": 1.0}


def _stamp(t: float) -> dict[str, int]:
    sec = int(t)
    return {"sec": sec, "nsec": min(999_999_999, int(round((t - sec) * 1e9)))}


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "(" + ", ".join(f"{c:.4g}" for c in v) + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class FoxgloveSession(Session):
    dialect = "foxglove"

    def __init__(self, server: Any, ws: Any, role: str | None, user: str):
        super().__init__(server, ws, role, user)
        self.encoding = "json"
        m = server.mirror
        self.table = server.control.table
        self.n_prims = len(self.table.prims)
        self.prims = server.hello_builder.prims
        self.subs: dict[int, int] = {}  # subscription id -> channel id
        self.dirty_scene = np.zeros(self.n_prims, dtype=bool)
        self.dirty_tf = np.zeros(self.n_prims, dtype=bool)
        self.models = SceneModels.of(server)
        self.sent_label: dict[int, str] = {}  # per prim: what its label entity showed when last sent
        self.sent_color: dict[int, Any] = {}  # per prim: its model's quantised colour when last sent
        self.scenery_due = False
        self.min_interval = 1.0 / server.foxglove_rate if server.foxglove_rate > 0 else 0.0
        self.next_allowed = 0.0
        self.extra: list[bytes] = []
        self.deleted: list[str] = []
        # which channels move which prims: vec3 attributes driving xformOp:translate
        self.movers = {name for name, ch in m.channels.items() if ch.type == "vec3" and "xformOp:translate" in ch.drives}
        # per prim: its attributes as (channel, row)
        self.attrs: list[list[tuple[str, int]]] = [[] for _ in range(self.n_prims)]
        for name, ch in m.channels.items():
            for r, pi in enumerate(ch.prim_index.tolist()):
                self.attrs[pi].append((name, r))

    # -- run ----------------------------------------------------------------------------
    async def run(self) -> None:
        if self.role is None:  # Foxglove has no auth message: token by ?token= or header only
            self.close(4401, "unauthorized: pass ?token=")
            return
        server = self.server
        self.start_sender()
        self.queue(dumps({"op": "serverInfo", "name": f"twinstage {server.control.scene_name}",
                          "capabilities": [], "supportedEncodings": [], "metadata": {"protocol": "twinstage.bridge", "role": self.role},
                          "sessionId": server.session}))
        self.queue(dumps({"op": "advertise", "channels": [
            {"id": SCENE_CHANNEL, "topic": "/twin/scene", "encoding": "json", "schemaName": "foxglove.SceneUpdate", "schema": dumps(SCENE_UPDATE),
             "schemaEncoding": "jsonschema"},
            {"id": TF_CHANNEL, "topic": "/tf", "encoding": "json", "schemaName": "foxglove.FrameTransforms", "schema": dumps(FRAME_TRANSFORMS),
             "schemaEncoding": "jsonschema"},
        ]}))
        async for raw in self.ws:
            if self.closed:
                break
            self._handle(raw)

    def _status(self, level: int, message: str) -> None:
        self.queue(dumps({"op": "status", "level": level, "message": message}))

    def _handle(self, raw: Any) -> None:
        if not isinstance(raw, str):
            self._status(2, "client publishing is not supported (no clientPublish capability)")
            return
        try:
            msg = parse_json(raw)
        except ValueError as exc:
            self._status(2, f"invalid JSON: {exc}")
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "subscribe":
            subs = msg.get("subscriptions")
            if not isinstance(subs, list):
                self._status(2, "subscribe: 'subscriptions' must be a list")
                return
            for s in subs:
                sid = s.get("id") if isinstance(s, dict) else None
                cid = s.get("channelId") if isinstance(s, dict) else None
                if not isinstance(sid, int) or isinstance(sid, bool) or not isinstance(cid, int) or isinstance(cid, bool):
                    self._status(2, "subscribe: each subscription needs integer 'id' and 'channelId'")
                    continue
                if cid not in (SCENE_CHANNEL, TF_CHANNEL):
                    self._status(2, f"subscribe: unknown channel {cid}")
                    continue
                if sid in self.subs:
                    self._status(2, f"subscribe: subscription id {sid} is already in use")
                    continue
                self.subs[sid] = cid
                (self.dirty_scene if cid == SCENE_CHANNEL else self.dirty_tf)[:] = True  # a new subscriber gets everything
                if cid == SCENE_CHANNEL:
                    self.sent_label.clear()
                    self.sent_color.clear()
                    self.scenery_due = self.models is not None and self.models.scenery is not None
            self.wake.set()
        elif op == "unsubscribe":
            ids = msg.get("subscriptionIds")
            if not isinstance(ids, list):
                self._status(2, "unsubscribe: 'subscriptionIds' must be a list")
                return
            for sid in ids:
                if isinstance(sid, int):
                    self.subs.pop(sid, None)
        else:
            self._status(2, f"unsupported op {op!r} (this server accepts subscribe and unsubscribe)")

    # -- state ----------------------------------------------------------------------------
    def on_frame(self, entry: Any) -> None:
        if not self.subs or self.closed:
            return
        hit = False
        for name, change in entry.frame.changes.items():
            pis = self.table.channels[name].prim_index[change.rows]
            self.dirty_scene[pis] = True
            if name in self.movers:
                self.dirty_tf[pis] = True
            hit = True
        if hit:
            self.wake.set()

    def on_structure(self, text: str, added: list[dict], removed: list[str]) -> None:
        if removed:
            self.deleted.extend(removed)
            self.wake.set()

    def _channels(self) -> set[int]:
        return set(self.subs.values())

    def state_delay(self) -> float | None:
        if self.extra:
            return 0
        chans = self._channels()
        due = (SCENE_CHANNEL in chans and (self.dirty_scene.any() or self.deleted or self.scenery_due)) or (TF_CHANNEL in chans and self.dirty_tf.any())
        if not due:
            return None
        t = now()
        return self.next_allowed - t if self.min_interval and t < self.next_allowed else 0

    def next_state(self) -> bytes | None:
        if self.extra:
            return self.extra.pop(0)
        if self.min_interval:
            self.next_allowed = now() + self.min_interval
        chans = self._channels()
        m = self.server.mirror
        stamp = _stamp(m.wall_time or 0.0)
        ts_ns = int((m.wall_time or 0.0) * 1e9)
        out: list[bytes] = []
        if TF_CHANNEL in chans and self.dirty_tf.any():
            pis = np.flatnonzero(self.dirty_tf)[:MAX_ENTITIES]
            self.dirty_tf[pis] = False
            payload = dumps({"transforms": [self._transform(int(pi), stamp) for pi in pis]}).encode()
            out += [_DATA.pack(1, sid, ts_ns) + payload for sid, c in self.subs.items() if c == TF_CHANNEL]
        if SCENE_CHANNEL in chans and (self.dirty_scene.any() or self.deleted or self.scenery_due):
            pis = np.flatnonzero(self.dirty_scene)[:MAX_ENTITIES]
            self.dirty_scene[pis] = False
            deletions = [{"timestamp": stamp, "type": 0, "id": i} for p in self.deleted for i in (p, p + "#model")]
            self.deleted = []
            entities = []
            if self.scenery_due:
                self.scenery_due = False
                entities.append({**_empty(stamp, ROOT_FRAME, SCENERY_ID), "models": [_model(self.models.scenery, None)]})
            for pi in pis.tolist():
                entities += self._changed(pi, stamp)
            if entities or deletions:
                payload = dumps({"deletions": deletions, "entities": entities}).encode()
                out += [_DATA.pack(1, sid, ts_ns) + payload for sid, c in self.subs.items() if c == SCENE_CHANNEL]
        if not out:
            return None
        self.extra = out[1:]
        return out[0]

    def _frame_id(self, pi: int) -> str:
        return self.table.prims[pi].lstrip("/")

    def _transform(self, pi: int, stamp: dict) -> dict[str, Any]:
        info = self.prims[pi]
        pos = list(info["position"])
        m = self.server.mirror
        for name, r in self.attrs[pi]:
            if name in self.movers:
                v = m.values[name][r]
                pos = [info["origin"][k] + float(v[k]) for k in range(3)]
        return {"timestamp": stamp, "parent_frame_id": ROOT_FRAME, "child_frame_id": self._frame_id(pi),
                "translation": {"x": pos[0], "y": pos[1], "z": pos[2]}, "rotation": _IDENTITY}

    def _changed(self, pi: int, stamp: dict) -> list[dict[str, Any]]:
        """The prim's entities whose content differs from what this client was last sent."""
        label, color, ramp_at = self._entity(pi, stamp)
        out = []
        key = dumps({k: v for k, v in label.items() if k != "timestamp"})
        if self.sent_label.get(pi) != key:
            self.sent_label[pi] = key
            out.append(label)
        data = self.models.parts.get(self.table.prims[pi]) if self.models is not None else None
        if data is not None:
            ckey = ramp_at if ramp_at is None or isinstance(ramp_at, str) else int(round(ramp_at * COLOR_STEPS))
            if pi not in self.sent_color or self.sent_color[pi] != ckey:
                self.sent_color[pi] = ckey
                q = color if ramp_at is None or isinstance(ramp_at, str) else _ramp(ckey / COLOR_STEPS)
                out.append({**_empty(stamp, label["frame_id"], label["id"] + "#model"), "models": [_model(data, q)]})
        return out

    def _entity(self, pi: int, stamp: dict) -> tuple[dict[str, Any], dict[str, float] | None, Any]:
        """(the label entity, the state colour or None, where on the ramp: a number, 'bad', 'range' or None)."""
        m = self.server.mirror
        info = self.prims[pi]
        meta = []
        worst = 0
        for name, r in self.attrs[pi]:
            ch = m.channels[name]
            q = int(m.quality[name][r])
            worst |= q
            value = m.value(name, r)
            meta.append({"key": name, "value": f"{_fmt(value)} {ch.unit}".strip() + (f" [q={q}]" if q else "")})
        color, ramp_at = None, None
        label = info["path"].rsplit("/", 1)[-1]
        cb = info.get("colorBy", -1)
        if cb >= 0:
            name, r = m.locate(cb)
            ch = m.channels[name]
            v = float(m.values[name][r])
            q = int(m.quality[name][r])
            ramp_at = min(1.0, max(0.0, (v - ch.lo[r]) / (ch.hi[r] - ch.lo[r]) if ch.hi[r] > ch.lo[r] else 0.5))
            color = _ramp(ramp_at)
            if q & 16:
                color, ramp_at = {"r": 0.9, "g": 0.1, "b": 0.9, "a": 1.0}, "bad"
            elif q & 2:
                color, ramp_at = {"r": 1.0, "g": 0.0, "b": 0.0, "a": 1.0}, "range"
            label += f"\n{name} {_fmt(v)} {ch.unit}"
        meta.append({"key": "quality", "value": str(worst)})
        size = info["size"] if any(info["size"]) else [0.2, 0.2, 0.2]
        c = info["center"]
        top = c[2] + size[2] / 2 + 0.15
        has_model = self.models is not None and info["path"] in self.models.parts
        cubes = [] if has_model else [{"pose": {"position": {"x": c[0], "y": c[1], "z": c[2]}, "orientation": _IDENTITY},
                                       "size": {"x": size[0], "y": size[1], "z": size[2]}, "color": color or {"r": 0.6, "g": 0.6, "b": 0.62, "a": 1.0}}]
        entity = {**_empty(stamp, self._frame_id(pi), info["path"]), "metadata": meta, "cubes": cubes,
                  "texts": [{"pose": {"position": {"x": c[0], "y": c[1], "z": top}, "orientation": _IDENTITY}, "billboard": True, "font_size": 12.0,
                             "scale_invariant": True, "color": _WHITE, "text": label}]}
        return entity, color, ramp_at
