"""USD → triangle meshes, GPU-free: one implementation for the viewer, the exporters and the bridge.

``extract(stage)`` walks a stage once and returns a :class:`SceneGeometry`: objects (twin
assets first, then scenery) with world matrices, parts (merged per object), prototypes
(instanced geometry) and draw-mode cards, each as :class:`MeshData` (positions, normals,
linear colours, optional opacity, sidedness). ``object_meshes(geo)`` flattens it to one
mesh per object in world space. Nothing here imports pygfx or wgpu.
"""

from ._extract import extract, stage_time
from ._materials import decode_image, linear_to_srgb, read_asset_bytes, srgb_to_linear
from ._mesh import MeshData, empty_mesh, merge, style_key
from ._scene import Card, Part, Prototype, SceneGeometry, SceneObject
from ._world import axis_conversion, object_meshes

__all__ = [
    "Card",
    "MeshData",
    "Part",
    "Prototype",
    "SceneGeometry",
    "SceneObject",
    "axis_conversion",
    "decode_image",
    "empty_mesh",
    "extract",
    "linear_to_srgb",
    "merge",
    "object_meshes",
    "read_asset_bytes",
    "srgb_to_linear",
    "stage_time",
    "style_key",
]
