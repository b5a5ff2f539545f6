"""Assets of an export: copied beside it (or into the package) under relative paths, and the
``.usdc`` sidecar that keeps a ``.usda`` light."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pxr import Ar, Sdf, UsdUtils

from ._common import ExportError


def _attr_specs(layer: Sdf.Layer):
    stack = list(layer.rootPrims)
    while stack:
        ps = stack.pop()
        stack.extend(ps.nameChildren)
        yield from ps.attributes


def localize_assets(flat: Sdf.Layer, work: Path, sub: str, result, *, drop_unresolved: bool = False) -> None:
    """Copy every asset the layer uses into ``work/sub`` and point at it with ``./sub/…``.

    An asset that does not resolve keeps its (relative) path, or is cleared with ``drop_unresolved``
    (a package cannot hold what is not there; readers then use the shader's fallback)."""
    copied: dict[str, str] = {}
    resolver = Ar.GetResolver()

    def remap(path: str) -> str:
        if not path:
            return path
        if path in copied:
            return copied[path]
        resolved = resolver.Resolve(path)
        data = None
        if resolved:
            try:
                asset = resolver.OpenAsset(resolved)
                buf = asset.GetBuffer() if asset is not None else None
                data = bytes(buf) if buf is not None else None
            except Exception:  # noqa: BLE001 - unreadable is reported below
                data = None
        if data is None:
            if drop_unresolved:
                result.notes.append(f"asset {path!r} does not resolve; left out of the package (the shader's fallback applies)")
                copied[path] = ""
                return ""
            result.notes.append(f"asset {path!r} does not resolve; its path is kept (relative) but nothing was copied")
            new = _relative_text(path)
            copied[path] = new
            return new
        inner = path.rsplit("[", 1)[-1].rstrip("]") if path.endswith("]") else path
        base = os.path.basename(inner.replace("\\", "/")) or "asset"
        stem, ext = os.path.splitext(base)
        digest = hashlib.sha256(path.encode()).hexdigest()[:8]
        name = f"{stem}_{digest}{ext}"
        (work / sub).mkdir(parents=True, exist_ok=True)
        (work / sub / name).write_bytes(data)
        new = f"./{sub}/{name}"
        copied[path] = new
        result.assets.append(new)
        return new

    UsdUtils.ModifyAssetPaths(flat, remap)


#: what NVIDIA's UsdAsciiPerformanceChecker accepts in a .usda layer
ASCII_ARRAY_LIMIT = 64
ASCII_TIME_SAMPLE_LIMIT = 4


def split_heavy(layer: Sdf.Layer, staging: Path, sub: str, stem: str) -> None:
    """Move long arrays and long time-sample series out of a ``.usda`` layer into a ``.usdc`` sidecar.

    The sidecar (``./<stem>_assets/<stem>_data.usdc``, same prim paths, ``over``s) is sublayered by
    the ``.usda``, which stays readable (hierarchy, materials, twin values) and fast to load.
    """
    side = Sdf.Layer.CreateAnonymous(".usdc")
    moved = 0
    for attr in list(_attr_specs(layer)):
        n_samples = layer.GetNumTimeSamplesForPath(attr.path)
        heavy = n_samples > ASCII_TIME_SAMPLE_LIMIT
        if not heavy and attr.typeName.isArray:
            values = [attr.default] if attr.HasDefaultValue() else []
            values += [layer.QueryTimeSample(attr.path, t) for t in layer.ListTimeSamplesForPath(attr.path)]
            heavy = any(v is not None and hasattr(v, "__len__") and len(v) > ASCII_ARRAY_LIMIT for v in values)
        if not heavy:
            continue
        Sdf.CreatePrimInLayer(side, attr.path.GetPrimPath())
        Sdf.CopySpec(layer, attr.path, side, attr.path)
        attr.owner.RemoveProperty(attr)
        moved += 1
    if not moved:
        return
    for key in ("upAxis", "metersPerUnit"):
        if layer.pseudoRoot.HasInfo(key):
            side.pseudoRoot.SetInfo(key, layer.pseudoRoot.GetInfo(key))
    if layer.HasTimeCodesPerSecond():
        side.timeCodesPerSecond = layer.timeCodesPerSecond
    side.defaultPrim = layer.defaultPrim
    (staging / sub).mkdir(parents=True, exist_ok=True)
    name = f"{stem}_data.usdc"
    if not side.Export(str(staging / sub / name)):
        raise ExportError(f"{stem}: could not write the .usdc sidecar of large arrays")
    layer.subLayerPaths.insert(0, f"./{sub}/{name}")


def _relative_text(path: str) -> str:
    p = path.replace("\\", "/")
    if os.path.isabs(p):
        return "./" + os.path.basename(p)
    return p if p.startswith(".") else f"./{p}"
