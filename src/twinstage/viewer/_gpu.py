"""The GPU side of a scene: its batches and the shared buffers a Frame updates in place.

Imports pygfx: only the viewer's lazy entry points import this module. The material and
shader are in :mod:`._shader`; ray picking in :mod:`._pick`.

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

import numpy as np
import pygfx as gfx

from ..geometry import MeshData, SceneGeometry, linear_to_srgb, merge
from ._pick import first_hit, ray_meshes
from ._shader import TwinMaterial, TwinMesh, mesh_geometry


def _tile(mesh: MeshData, n: int) -> MeshData:
    """``n`` copies of a mesh in one (prototype space; each copy is placed by its node)."""
    v = mesh.n_vertices
    tris = (mesh.triangles[None] + (np.arange(n) * v)[:, None, None]).reshape(-1, 3)
    alpha = None if mesh.alpha is None else np.tile(mesh.alpha, n)
    return MeshData(np.tile(mesh.positions, (n, 1)), np.tile(mesh.normals, (n, 1)), np.tile(mesh.colors, (n, 1)), tris, alpha,
                    mesh.double_sided, mesh.pbr)


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
            ob = TwinMesh(mesh_geometry(proto.mesh), mat, objects=self.objects, nodes=self.nodes, instances=n,
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
        ob = TwinMesh(mesh_geometry(mesh, node=node), mat, objects=self.objects, nodes=self.nodes, instances=0, cull=cull)
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

    def set_selected(self, old: int | None, new: int | None) -> None:
        """Move the selection flag from object ``old`` to ``new`` (either may be None)."""
        if old is not None:
            self.set_state(np.array([old]), selected=0.0)
        if new is not None:
            self.set_state(np.array([new]), selected=1.0)

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
        self._outline = TwinMesh(mesh_geometry(merge(meshes), node=np.concatenate(nodes)), self._outline_material,
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
        return first_hit(self.object_bounds(), origin, direction, self._ray_object)

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
        obj_m = self.object_matrix[o].copy()
        obj_m[3, :3] -= self.origin
        return ray_meshes(self._object_meshes(o), obj_m, origin, direction)


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


__all__ = ["GpuScene", "card_objects"]
