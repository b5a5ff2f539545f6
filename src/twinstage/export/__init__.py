"""Export the twin to other engines and import meshes into it.

* :func:`export_usd` — flattened (or layered) ``.usda``/``.usdc``/``.usdz`` of a scene, a
  running twin's stage or a recording (per-prim animation), passing NVIDIA's asset
  validator and OpenUSD's ``UsdValidation``;
* :func:`to_glb` — GLB with explicit meshes in Y-up metres, twin ids and attributes in node
  ``extras`` and optional animation baked from a recording; returns bytes when no path is
  given, so a server can send it as is;
* :func:`import_mesh` — glTF/GLB/OBJ/STL/PLY (trimesh) → ``UsdGeom.Mesh`` asset files
  referenced into a scene.

Command line: ``twinstage export`` and ``twinstage import`` (docs/export.md). Importing this
package is cheap: trimesh loads only when a mesh is imported.
"""

from __future__ import annotations

from twinstage._lazy import lazy_names

_LAZY = {
    "ExportError": ("twinstage.export._common", "ExportError"),
    "UsdExport": ("twinstage.export._usd", "UsdExport"),
    "export_usd": ("twinstage.export._usd", "export_usd"),
    "to_glb": ("twinstage.export._glb", "to_glb"),
    "import_mesh": ("twinstage.export._import", "import_mesh"),
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
