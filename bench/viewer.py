"""Viewer frame time: one object per asset vs a static merged mesh vs the viewer's in-place updates.

For N assets (boxes of 12 triangles on a grid), offscreen at 640×480 with pixel_ratio 1 and
no post-AA (software rendering on lavapipe here), three ways to draw the *same triangles*
from the *same camera*, timed interleaved in one run:

* ``naive`` — one ``gfx.Mesh`` per asset (shared geometry, own Phong material); every
  frame sets each asset's colour and position from Python, then renders;
* ``floor`` — one static merged ``gfx.Mesh`` with vertex colours (Phong), no updates:
  the cost of the triangles themselves;
* ``ours``  — :class:`twinstage.viewer.Viewer` fed one Frame per frame in which *every*
  asset's ``temperature`` (coloured through viridis) and ``position`` (driving
  ``xformOp:translate``) changed: ``consume`` + ``sync`` (the update: state mirror,
  overlay colours, alarm levels, transforms, GPU record writes) + render (uploads the
  touched records and draws one instanced batch). HUD off (the others draw none).

Each timed frame ends with the image read back (``canvas.draw()``), so GPU work is
included. ``ours static`` (the viewer drawing with nothing changed) is reported too, to
separate our shader's cost from the update's. Targets at the largest size (10k; 2k with
``--quick``, which must stay under a minute): ours ≥ 5× faster than naive, ours ≤ 1.25×
the floor, and the update < 10 % of our frame.

    python bench/viewer.py [--quick] [--json]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("WGPU_BACKEND_TYPE", "Vulkan")

import numpy as np
from _common import Report, interleaved, log, parse_args

SIZE = (640, 480)


def build_stage(n: int):
    """N instanceable box assets on a grid (Sdf authoring: seconds for 10k)."""
    from pxr import Gf, Sdf, Usd, Vt

    from twinstage.scenes import box
    from twinstage.usd import create_stage

    tmp = create_stage(None, root="World")
    proto = tmp.DefinePrim("/World/Proto", "Scope")
    proto.SetSpecifier(Sdf.SpecifierClass)
    tmp.DefinePrim("/World/Proto/Box", "Xform")
    box(tmp, "/World/Proto/Box/Geom", (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), center=(0, 0, 0.5))
    layer = Sdf.Layer.CreateAnonymous("bench-viewer.usda")
    layer.TransferContent(tmp.GetRootLayer())
    cols = int(np.ceil(np.sqrt(n)))
    paths = [f"/World/A{i:05d}" for i in range(n)]
    ref = Sdf.Reference(primPath="/World/Proto/Box")
    with Sdf.ChangeBlock():
        for i, p in enumerate(paths):
            ps = Sdf.CreatePrimInLayer(layer, p)
            ps.specifier = Sdf.SpecifierDef
            ps.typeName = "Xform"
            ps.referenceList.prependedItems.append(ref)
            ps.instanceable = True
            a = Sdf.AttributeSpec(ps, "xformOp:translate", Sdf.ValueTypeNames.Double3)
            a.default = Gf.Vec3d((i % cols) * 2.0, (i // cols) * 2.0, 0.0)
            o = Sdf.AttributeSpec(ps, "xformOpOrder", Sdf.ValueTypeNames.TokenArray, Sdf.VariabilityUniform)
            o.default = Vt.TokenArray(["xformOp:translate"])
    stage = Usd.Stage.Open(layer)
    return stage, paths, cols


def build(n: int):
    import pygfx as gfx
    from rendercanvas.offscreen import RenderCanvas

    from twinstage.state import Declaration, StateTable
    from twinstage.viewer import Viewer
    from twinstage.viewer._state import TwinState

    stage, paths, cols = build_stage(n)
    base = np.array([[(i % cols) * 2.0, (i // cols) * 2.0, 0.0] for i in range(n)])
    decls = [Declaration(p, "temperature", "float", 20.0, "degC", 0.0, 100.0) for p in paths]
    decls += [Declaration(p, "position", "vec3", tuple(base[i]), "m", role="state", drives="xformOp:translate")
              for i, p in enumerate(paths)]
    table = StateTable(paths, decls)

    # ours
    viewer = Viewer(color_by="temperature", vmin=0.0, vmax=100.0, size=SIZE, quality="fast", labels=False)
    viewer.load(stage, state=TwinState.from_table(table))
    viewer.hud_visible = False
    viewer.screenshot()  # build, compile, first upload (untimed)
    camera = viewer.camera
    gpu = viewer._gpu
    assert len(gpu.batches) == 1, "expected one instanced batch"

    # the same triangles for the baselines: the prototype box at each asset's place
    proto = gpu.geo.prototypes[0].mesh
    lut = viewer.overlays.color_by.lut

    def scene_with_lights():
        s = gfx.Scene()
        s.add(gfx.Background.from_color(*viewer.background))
        s.add(gfx.AmbientLight(intensity=0.6), camera.add(gfx.DirectionalLight(intensity=2.0)) or gfx.Group())
        return s

    def canvas_renderer():
        c = RenderCanvas(size=SIZE, pixel_ratio=1)
        return c, gfx.WgpuRenderer(c, pixel_ratio=1, ppaa="none")

    # naive: one mesh per asset
    geom = gfx.Geometry(indices=proto.triangles.astype(np.int32), positions=proto.positions.astype(np.float32),
                        normals=proto.normals.astype(np.float32))
    naive_scene = scene_with_lights()
    meshes = []
    origin = gpu.origin
    for i in range(n):
        m = gfx.Mesh(geom, gfx.MeshPhongMaterial(color="#888"))
        m.local.position = base[i] - origin
        naive_scene.add(m)
        meshes.append(m)
    canvas_a, rend_a = canvas_renderer()
    canvas_a.request_draw(lambda: rend_a.render(naive_scene, camera))

    # floor: one static merged mesh with vertex colours
    pos = (proto.positions[None, :, :] + (base - origin)[:, None, :]).reshape(-1, 3)
    tris = (proto.triangles[None] + (np.arange(n) * proto.n_vertices)[:, None, None]).reshape(-1, 3)
    colors = np.repeat(np.c_[lut[np.full(n, 51)], np.ones(n)], proto.n_vertices, axis=0)
    merged = gfx.Geometry(indices=tris.astype(np.int32), positions=pos.astype(np.float32),
                          normals=np.tile(proto.normals, (n, 1)).astype(np.float32),
                          colors=colors.astype(np.float32))
    floor_scene = scene_with_lights()
    floor_scene.add(gfx.Mesh(merged, gfx.MeshPhongMaterial(color_mode="vertex")))
    canvas_b, rend_b = canvas_renderer()
    canvas_b.request_draw(lambda: rend_b.render(floor_scene, camera))

    canvas_a.draw()
    canvas_b.draw()
    return table, viewer, meshes, base, origin, lut, canvas_a, canvas_b


def measure(n: int, sizes: list[int], repeats: dict[int, int], args, rep: Report) -> list:
    """One size: build the three, time them interleaved, check the viewer drew the last Frame."""
    from twinstage.viewer import _colormap as cm

    log(args, f"viewer: building {n} assets ...")
    t0 = time.perf_counter()
    table, viewer, meshes, base, origin, lut, canvas_a, canvas_b = build(n)
    log(args, f"viewer: built in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(2)
    st = {"tick": 0, "update": []}

    def before(r):
        table["temperature"][:] = rng.uniform(0.0, 100.0, n)
        table["position"][:] = base + np.c_[np.zeros(n), np.zeros(n), rng.uniform(0.0, 0.5, n)]
        st["tick"] += 1
        st["frame"] = table.diff(st["tick"], st["tick"] * 0.1, 0.0)

    def naive():
        rgb = cm.apply(table["temperature"], lut, 0.0, 100.0)
        pos = table["position"] - origin
        for m, c, p in zip(meshes, rgb.tolist(), pos.tolist(), strict=True):
            m.material.color = c
            m.local.position = p
        canvas_a.draw()

    def floor():
        canvas_b.draw()

    def ours():
        t = time.perf_counter()
        viewer.consume(st["frame"])
        viewer.sync()
        st["update"].append(time.perf_counter() - t)
        viewer.screenshot()

    def ours_static():  # the same renderer with nothing to update: the render cost alone
        viewer.screenshot()

    med = interleaved({"naive": naive, "floor": floor, "ours": ours, "static": ours_static}, repeat=args.repeat or repeats[n],
                      before=before)
    upd = float(np.median(st["update"][1:] if len(st["update"]) > 1 else st["update"]))
    # the viewer drew what the last Frame said (a bench that draws stale colours proves nothing)
    rec = viewer._gpu.objects.data.reshape(-1, 2, 4)[:n, 0, :3]
    want = cm.srgb_lut_to_linear(cm.apply(table["temperature"], lut, 0.0, 100.0))
    assert np.allclose(rec, want, atol=1e-5), "viewer colours are stale"
    mats = viewer._gpu.nodes.data.reshape(-1, 4, 4)
    assert np.allclose(mats[n:2 * n, 3, :3] + origin, table["position"], atol=1e-3), "viewer transforms are stale"
    speed = med["naive"] / med["ours"]
    over = med["ours"] / med["floor"]
    frac = upd / med["ours"]
    k = f"{n // 1000}k" if n >= 1000 else str(n)
    for name in ("naive", "floor", "ours", "static"):
        rep.figure(f"{k}_{name}_ms", med[name] * 1e3)
    rep.figure(f"{k}_update_ms", upd * 1e3)
    rep.figure(f"{k}_naive_over_ours_ratio", speed)
    rep.figure(f"{k}_ours_over_floor_ratio", over)
    rep.figure(f"{k}_update_over_frame_ratio", frac)
    marks = ["-", "-", "-"]
    if n == sizes[-1]:
        marks = [rep.target(f"{k}: naive/ours (ours faster)", f"{k}_naive_over_ours_ratio", speed, 5.0, higher_is_better=True),
                 rep.target(f"{k}: ours/floor", f"{k}_ours_over_floor_ratio", over, 1.25),
                 rep.target(f"{k}: update/frame", f"{k}_update_over_frame_ratio", frac, 0.10)]
    return [n, med["naive"] * 1e3, med["floor"] * 1e3, med["ours"] * 1e3, med["static"] * 1e3, upd * 1e3, speed, marks[0], over,
            marks[1], frac, marks[2]]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    rep = Report("viewer", args)
    sizes = [100, 1_000, 2_000] if args.quick else [100, 1_000, 10_000]
    repeats = {100: 5, 1_000: 3, 2_000: 3} if args.quick else {100: 9, 1_000: 7, 10_000: 7}
    rows = []
    for n in sizes:
        rows.append(measure(n, sizes, repeats, args, rep))
    rep.table(f"Frame time, {SIZE[0]}x{SIZE[1]} offscreen, pixel_ratio 1, no AA (median ms per frame, image read back)",
              ["assets", "naive ms", "floor ms", "ours ms", "ours static ms", "update ms", "naive/ours", ">=5", "ours/floor", "<=1.25",
               "update/frame", "<=0.10"], rows)
    from twinstage.viewer._env import adapter_info

    info = adapter_info()
    rep.figure("adapter", f"{info.get('device', '')} ({info.get('backend_type', '')}, {info.get('adapter_type', '')})")
    rep.note("naive = one gfx.Mesh per asset (colour + position set from Python each frame); floor = one static merged mesh "
             "with vertex colours; ours = Viewer.consume(Frame) + sync() + draw, every asset's colour and transform changed "
             "each frame; ours static = the same viewer drawing with nothing changed; update = consume + sync (CPU side; "
             "uploads happen in the draw). Targets are checked at the largest size (10k; 2k with --quick)")
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
