"""USD / USDC / USDZ export of a scene, a running twin's stage, or a recording.

* **flatten** (default): one self-contained layer: composition flattened, the stage
  metadata a good USD citizen carries (defaultPrim, single root, upAxis, metersPerUnit 1,
  timeCodesPerSecond when time-sampled), every asset the file uses copied beside it
  (``./<stem>_assets/…``) or into the ``.usdz`` package, twin schema values authored
  explicitly (readers without our schema plugin see them all).
* **keep**: the output is a small layer that sublayers the untouched scene (a relative
  ``./`` path) and holds only the state (and animation) as ``over``s, with prim paths
  identical to the scene's and the bridge's: what an Omniverse live/session layer expects.

A recording contributes per-prim animation (``twin:*`` and the attributes they drive, as
time samples) and its last values as the exported state. Every output is written to a
temporary file and renamed: a failed export leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pxr import Sdf, Usd, UsdGeom, UsdUtils

from .._version import __version__
from ..usd import register, twin_prims
from ._assets import _attr_specs, localize_assets, split_heavy
from ._common import ExportError, atomic_output, is_recording, open_source, up_axis_note
from ._fixups import fix_flat_layer

FORMATS = ("usda", "usdc", "usdz")


@dataclass
class UsdExport:
    """What an export wrote and what it had to say about it."""

    path: Path
    notes: list[str] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)  # asset paths as written in the output
    time_sampled: bool = False


def export_usd(source, out, *, fmt: str | None = None, layers: str = "flatten", recording=None,
               animation: bool = True) -> UsdExport:
    """Export ``source`` (a scene file, a recording, or a ``Usd.Stage`` such as a running twin's) to ``out``.

    ``fmt`` defaults to ``out``'s suffix. ``recording`` (or a recording given as ``source``) adds
    per-prim animation (``animation=False``: only its last values, as the state).
    """
    register()
    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ExportError(f"{out}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.suffix.lower() != f".{fmt}":
        raise ExportError(f"{out}: the file name must end in .{fmt} for --format {fmt}")
    if layers not in ("flatten", "keep"):
        raise ExportError(f"layers must be 'flatten' or 'keep', not {layers!r}")
    if not isinstance(source, Usd.Stage) and is_recording(Path(source)):
        if recording is not None:
            raise ExportError(f"{source}: is already a recording; do not pass another")
        recording, source = Path(source), None
    with tempfile.TemporaryDirectory(prefix="twinstage-export-") as tmp:
        tmp_dir = Path(tmp)
        anim_path = None
        if recording is not None:
            anim_path = _animation_layer(Path(recording), tmp_dir, animation)
            if source is not None and not isinstance(source, Usd.Stage):
                anim_layer = Sdf.Layer.FindOrOpen(str(anim_path))  # held: a list proxy of a dropped layer expires
                bases = [Path(p).resolve() for p in list(anim_layer.subLayerPaths)]
                if Path(source).resolve() not in bases:
                    raise ExportError(f"{recording}: is a recording of {', '.join(map(str, bases)) or 'no scene'}, not of {source}")
            stage = Usd.Stage.Open(str(anim_path))
        else:
            stage = open_source(source)
        result = UsdExport(out)
        result.notes += up_axis_note(stage)
        if layers == "keep":
            _export_keep(stage, anim_path, out, fmt, result)
        else:
            _export_flat(stage, out, fmt, tmp_dir, result)
    return result


# -- recordings --------------------------------------------------------------------------

def _animation_layer(recording: Path, tmp_dir: Path, animation: bool) -> Path:
    """The recording as per-prim time samples (+ last values as defaults) in a layer over its scene."""
    from ..usd._recorder import Recording

    rec = Recording(recording)
    if not len(rec.times):
        raise ExportError(f"{recording}: the recording holds no ticks")
    path = tmp_dir / "animation.usda"
    rec.export_per_prim(path)
    # export_per_prim anchors the scene sublayer relative to its own (temporary) folder: make it absolute here
    layer = Sdf.Layer.FindOrOpen(str(path))
    layer.subLayerPaths = [str((recording.parent / p).resolve()) for p in list(rec.layer.subLayerPaths)]
    last = rec.times[-1]
    stack = list(layer.rootPrims)
    with Sdf.ChangeBlock():
        while stack:
            ps = stack.pop()
            stack.extend(ps.nameChildren)
            for attr in ps.attributes:
                if layer.GetNumTimeSamplesForPath(attr.path):
                    attr.default = layer.QueryTimeSample(attr.path, last)
                    if not animation:
                        for t in layer.ListTimeSamplesForPath(attr.path):
                            layer.EraseTimeSample(attr.path, t)
    if not animation:
        for key in ("startTimeCode", "endTimeCode"):
            layer.pseudoRoot.ClearInfo(key)
    layer.Save()
    return path


# -- flattened ---------------------------------------------------------------------------

def _export_flat(stage: Usd.Stage, out: Path, fmt: str, tmp_dir: Path, result: UsdExport) -> None:
    flat = stage.Flatten(addSourceFileComment=False)
    _good_citizen(flat, stage, result)
    _author_twin_values(stage, flat)
    if fmt == "usdz":
        work = tmp_dir / "package"
        work.mkdir()
        root = work / f"{out.stem}.usdc"
        localize_assets(flat, work, "assets", result, drop_unresolved=True)
        if not flat.Export(str(root)):
            raise ExportError(f"{out}: could not write the package's root layer")
        with atomic_output(out) as tmp_out:
            if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(root)), str(tmp_out)):
                raise ExportError(f"{out}: the usdz packager failed")
        return
    assets_dir = f"{out.stem}_assets"
    staging = tmp_dir / "assets_out"
    staging.mkdir()
    localize_assets(flat, staging, assets_dir, result)
    if fmt == "usda":
        split_heavy(flat, staging, assets_dir, out.stem)
    with atomic_output(out) as tmp_out:
        if not flat.Export(str(tmp_out)):
            raise ExportError(f"{out}: could not write the layer")
        if (staging / assets_dir).exists():
            dest = out.parent / assets_dir
            shutil.copytree(staging / assets_dir, dest, dirs_exist_ok=True)


def _good_citizen(flat: Sdf.Layer, stage: Usd.Stage, result: UsdExport) -> None:
    """defaultPrim, a single root, upAxis, metersPerUnit 1 (scaled when the source differs), timeCodesPerSecond."""
    roots = [p for p in flat.rootPrims if p.specifier == Sdf.SpecifierDef]
    up = str(UsdGeom.GetStageUpAxis(stage))
    if up not in ("Y", "Z"):
        result.notes.append(f"source upAxis {up!r} is not Y or Z; exported as Z")
        up = "Z"
    fix_flat_layer(flat, result.notes)
    roots = [p for p in flat.rootPrims if p.specifier == Sdf.SpecifierDef]
    if not roots:
        raise ExportError(f"{stage.GetRootLayer().identifier}: defines no prims (only overs: a layer meant to be composed onto another)")
    if len(roots) != 1:
        _wrap_in_root(flat, stage, result)
    roots = [p for p in flat.rootPrims if p.specifier == Sdf.SpecifierDef]
    root = roots[0]
    if not root.typeName:
        root.typeName = "Xform"
    for p in list(flat.rootPrims):
        if p.specifier != Sdf.SpecifierDef:  # stray overs/classes: keep classes, drop empty overs
            if p.specifier == Sdf.SpecifierOver:
                del flat.rootPrims[p.name]
    flat.defaultPrim = root.name
    flat.pseudoRoot.SetInfo("upAxis", up)
    mpu = UsdGeom.GetStageMetersPerUnit(stage)
    if not math.isclose(mpu, 1.0):
        _scale_root(flat, root, mpu)
        result.notes.append(f"source metersPerUnit {mpu:g}: a scale of {mpu:g} is authored on /{root.name} so the export is in metres")
    flat.pseudoRoot.SetInfo("metersPerUnit", 1.0)
    sampled = _has_time_samples(flat)
    result.time_sampled = sampled
    if sampled:
        flat.timeCodesPerSecond = stage.GetTimeCodesPerSecond() if stage.GetTimeCodesPerSecond() > 0 else 24.0
        if not flat.HasStartTimeCode() or not flat.HasEndTimeCode():
            times = sorted({t for a in _attr_specs(flat) for t in flat.ListTimeSamplesForPath(a.path)})
            flat.startTimeCode, flat.endTimeCode = times[0], times[-1]
    else:
        for key in ("startTimeCode", "endTimeCode"):
            flat.pseudoRoot.ClearInfo(key)
    data = dict(flat.customLayerData)
    data["twinstage"] = {**dict(data.get("twinstage", {})), "exportedBy": f"twinstage {__version__}",
                         "exportedFrom": stage.GetRootLayer().identifier.rsplit("/", 1)[-1],
                         "usd": ".".join(str(v) for v in Usd.GetVersion())}
    flat.customLayerData = data


def _wrap_in_root(flat: Sdf.Layer, stage: Usd.Stage, result: UsdExport) -> None:
    """Move every root prim under one new ``Xform`` root (the asset validator wants a single root)."""
    default = stage.GetDefaultPrim()
    name = "Root" if not default else f"{default.GetName()}_root"
    while flat.GetPrimAtPath(f"/{name}"):
        name += "_"
    new_root = Sdf.PrimSpec(flat, name, Sdf.SpecifierDef, "Xform")
    moved = []
    for p in list(flat.rootPrims):
        if p.name == name or p.specifier == Sdf.SpecifierClass:
            continue
        Sdf.CopySpec(flat, p.path, flat, new_root.path.AppendChild(p.name))
        moved.append(p.name)
        del flat.rootPrims[p.name]
    _retarget(flat, moved, new_root.path)
    result.notes.append(f"{len(moved)} root prims ({', '.join(moved[:5])}{'…' if len(moved) > 5 else ''}) moved under /{name}: "
                        "one root prim, as the asset validator asks; their paths changed accordingly")


def _retarget(flat: Sdf.Layer, moved: list[str], new_root: Sdf.Path) -> None:
    """Fix relationship targets and connections that pointed at moved prims."""
    prefixes = [Sdf.Path(f"/{n}") for n in moved]

    def fix(path: Sdf.Path) -> Sdf.Path:
        for pre in prefixes:
            if path.HasPrefix(pre):
                return path.ReplacePrefix(Sdf.Path.absoluteRootPath, new_root)
        return path

    stack = list(flat.rootPrims)
    while stack:
        ps = stack.pop()
        stack.extend(ps.nameChildren)
        for rel in ps.relationships:
            items = list(rel.targetPathList.GetAddedOrExplicitItems())
            if items and any(fix(t) != t for t in items):
                rel.targetPathList.explicitItems = [fix(t) for t in items]
        for attr in ps.attributes:
            items = list(attr.connectionPathList.GetAddedOrExplicitItems())
            if items and any(fix(t) != t for t in items):
                attr.connectionPathList.explicitItems = [fix(t) for t in items]
        for arcs, make in ((ps.referenceList, Sdf.Reference), (ps.payloadList, Sdf.Payload)):
            items = list(arcs.GetAddedOrExplicitItems())
            if any(not r.assetPath and r.primPath and fix(r.primPath) != r.primPath for r in items):
                arcs.explicitItems = [make(r.assetPath, fix(r.primPath) if not r.assetPath and r.primPath else r.primPath,
                                           r.layerOffset) for r in items]
        for arcs in (ps.inheritPathList, ps.specializesList):
            items = list(arcs.GetAddedOrExplicitItems())
            if items and any(fix(t) != t for t in items):
                arcs.explicitItems = [fix(t) for t in items]


def _scale_root(flat: Sdf.Layer, root: Sdf.PrimSpec, mpu: float) -> None:
    name = "xformOp:scale:metersPerUnit"
    attr = Sdf.AttributeSpec(root, name, Sdf.ValueTypeNames.Double3)
    attr.default = (mpu, mpu, mpu)
    order = root.attributes.get("xformOpOrder")
    ops = list(order.default) if order is not None and order.default is not None else []
    if order is None:
        order = Sdf.AttributeSpec(root, "xformOpOrder", Sdf.ValueTypeNames.TokenArray, variability=Sdf.VariabilityUniform)
    order.default = [name] + [o for o in ops if o != name]


def _has_time_samples(layer: Sdf.Layer) -> bool:
    return any(layer.GetNumTimeSamplesForPath(a.path) for a in _attr_specs(layer))


def _author_twin_values(stage: Usd.Stage, flat: Sdf.Layer) -> None:
    """Every twin schema property with a value (authored or a schema fallback) authored in the output."""
    for prim in twin_prims(stage):
        ps = flat.GetPrimAtPath(prim.GetPath())
        if ps is None:
            continue
        for attr in prim.GetAttributes():
            name = attr.GetName()
            if not name.startswith("twin:") or ps.attributes.get(name) is not None:
                continue
            value = attr.Get()
            if value is None:
                continue
            spec = Sdf.AttributeSpec(ps, name, attr.GetTypeName(), variability=attr.GetVariability())
            spec.default = value


# -- kept layers -------------------------------------------------------------------------

def _export_keep(stage: Usd.Stage, anim_path: Path | None, out: Path, fmt: str, result: UsdExport) -> None:
    """A layer of state (and animation) ``over``s that sublayers the untouched base scene."""
    base = stage.GetRootLayer()
    if anim_path is not None:
        src = Sdf.Layer.FindOrOpen(str(anim_path))
        base_paths = list(src.subLayerPaths)
    else:
        src = None
        if base.anonymous or not base.realPath:
            raise ExportError("--layers keep needs a scene saved to a file (its base layer is referenced by path)")
        base_paths = [base.realPath]
    layer = Sdf.Layer.CreateAnonymous(".usdc" if fmt == "usdz" else f".{fmt}")
    if src is not None:
        layer.TransferContent(src)
    else:
        _state_overs(stage, layer)
    anchor = out.parent.resolve()
    rel = [os.path.relpath(p, anchor) for p in base_paths]
    layer.subLayerPaths = [r if r.startswith(".") else f"./{r}" for r in rel]
    default = stage.GetDefaultPrim()
    if default:
        layer.defaultPrim = default.GetName()
    up = str(UsdGeom.GetStageUpAxis(stage))
    layer.pseudoRoot.SetInfo("upAxis", up if up in ("Y", "Z") else "Z")
    mpu = UsdGeom.GetStageMetersPerUnit(stage)
    if not math.isclose(mpu, 1.0):
        result.notes.append(f"the base scene's metersPerUnit is {mpu:g}; a kept-layers export cannot rescale it (use flatten)")
    layer.pseudoRoot.SetInfo("metersPerUnit", mpu)
    result.time_sampled = _has_time_samples(layer)
    if result.time_sampled and not layer.HasTimeCodesPerSecond():
        layer.timeCodesPerSecond = stage.GetTimeCodesPerSecond()
    data = dict(layer.customLayerData)
    data["twinstage"] = {**dict(data.get("twinstage", {})), "exportedBy": f"twinstage {__version__}",
                         "layers": "state over the untouched base scene", "usd": ".".join(str(v) for v in Usd.GetVersion())}
    layer.customLayerData = data
    if fmt == "usdz":
        # packaged: the base layers go inside the package (the packager localizes them), found by absolute path here
        layer.subLayerPaths = [str(Path(p).resolve()) for p in base_paths]
        with tempfile.TemporaryDirectory(prefix="twinstage-usdz-") as tmp:
            root = Path(tmp) / f"{out.stem}.usdc"
            if not layer.Export(str(root)):
                raise ExportError(f"{out}: could not write the package's root layer")
            with atomic_output(out) as tmp_out:
                if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(root)), str(tmp_out)):
                    raise ExportError(f"{out}: the usdz packager failed")
        return
    with tempfile.TemporaryDirectory(prefix="twinstage-export-") as staging:
        assets_dir = f"{out.stem}_assets"
        if fmt == "usda":
            split_heavy(layer, Path(staging), assets_dir, out.stem)
        with atomic_output(out) as tmp_out:
            if not layer.Export(str(tmp_out)):
                raise ExportError(f"{out}: could not write the layer")
            if (Path(staging) / assets_dir).exists():
                shutil.copytree(Path(staging) / assets_dir, out.parent / assets_dir, dirs_exist_ok=True)


def _state_overs(stage: Usd.Stage, layer: Sdf.Layer) -> None:
    """The twin state of every twin prim (``twin:<name>`` values as composed now) as overs."""
    for prim in twin_prims(stage):
        for attr in prim.GetAttributes():
            name = attr.GetName()
            if not name.startswith("twin:") or name.count(":") != 1 or name in ("twin:assetId", "twin:kind", "twin:model"):
                continue
            value = attr.Get()
            if value is None:
                continue
            ps = Sdf.CreatePrimInLayer(layer, prim.GetPath())
            spec = Sdf.AttributeSpec(ps, name, attr.GetTypeName())
            spec.default = value
