"""The viewer as a bridge client: follow a remote twin with ``twinstage.bridge.Client``.

The client runs on its own asyncio thread; each snapshot/delta it applies is copied
into the viewer's :class:`TwinState` (only the entries that changed), and the
bridge's ``alarm`` messages become external alarms. Geometry comes from the same
USD scene opened locally; without one, the viewer builds stand-in boxes from the
prim records of the server's ``hello`` (position and bounding box of every asset).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np

from ..state import Change, Frame
from ._env import ViewerUnavailable

log = logging.getLogger("twinstage.viewer")


def proxy_stage(hello: dict[str, Any]) -> Any:
    """An in-memory twin stage from a bridge ``hello``: one box per asset, its declared attributes."""
    from pxr import Gf, Sdf, UsdGeom, Vt

    from ..usd import create_stage, declare_asset, declare_attribute

    up = hello.get("upAxis", "Z")
    stage = create_stage(None, root="Remote", up_axis=up if up in ("Y", "Z") else "Z")
    by_prim: dict[str, list[dict[str, Any]]] = {}
    for a in hello.get("attributes", []):
        by_prim.setdefault(a["prim"], []).append(a)
    for rec in hello.get("prims", []):
        path = rec["path"]
        # prims keep their own paths so entries map by name; parents are plain Xforms
        parts = Sdf.Path(path).GetPrefixes()
        for p in parts[:-1]:
            if not stage.GetPrimAtPath(p):
                UsdGeom.Xform.Define(stage, p)
        xf = UsdGeom.Xform.Define(stage, path)
        xf.AddTranslateOp().Set(Gf.Vec3d(*rec.get("position", (0, 0, 0))))
        prim = xf.GetPrim()
        declare_asset(prim, kind=rec.get("kind", ""), asset_id=rec.get("assetId", ""), model="")
        size = np.asarray(rec.get("size", (0, 0, 0)), dtype=float)
        if size.max(initial=0) > 0:
            cube = UsdGeom.Cube.Define(stage, f"{path}/Bounds")
            cube.CreateSizeAttr(1.0)
            cxf = UsdGeom.Xformable(cube)
            cxf.AddTranslateOp().Set(Gf.Vec3d(*rec.get("center", (0, 0, 0))))
            cxf.AddScaleOp().Set(Gf.Vec3f(*np.maximum(size, 1e-3).tolist()))
            cube.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(0.45, 0.48, 0.52)]))
        for a in by_prim.get(path, []):
            kind = a.get("type", "float")
            lo = a.get("min", -1e300)
            hi = a.get("max", 1e300)
            lo = -float("inf") if lo <= -1e300 else lo
            hi = float("inf") if hi >= 1e300 else hi
            value = (0.0, 0.0, 0.0) if kind == "vec3" else (False if kind == "bool" else 0)
            if kind == "float":
                value = min(max(0.0, lo), hi) if np.isfinite(lo) or np.isfinite(hi) else 0.0
            try:
                declare_attribute(prim, a["attribute"], kind, value, unit=a.get("unit") or "1", min=lo, max=hi,
                                  role=a.get("role", "state"), drives=a.get("drives", ""), description=a.get("description", ""))
            except Exception as exc:  # an attribute we cannot declare still leaves the rest of the view
                log.info("viewer: remote %s.%s not shown: %s", path, a["attribute"], exc)
    return stage


class RemoteFeed:
    """Connects a :class:`~twinstage.viewer.Viewer` to a bridge server (see module doc)."""

    def __init__(self, viewer: Any, url: str, scene: Any = None, *, token: str | None = None, timeout: float = 15.0,
                 prefixes: tuple[str, ...] = (), max_rate: float = 0.0):
        try:
            from ..bridge import Client
        except ImportError as exc:  # pragma: no cover - bridge extra missing
            raise ViewerUnavailable(f"--connect needs the bridge extra: pip install 'twinstage[bridge]' ({exc})") from None
        self.viewer = viewer
        self.url = url
        self.status = "connecting"
        self.error: str = ""
        self._client = Client(url, token=token)
        self._client.replica.track_dirty = True  # the rows each update changed: all the viewer copies
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._map: dict[str, np.ndarray] = {}  #: remote channel -> local row per remote row (-1: not in the local scene)
        self._alarms_seen = 0
        self._hello: dict[str, Any] | None = None
        self._hello_event = threading.Event()
        self._prefixes = prefixes
        self._max_rate = max_rate
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twinstage-viewer-bridge", daemon=True)
        self._thread.start()
        if not self._hello_event.wait(timeout):
            self.close()
            raise ViewerUnavailable(f"{url}: no answer from the bridge within {timeout:g} s")
        if self._hello is None:
            self.close()
            raise ViewerUnavailable(f"{url}: cannot connect: {self.error}")
        if scene is not None:
            viewer.load(scene)
        elif viewer.stage is None:
            viewer.load(proxy_stage(self._hello))
            viewer.source = url
        if viewer.state is None:
            self.close()
            raise ViewerUnavailable(f"{url}: the local scene has no twin prims to map the remote state onto")
        self._build_map()
        self._go.set()
        if not self._ready.wait(timeout):
            self.close()
            raise ViewerUnavailable(f"{url}: no snapshot within {timeout:g} s ({self.error or self.status})")

    # -- wiring -----------------------------------------------------------------------------
    def _build_map(self) -> None:
        st = self.viewer.state
        rep = self._client.replica
        out: dict[str, np.ndarray] = {}
        missing = 0
        for a in self._hello["attributes"]:
            pi = st.prim_index.get(a["prim"])
            name = a["attribute"]
            r = st.row(pi, name) if pi is not None else None
            if r is None:
                missing += 1
                continue
            lay = rep.layout.get(name)
            if lay is None:
                continue
            if name not in out:
                out[name] = np.full(lay.length, -1, dtype=np.int64)
            out[name][int(a["index"]) - lay.offset] = r
        if missing:
            log.info("viewer: %d remote entries are not in the local scene", missing)
        self._map = out

    def _on_state(self, kind: str, client: Any) -> None:
        if kind == "closed":
            self.status = f"disconnected ({client.closed_code})"
            return
        if kind == "alarm":
            self._take_alarms(client)
            return
        if kind not in ("binary", "snapshot", "delta", "values") or not self._map:
            return
        rep = client.replica
        changes = {}
        for name, rows in rep.take_dirty().items():  # the replica's dirty rows: exactly what changed since the last update
            local = self._map.get(name)
            if local is None:
                continue
            lr = local[rows]
            ok = lr >= 0
            if ok.any():
                changes[name] = Change.make(lr[ok], rep.values[name][rows[ok]], rep.quality[name][rows[ok]])
        self.viewer.state.apply(Frame.make(rep.tick, rep.sim_time, rep.wall_time, changes))
        self.status = f"seq {client.seq}"
        self._ready.set()

    def _take_alarms(self, client: Any) -> None:
        new = client.alarms[self._alarms_seen:]
        self._alarms_seen = len(client.alarms)
        for a in new:
            try:
                level = (2 if a.get("severity") == "critical" else 1) if a.get("active") else 0
                self.viewer.set_alarm(a["prim"], level, a.get("message", ""))
            except (KeyError, ValueError):
                pass

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
            log.warning("viewer: bridge client stopped: %s", self.error)
        finally:
            self._hello_event.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        c = self._client
        try:
            self._hello = await c.connect()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            self._hello_event.set()
            return
        self._hello_event.set()
        # wait until the viewer mapped the attributes (the scene is loaded on the caller's thread)
        while not self._go.is_set():
            await asyncio.sleep(0.01)
        c.on_state.append(self._on_state)
        await c.subscribe(prefixes=list(self._prefixes), encoding="binary", max_rate=self._max_rate)
        self._on_state("snapshot", c)
        self.status = "live"
        await self._stop.wait()
        await c.close()

    def poll(self) -> None:
        """Called by the viewer before drawing (nothing to do: updates arrive on the client thread)."""

    def wait_for_tick(self, tick: int, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.viewer.state is not None and self.viewer.state.tick >= tick:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(5)
