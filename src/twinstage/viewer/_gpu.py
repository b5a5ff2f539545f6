"""The GPU side: our pygfx material/shader and the buffers a Frame updates in place.

Imports pygfx and wgpu: only the viewer's lazy entry points import this module.

Layout (see ``shaders/twin_mesh.wgsl``):

* ``objects`` — 2 vec4 per object (overlay colour + mix, and alarm/quality/selected/hidden);
* ``nodes``   — 4 vec4 per node (a row-vector affine matrix; ``row0.w`` = object index).
  Nodes ``0..n_objects-1`` are the objects themselves (merged geometry is stored in
  its object's frame); further nodes are instances (prototype geometry), each with a
  matrix = its local matrix × its object's matrix.

All batches share these two buffers, so colouring 10k assets writes 10k × 32 bytes
and moving them 10k × 64 bytes, whatever the triangle count; pygfx uploads only the
chunks marked with ``update_indices``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pygfx as gfx
import wgpu
from pygfx.renderers.wgpu import BaseShader, Binding, load_wgsl, register_wgpu_render_function

from ..geometry import MeshData, SceneGeometry, linear_to_srgb, merge

SHADER_DIR = Path(__file__).with_name("shaders")


@functools.lru_cache(maxsize=None)
def shader_source(name: str) -> str:
    """A WGSL file shipped in ``twinstage/viewer/shaders``."""
    return (SHADER_DIR / name).read_text(encoding="utf-8")


class TwinMaterial(gfx.Material):
    """Lighting + overlay effects of twin geometry (the WGSL lives in ``shaders/``)."""

    uniform_type = dict(
        gfx.Material.uniform_type,
        warn_color="4xf4",
        alarm_color="4xf4",
        select_color="4xf4",
        up="4xf4",
        sky="3xf4",
        time="f4",
        ground="3xf4",
        pulse_hz="f4",
        key="f4",
        lighting="f4",
        hatch_px="f4",
        outline_px="f4",
        node_offset="i4",
    )

    def __init__(self, *, node_offset: int = 0, up=(0.0, 0.0, 1.0), lighting: bool = True, blend: bool = False, **kwargs):
        super().__init__(alpha_mode="blend" if blend else "solid", **kwargs)
        u = self.uniform_buffer.data
        u["warn_color"] = (1.0, 0.55, 0.0, 1.0)
        u["alarm_color"] = (1.0, 0.03, 0.02, 1.0)
        u["select_color"] = (0.0, 0.85, 1.0, 1.0)
        u["up"] = (*up, 0.0)
        u["sky"] = (0.50, 0.52, 0.56)
        u["ground"] = (0.22, 0.21, 0.20)
        u["key"] = 0.50
        u["pulse_hz"] = 1.5
        u["hatch_px"] = 8.0
        u["outline_px"] = 3.0
        u["lighting"] = 1.0 if lighting else 0.0
        u["time"] = 0.0
        u["node_offset"] = int(node_offset)
        self.uniform_buffer.update_full()

    def set(self, **values) -> None:
        u = self.uniform_buffer.data
        for k, v in values.items():
            u[k] = v
        self.uniform_buffer.update_full()


class TwinMesh(gfx.WorldObject):
    """A batch of twin geometry: merged (per-vertex node) or instanced (per-instance node)."""

    def __init__(self, geometry: gfx.Geometry, material: TwinMaterial, *, objects: gfx.Buffer, nodes: gfx.Buffer,
                 instances: int = 0, outline: bool = False, cull: bool = False):
        super().__init__(geometry, material)
        self.cull = bool(cull)  # back faces culled (single-sided USD geometry: doubleSided = false)
        self.objects_buffer = objects
        self.nodes_buffer = nodes
        self.instances = int(instances)  # 0 = merged batch
        self.outline = bool(outline)  # the hull pass drawn around alarmed and selected assets


@register_wgpu_render_function(TwinMesh, TwinMaterial)
class TwinShader(BaseShader):
    type = "render"

    def __init__(self, wobject):
        super().__init__(wobject)
        self["instanced"] = wobject.instances > 0
        self["outline"] = wobject.outline

    def get_bindings(self, wobject, shared, scene):
        g = wobject.geometry
        ro = "buffer/read_only_storage"
        bindings = [
            Binding("u_stdinfo", "buffer/uniform", shared.uniform_buffer),
            Binding("u_wobject", "buffer/uniform", wobject.uniform_buffer),
            Binding("u_material", "buffer/uniform", wobject.material.uniform_buffer),
            Binding("s_indices", ro, g.indices, "VERTEX"),
            Binding("s_positions", ro, g.positions, "VERTEX"),
            Binding("s_normals", ro, g.normals, "VERTEX"),
            Binding("s_colors", ro, g.rgba8, "VERTEX"),
            Binding("s_nodes", ro, wobject.nodes_buffer, "VERTEX"),
            Binding("s_objects", ro, wobject.objects_buffer, "VERTEX"),
        ]
        if not self["instanced"]:
            bindings.append(Binding("s_node", ro, g.node, "VERTEX"))
        bindings = dict(enumerate(bindings))
        self.define_bindings(0, bindings)
        return {0: bindings}

    def get_pipeline_info(self, wobject, shared):
        cull = wgpu.CullMode.back if wobject.cull and not wobject.outline else wgpu.CullMode.none
        return {"primitive_topology": wgpu.PrimitiveTopology.triangle_list, "cull_mode": cull}

    def get_render_info(self, wobject, shared):
        n = wobject.geometry.indices.nitems * 3
        return {"indices": (n, max(1, wobject.instances))}

    def get_code(self):
        return shader_source("twin_mesh.wgsl").replace("//@twin_fx@", shader_source("twin_fx.wgsl"))


def _tile(mesh: MeshData, n: int) -> MeshData:
    """``n`` copies of a mesh in one (prototype space; each copy is placed by its node)."""
    v = mesh.n_vertices
    tris = (mesh.triangles[None] + (np.arange(n) * v)[:, None, None]).reshape(-1, 3)
    alpha = None if mesh.alpha is None else np.tile(mesh.alpha, n)
    return MeshData(np.tile(mesh.positions, (n, 1)), np.tile(mesh.normals, (n, 1)), np.tile(mesh.colors, (n, 1)), tris, alpha,
                    mesh.double_sided, mesh.pbr)


def pack_colors(linear_rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB floats (+ opacity) → sRGB-encoded RGBA8 packed in uint32 (decoded in the shader)."""
    srgb = linear_to_srgb(linear_rgb)
    b = np.empty((len(srgb), 4), np.uint8)
    b[:, :3] = np.round(srgb * 255.0).astype(np.uint8)
    b[:, 3] = 255 if alpha is None else np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    return b.view(np.uint32).reshape(-1)


