"""The ``serve`` phase of ``bench/scale.py``: the live twin served to one bridge client.

A :class:`twinstage.bridge.Server` is added to the open twin on 127.0.0.1 (an ephemeral
port; its start builds the hello: attribute table, assets; the scene's GLB, which a
server builds at start too, is left to :func:`glb_phase`, run last, so that a GLB too
big for the machine breaks after every other figure is in). One
:class:`twinstage.bridge.Client` (compact hello, binary state) connects from a thread of
its own and subscribes to everything (the rows hello, which it does not ask for, is never built), while the twin keeps ticking at its rate (60 Hz,
or as fast as it can when a tick takes longer), until the client has received
``messages`` state messages after its snapshot (or ``timeout_s`` passed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from _scale_guard import Guard, status_mb


def serve_phase(g: Guard, twin: Any, messages: int, timeout_s: float = 1800.0) -> None:
    from twinstage.bridge import Client, Server

    out = g.result
    g.phase("serve: start (hello)")
    t0 = time.perf_counter()
    server = Server(port=0)
    server.scene_glb = False  # built in glb_phase
    twin.add_sink(server)
    out["serve_start_s"] = time.perf_counter() - t0
    hb = server.hello_builder
    out["serve_hello_bytes"] = hb.compact_bytes
    out["serve_hello_rows_floor_bytes"] = hb.rows_floor()  # rows are built only for a client that gets them (none here)
    out["serve_rss_started_mb"] = status_mb()["VmRSS"]
    g.phase("serve: client")
    info: dict[str, Any] = {}
    done = threading.Event()

    async def client() -> None:
        c = Client(server.url, hello="compact", open_timeout=timeout_s, max_size=None)
        t = time.perf_counter()
        await c.connect()
        info["hello_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await c.subscribe(encoding="binary", timeout=timeout_s)
        info["snapshot_s"] = time.perf_counter() - t
        count = [0]

        def on_state(kind: str, cl: Any) -> None:
            if kind == "binary":
                count[0] += 1

        c.on_state.append(on_state)
        t = time.perf_counter()
        while count[0] < messages and c.closed_code is None and time.perf_counter() - t < timeout_s:
            await asyncio.sleep(0.005)
        info["msgs"], info["msgs_s"], info["merged"], info["closed_code"] = count[0], time.perf_counter() - t, c.merged, c.closed_code
        await c.close()

    def run() -> None:
        try:
            asyncio.run(client())
        except Exception as exc:  # reported, not raised: the phase's figures say what happened
            info["error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            done.set()

    th = threading.Thread(target=run, name="scale-client", daemon=True)
    t0 = time.perf_counter()
    th.start()
    period, ticks, next_at = 1.0 / 60.0, 0, time.perf_counter()
    while not done.is_set() and time.perf_counter() - t0 < timeout_s:
        twin.tick()
        ticks += 1
        next_at += period
        pause = next_at - time.perf_counter()
        if pause > 0:
            done.wait(pause)
        else:
            next_at = time.perf_counter()
    wall = time.perf_counter() - t0
    th.join(30)
    out["serve_hello_s"] = info.get("hello_s")
    out["serve_snapshot_s"] = info.get("snapshot_s")
    out["serve_msgs"] = info.get("msgs", 0)
    out["serve_msgs_per_s"] = info["msgs"] / info["msgs_s"] if info.get("msgs_s") else None
    out["serve_merged"] = info.get("merged")
    out["serve_ticks"] = ticks
    out["serve_ticks_per_s"] = ticks / wall if wall else None
    out["serve_s"] = wall
    if "error" in info:
        out["serve_error"] = info["error"]
    out["serve_rss_mb"] = status_mb()["VmRSS"]
    out["serve_rows_builds"] = hb.rows_builds
    out["serve_aborted"] = server.stats().get("aborted", 0)  # clients the send watchdog dropped (they see 1006)
    g.phase("serve: stop")
    t = time.perf_counter()
    twin.remove_sink(server)
    out["serve_stop_s"] = time.perf_counter() - t


def glb_phase(g: Guard, stage: Any) -> None:
    """The scene's GLB as the bridge builds it (``SceneGlb``: ``export.glb_bytes`` of the stage); a scene over the
    bridge's default ``glb_max_prims`` gets none from ``serve``, so none is built here either (``serve_glb`` says so)."""
    from twinstage.bridge._scene_glb import GLB_MAX_PRIMS, SceneGlb

    out = g.result
    if out.get("assets", 0) > GLB_MAX_PRIMS:
        out["serve_glb"] = f"not built: {out['assets']} twin prims > glb_max_prims {GLB_MAX_PRIMS} (clients draw boxes)"
        return
    g.phase("serve: GLB")
    r0 = status_mb()["VmRSS"]
    glb = SceneGlb(stage)
    out["serve_glb_s"] = glb.seconds
    out["serve_glb_bytes"] = len(glb.data)
    out["serve_glb_rss_mb"] = status_mb()["VmRSS"]
    out["serve_glb_rss_delta_mb"] = out["serve_glb_rss_mb"] - r0
