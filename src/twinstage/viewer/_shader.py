"""Our pygfx material, world object and WGSL render function for twin geometry (the pipeline side).

Imports pygfx and wgpu: only the viewer's lazy entry points import this module. The shader reads
the GPU scene's two shared storage buffers (per-object records and per-node matrices, see
:mod:`._gpu` and ``shaders/twin_mesh.wgsl``) and, per vertex, positions, normals and
sRGB-packed colours (:func:`pack_colors`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pygfx as gfx
import wgpu
from pygfx.renderers.wgpu import BaseShader, Binding, load_wgsl, register_wgpu_render_function

from ..geometry import MeshData, linear_to_srgb

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


def pack_colors(linear_rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB floats (+ opacity) → sRGB-encoded RGBA8 packed in uint32 (decoded in the shader)."""
    srgb = linear_to_srgb(linear_rgb)
    b = np.empty((len(srgb), 4), np.uint8)
    b[:, :3] = np.round(srgb * 255.0).astype(np.uint8)
    b[:, 3] = 255 if alpha is None else np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    return b.view(np.uint32).reshape(-1)


def mesh_geometry(mesh: MeshData, origin_shift: np.ndarray | None = None, node: np.ndarray | None = None) -> gfx.Geometry:
    """A pygfx geometry of a mesh for :class:`TwinShader` (``node``: per-vertex node index of a merged batch)."""
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


__all__ = ["TwinMaterial", "TwinMesh", "TwinShader", "load_wgsl", "mesh_geometry", "pack_colors", "shader_source"]