def _geometry(mesh: MeshData, origin_shift: np.ndarray | None = None, node: np.ndarray | None = None) -> gfx.Geometry:
    pos = mesh.positions if origin_shift is None else mesh.positions - origin_shift
    kw = dict(
        indices=np.ascontiguousarray(mesh.triangles, dtype=np.int32),
        positions=np.ascontiguousarray(pos, dtype=np.float32),
        normals=np.ascontiguousarray(mesh.normals, dtype=np.float32),
        rgba8=pack_colors(mesh.colors, mesh.alpha),
    )
    if node is not None:
        kw["node"] = np.ascontiguousarray(node, dtype=np.int32)
    return gfx.Geometry(**kw)


class GpuScene:
    """Batches and shared buffers for one :class:`SceneGeometry`.

    World coordinates on the GPU are shifted by ``origin`` (the scene centre, in
    float64) so that float32 keeps its precision for scenes far from the origin.
    """

    def __init__(self, geo: SceneGeometry, *, lighting: bool = True, merge_limit: int = 4_000_000, expand_limit: int = 2_000_000):
        self.geo = geo
        n_obj = len(geo.objects)
        self.n_objects = n_obj
        wb = geo.world_bounds()
        self.origin = np.zeros(3) if wb is None else (wb[0] + wb[1]) / 2.0
        self.up = (0.0, 0.0, 1.0) if geo.up_axis == "Z" else (0.0, 1.0, 0.0)

        # object matrices (float64, USD row-vector), node tables
        self.object_matrix = np.stack([o.matrix for o in geo.objects]) if n_obj else np.zeros((0, 4, 4))
        inst_obj, inst_local, self._proto_ranges = [], [], []
        single_parts = []
        base = n_obj
        protos = []
        for proto in geo.prototypes:
            if len(proto.objects) == 1:  # not worth a draw call of its own: merge it
                single_parts.append((proto.objects[0], proto.mesh.transformed(proto.locals[0])))
                continue
            protos.append(proto)
            self._proto_ranges.append((base, len(proto.objects)))
            inst_obj.extend(proto.objects)
            inst_local.extend(proto.locals)
            base += len(proto.objects)
        self.n_nodes = base
        self.inst_object = np.asarray(inst_obj, dtype=np.int64)
        self.inst_local = np.stack(inst_local) if inst_local else np.zeros((0, 4, 4))
        self.inst_identity = np.all(np.abs(self.inst_local - np.eye(4)) < 1e-12, axis=(1, 2)) if inst_local else np.zeros(0, bool)
        # object → its instance nodes (CSR), for transform updates
        order = np.argsort(self.inst_object, kind="stable")
        self._inst_sorted = order + n_obj
        self._inst_start = np.searchsorted(self.inst_object[order], np.arange(n_obj + 1))

        # objects whose own node is read by a merged batch (instanced-only objects skip those writes)
        self.has_parts = np.zeros(n_obj, bool)
        for p in geo.parts:
            self.has_parts[p.object] = True
        for o, _ in single_parts:
            self.has_parts[o] = True
        self.objects = gfx.Buffer(np.zeros((max(n_obj, 1) * 2, 4), np.float32))
        self.nodes = gfx.Buffer(np.zeros((max(self.n_nodes, 1) * 4, 4), np.float32))
        self._write_nodes(np.arange(n_obj), self.object_matrix, all_nodes=True)

        self.group = gfx.Group()
        self.batches: list[TwinMesh] = []
        self.materials: list[TwinMaterial] = []
        self.expand_limit = expand_limit
        # pieces of merged batches: (mesh, node index per vertex)
        pieces: list[tuple[MeshData, np.ndarray | int]] = [(p.mesh, p.object) for p in geo.parts] + [(m, o) for o, m in single_parts]
        instanced = []
        for proto, (start, n) in zip(protos, self._proto_ranges):
            if not proto.mesh.n_triangles:
                continue
            if proto.mesh.n_vertices * n <= expand_limit:
                # Expanded into the merged mesh: one big draw instead of n tiny instances (software
                # rasterisers and many GPUs prefer that); still one node record per instance, so a
                # Frame that moves or recolours assets never touches vertex data.
                pieces.append((_tile(proto.mesh, n), np.repeat(np.arange(start, start + n, dtype=np.int32), proto.mesh.n_vertices)))
            else:
                instanced.append((proto, start, n))
        # every object's pieces with the node that places them (the outline pass draws these)
        self._pieces_by_object: dict[int, list[tuple[MeshData, int]]] = {}
        for p in geo.parts:
            self._pieces_by_object.setdefault(p.object, []).append((p.mesh, p.object))
        for o, m in single_parts:
            self._pieces_by_object.setdefault(o, []).append((m, o))
        for proto, (start, n) in zip(protos, self._proto_ranges):
            for k, o in enumerate(proto.objects):
                self._pieces_by_object.setdefault(o, []).append((proto.mesh, start + k))
        self._outlined: frozenset[int] = frozenset()
        self._outline: TwinMesh | None = None
        self._outline_material = TwinMaterial(node_offset=0, up=self.up, lighting=False)
        # merged batches, one set per style (culled or not, opaque or blended), each under merge_limit vertices;
        # geometry placed by a mirroring node is drawn unculled (its winding flips on the GPU)
        mirrored = np.linalg.det(self.object_matrix[:, :3, :3]) < 0 if n_obj else np.zeros(0, bool)
        styles: dict[tuple[bool, bool], list[tuple[MeshData, np.ndarray | int]]] = {}
        for m, node in pieces:
            two_sided = m.double_sided or (np.isscalar(node) and node < n_obj and bool(mirrored[node]))
            styles.setdefault((two_sided, m.translucent), []).append((m, node))
        for (two_sided, blend), group in sorted(styles.items()):
            chunk: list[tuple[MeshData, np.ndarray | int]] = []
            count = 0
            for m, node in group:
                if count + m.n_vertices > merge_limit and chunk:
                    self._add_merged(chunk, lighting, cull=not two_sided, blend=blend)
                    chunk, count = [], 0
                chunk.append((m, node))
                count += m.n_vertices
            if chunk:
                self._add_merged(chunk, lighting, cull=not two_sided, blend=blend)
        for proto, start, n in instanced:  # GPU instancing for prototypes too big to expand
            mat = TwinMaterial(node_offset=start, up=self.up, lighting=lighting, blend=proto.mesh.translucent)
            ob = TwinMesh(_geometry(proto.mesh), mat, objects=self.objects, nodes=self.nodes, instances=n,
                          cull=not proto.mesh.double_sided and not bool(mirrored[proto.objects].any()))
            self._add(ob, mat)

    def _add(self, ob: TwinMesh, mat: TwinMaterial) -> None:
        self.batches.append(ob)
        self.materials.append(mat)
        self.group.add(ob)

    def _add_merged(self, chunk: list[tuple[MeshData, np.ndarray | int]], lighting: bool, *, cull: bool = False,
                    blend: bool = False) -> None:
        chunk = [(m, node) for m, node in chunk if m.n_triangles]
        if not chunk:
            return
        mesh = merge([m for m, _ in chunk])
        node = np.concatenate([np.full(m.n_vertices, node, np.int32) if np.isscalar(node) else np.asarray(node, np.int32)
                               for m, node in chunk])
        mat = TwinMaterial(node_offset=0, up=self.up, lighting=lighting, blend=blend)
        ob = TwinMesh(_geometry(mesh, node=node), mat, objects=self.objects, nodes=self.nodes, instances=0, cull=cull)
        self._add(ob, mat)

    # -- node matrices ------------------------------------------------------------
    def _pack(self, mats: np.ndarray, objs: np.ndarray) -> np.ndarray:
        m = np.array(mats, dtype=np.float64, copy=True)
        m[:, 3, :3] -= self.origin
        m[:, 0, 3] = objs
        m[:, 1:3, 3] = 0.0
        m[:, 3, 3] = 1.0
        return m.astype(np.float32)

    def _write_nodes(self, objs: np.ndarray, mats: np.ndarray, all_nodes: bool = False) -> None:
        """Set object matrices (float64 row-vector) and refresh the objects' instance nodes."""
        data = self.nodes.data.reshape(-1, 4, 4)
        own, own_mats = objs, mats
        if len(objs) and not all_nodes:
            keep = self.has_parts[objs]  # an object's own node only matters to merged geometry
            own, own_mats = objs[keep], mats[keep]
        if len(own):
            data[own] = self._pack(own_mats, own)
        if all_nodes:
            if len(self.inst_object):
                world = self.inst_local @ self.object_matrix[self.inst_object]
                data[self.n_objects:self.n_nodes] = self._pack(world, self.inst_object)
            self.nodes.update_full()
            return
        nodes = [own]
        if len(self.inst_object) and len(objs):
            starts, ends = self._inst_start[objs], self._inst_start[objs + 1]
            counts = ends - starts
            if counts.sum():
                sel = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
                inodes = self._inst_sorted[sel]
                k = inodes - self.n_objects
                world = self.object_matrix[self.inst_object[k]]
                rel = ~self.inst_identity[k]  # an instance that is its asset's own prim needs no product
                if rel.any():
                    world[rel] = self.inst_local[k[rel]] @ world[rel]
                data[inodes] = self._pack(world, self.inst_object[k])
                nodes.append(inodes)
        idx = np.concatenate(nodes)
        if len(idx):
            self.nodes.update_indices((idx[:, None] * 4 + np.arange(4)).ravel())

    def set_matrices(self, objs: np.ndarray, mats: np.ndarray) -> None:
        objs = np.asarray(objs, dtype=np.int64)
        self.object_matrix[objs] = mats
        self._write_nodes(objs, mats)
        self._ob_cache = None

    # -- object records -----------------------------------------------------------------
    def set_overlay(self, objs: np.ndarray, rgb_linear: np.ndarray, mix: np.ndarray | float) -> None:
        d = self.objects.data.reshape(-1, 2, 4)
        d[objs, 0, :3] = rgb_linear
        d[objs, 0, 3] = mix
        self.objects.update_indices(np.asarray(objs) * 2)

    def set_state(self, objs: np.ndarray, *, alarm=None, quality=None, selected=None, hidden=None) -> None:
        d = self.objects.data.reshape(-1, 2, 4)
        for k, v in enumerate((alarm, quality, selected, hidden)):
            if v is not None:
                d[objs, 1, k] = v
        self.objects.update_indices(np.asarray(objs) * 2 + 1)

    def state(self) -> np.ndarray:
        return self.objects.data.reshape(-1, 2, 4)[: self.n_objects, 1]

    def set_time(self, t: float) -> None:
        for m in [*self.materials, self._outline_material]:
            m.uniform_buffer.data["time"] = t
            m.uniform_buffer.update_full()

    def set_outlined(self, objs, *, max_vertices: int = 2_000_000) -> None:
        """Draw the outline hull around these objects (alarmed and selected ones); rebuilt only when the set changes."""
        key = frozenset(int(o) for o in objs)
        if key == self._outlined:
            return
        self._outlined = key
        if self._outline is not None:
            self.group.remove(self._outline)
            self._outline = None
        meshes, nodes, count = [], [], 0
        for o in sorted(key):
            for mesh, node in self._pieces_by_object.get(o, []):
                if count + mesh.n_vertices > max_vertices:
                    break
                meshes.append(mesh)
                nodes.append(np.full(mesh.n_vertices, node, np.int32))
                count += mesh.n_vertices
        if not meshes:
            return
        self._outline = TwinMesh(_geometry(merge(meshes), node=np.concatenate(nodes)), self._outline_material,
                                 objects=self.objects, nodes=self.nodes, outline=True)
        self.group.add(self._outline)

    def set_uniform(self, **values) -> None:
        for m in self.materials:
            m.set(**values)

    # -- geometry queries (CPU) -------------------------------------------------------------
    def world_bounds(self) -> np.ndarray | None:
        """Current world AABB in GPU (origin-shifted) coordinates."""
        b = self.object_bounds()
        ok = np.isfinite(b[:, 0, 0])
        if not ok.any():
            return None
        return np.stack([b[ok, 0].min(axis=0), b[ok, 1].max(axis=0)])

    def object_bounds(self) -> np.ndarray:
        """(n_objects, 2, 3) world AABBs of the objects in GPU coordinates (NaN without geometry)."""
        if getattr(self, "_ob_cache", None) is not None:
            return self._ob_cache
        if not hasattr(self, "_local_bounds"):
            self._local_bounds = self.geo.local_bounds()
        lb = self._local_bounds
        out = np.full_like(lb, np.nan)
        ok = np.isfinite(lb[:, 0, 0])
        if not ok.any():
            return out
        lo, hi = lb[ok, 0], lb[ok, 1]
        mats = self.object_matrix[ok]
        corners = np.stack([np.stack([np.where(bits[0], hi[:, 0], lo[:, 0]), np.where(bits[1], hi[:, 1], lo[:, 1]),
                                      np.where(bits[2], hi[:, 2], lo[:, 2])], axis=1) for bits in np.ndindex(2, 2, 2)], axis=1)
        w = np.einsum("nkj,nji->nki", np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=2), mats)[..., :3]
        w -= self.origin
        out[ok, 0] = w.min(axis=1)
        out[ok, 1] = w.max(axis=1)
        self._ob_cache = out
        return out

    def pick(self, origin: np.ndarray, direction: np.ndarray) -> tuple[int, float] | None:
        """First object hit by a ray (GPU coordinates): ``(object, distance)`` or None.

        Ray vs object boxes first, then ray vs the triangles of the nearest few candidates.
        """
        b = self.object_bounds()
        ok = np.isfinite(b[:, 0, 0])
        if not ok.any():
            return None
        d = np.where(np.abs(direction) < 1e-12, 1e-12, direction)
        t1 = (b[:, 0] - origin) / d
        t2 = (b[:, 1] - origin) / d
        tmin = np.nanmax(np.minimum(t1, t2), axis=1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = ok & (tmax >= np.maximum(tmin, 0.0))
        cands = np.flatnonzero(hit)
        if not len(cands):
            return None
        cands = cands[np.argsort(np.maximum(tmin[cands], 0.0))][:24]
        best = None
        for o in cands.tolist():
            if best is not None and tmin[o] > best[1]:
                break
            t = self._ray_object(o, origin, direction)
            if t is not None and (best is None or t < best[1]):
                best = (o, t)
        return best

    def _object_meshes(self, o: int):
        if not hasattr(self, "_by_object"):
            by: dict[int, list] = {}
            for p in self.geo.parts:
                by.setdefault(p.object, []).append((p.mesh, np.eye(4)))
            for proto in self.geo.prototypes:
                for ob, local in zip(proto.objects, proto.locals):
                    by.setdefault(ob, []).append((proto.mesh, local))
            self._by_object = by
        return self._by_object.get(o, [])

    def _ray_object(self, o: int, origin: np.ndarray, direction: np.ndarray) -> float | None:
        best = None
        obj_m = self.object_matrix[o].copy()
        obj_m[3, :3] -= self.origin
        for mesh, local in self._object_meshes(o):
            m = local @ obj_m
            try:
                inv = np.linalg.inv(m)
            except np.linalg.LinAlgError:
                continue
            lo = np.r_[origin, 1.0] @ inv
            ld = np.r_[direction, 0.0] @ inv
            t = ray_triangles(lo[:3], ld[:3], mesh.positions, mesh.triangles)
            if t is not None and (best is None or t < best):
                best = t
        return best


def ray_triangles(o: np.ndarray, d: np.ndarray, pos: np.ndarray, tris: np.ndarray) -> float | None:
    """Nearest positive hit parameter of a ray against triangles (Möller–Trumbore, vectorised)."""
    if not len(tris):
        return None
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-18
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = o - a
    u = np.einsum("ij,ij->i", s, p) * inv
    q = np.cross(s, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
    if not hit.any():
        return None
    return float(t[hit].min())


def card_objects(geo: SceneGeometry, origin: np.ndarray) -> list[gfx.WorldObject]:
    """Textured quads for models drawn with ``model:drawMode = cards`` (static pygfx meshes)."""
    from ..geometry import decode_image, read_asset_bytes

    out = []
    cache: dict[str, np.ndarray | None] = {}
    for card in geo.cards:
        m = geo.objects[card.object].matrix
        corners = np.c_[card.corners, np.ones(4)] @ m
        pos = (corners[:, :3] - origin).astype(np.float32)
        g = gfx.Geometry(indices=np.array([[0, 1, 2], [0, 2, 3]], np.int32), positions=pos,
                         texcoords=np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32))
        img = None
        if card.image:
            if card.image not in cache:
                try:
                    data = read_asset_bytes(card.image)
                    cache[card.image] = decode_image(data, 512) if data else None
                except Exception:
                    cache[card.image] = None
            img = cache[card.image]
        if img is not None:
            if img.shape[2] == 3:
                img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
            tex = gfx.Texture(np.ascontiguousarray(img), dim=2)
            mat = gfx.MeshBasicMaterial(map=tex, side="front", alpha_mode="blend" if (img[..., 3] < 255).any() else "solid")
        else:
            srgb = linear_to_srgb(np.asarray(card.color))
            mat = gfx.MeshBasicMaterial(color=(*srgb.tolist(), 1.0), side="front")
        out.append(gfx.Mesh(g, mat))
    return out


__all__ = ["GpuScene", "TwinMaterial", "TwinMesh", "card_objects", "load_wgsl", "pack_colors", "shader_source"]
