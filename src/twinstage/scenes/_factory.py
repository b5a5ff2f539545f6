"""Generator of large twin scenes: a factory floor of machines (and conveyor items).

``generate_factory(10_000)`` lays out machines on a grid, each a twin asset with a
first-order thermal model (``temperature``, ``heatInput``, ``ambientTemperature``,
``thermalResistance``, ``timeConstant``); machine geometry is one shared,
instanceable prototype. With ``items > 0`` it adds closed conveyor loops with
items moved by the ``path_motion`` model. Authoring goes through ``Sdf`` specs in
change blocks, so 100k assets take seconds, not minutes; the result is the same
as declaring each asset with :func:`twinstage.usd.declare_attribute`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from pxr import Gf, Kind, Sdf, Usd, UsdGeom, Vt

from ..usd import ASSET_API, STATE_API, create_stage
from ..usd._schema import VALUE_TYPES
from ._meshes import box

_U = Sdf.VariabilityUniform


def _attr(ps: Sdf.PrimSpec, name: str, vtype, value, uniform: bool = False) -> Sdf.AttributeSpec:
    a = Sdf.AttributeSpec(ps, name, vtype, _U if uniform else Sdf.VariabilityVarying)
    a.default = value
    return a


def _declare(ps: Sdf.PrimSpec, name: str, type_: str, value, unit: str, lo: float, hi: float, role: str, doc: str, drives: str = "") -> None:
    _attr(ps, f"twin:{name}", VALUE_TYPES[type_], value)
    _attr(ps, f"twin:{name}:unit", Sdf.ValueTypeNames.String, unit, True)
    _attr(ps, f"twin:{name}:min", Sdf.ValueTypeNames.Double, lo, True)
    _attr(ps, f"twin:{name}:max", Sdf.ValueTypeNames.Double, hi, True)
    _attr(ps, f"twin:{name}:description", Sdf.ValueTypeNames.String, doc, True)
    _attr(ps, f"twin:{name}:role", Sdf.ValueTypeNames.Token, role, True)
    _attr(ps, f"twin:{name}:drives", Sdf.ValueTypeNames.Token, drives, True)


def _asset_spec(layer: Sdf.Layer, path: Sdf.Path, kind: str, asset_id: str, model: str, states: list[str], translate: tuple[float, float, float]) -> Sdf.PrimSpec:
    ps = Sdf.CreatePrimInLayer(layer, path)
    ps.specifier = Sdf.SpecifierDef
    ps.typeName = "Xform"
    ps.kind = Kind.Tokens.component
    ps.SetInfo("apiSchemas", Sdf.TokenListOp.Create(prependedItems=[ASSET_API] + [f"{STATE_API}:{s}" for s in states]))
    _attr(ps, "twin:assetId", Sdf.ValueTypeNames.String, asset_id, True)
    _attr(ps, "twin:kind", Sdf.ValueTypeNames.Token, kind, True)
    _attr(ps, "twin:model", Sdf.ValueTypeNames.Token, model, True)
    _attr(ps, "xformOp:translate", Sdf.ValueTypeNames.Double3, Gf.Vec3d(*translate))
    _attr(ps, "xformOpOrder", Sdf.ValueTypeNames.TokenArray, Vt.TokenArray(["xformOp:translate"]), True)
    return ps


def generate_factory(
    assets: int,
    path: str | os.PathLike[str] | None = None,
    *,
    items: int = 0,
    seed: int = 0,
    spacing: float = 3.0,
    area_size: int | None = None,
) -> Usd.Stage:
    """A factory of ``assets`` machines (thermal model) plus ``items`` conveyor items.

    Deterministic for a given ``seed``. Saved to ``path`` if given (see
    :func:`write_factory`, which also explains ``area_size``) and opened from there.
    """
    if path is None:
        if area_size is not None:
            raise ValueError("area_size needs a path: areas are files next to it")
        return Usd.Stage.Open(_factory_layer(Sdf.Layer.CreateAnonymous("factory.usda"), assets, items, seed, spacing))
    return Usd.Stage.Open(str(write_factory(assets, path, items=items, seed=seed, spacing=spacing, area_size=area_size)))


def write_factory(
    assets: int,
    path: str | os.PathLike[str],
    *,
    items: int = 0,
    seed: int = 0,
    spacing: float = 3.0,
    area_size: int | None = None,
) -> Path:
    """Write the factory of :func:`generate_factory` to ``path`` without opening a stage on it.

    The layer is authored in the file's own format (a crate layer for ``.usdc``) and
    saved once, so the data is held once: ~11 KB per machine while authoring plus
    ~7 KB while the crate is packed. With ``area_size`` (and more machines than that)
    the machines go into area layers of ``area_size`` machines each,
    ``<stem>.areas/NNN.<ext>`` beside ``path``, that ``path`` names as sublayers: the
    composed stage has the same prims and values, and each area is authored, saved and
    dropped before the next, so memory is bounded by one area.
    """
    if assets < 0 or items < 0:
        raise ValueError("assets and items must be >= 0")
    if area_size is not None and area_size < 1:
        raise ValueError(f"area_size must be >= 1, got {area_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    areas = [] if area_size is None or assets <= area_size else list(range(0, assets, area_size))
    layer = Sdf.Layer.CreateNew(str(path))
    if layer is None:
        raise ValueError(f"cannot write a USD layer to {path} (unknown extension?)")
    if areas:
        folder = path.with_name(path.stem + ".areas")
        folder.mkdir(exist_ok=True)
        names = [f"{k:03d}{path.suffix}" for k in range(len(areas))]
        # Pcp lists a prim's children from the weakest layer to the strongest: the last area
        # strongest keeps the machines in index order (no two areas share a machine).
        layer.subLayerPaths = [f"./{folder.name}/{n}" for n in reversed(names)]
        _factory_layer(layer, assets, items, seed, spacing, areas=[(start, min(assets, start + area_size), folder / n) for start, n in zip(areas, names)])
    else:
        _factory_layer(layer, assets, items, seed, spacing)
    layer.Save()
    return path


def _factory_layer(layer: Sdf.Layer, assets: int, items: int, seed: int, spacing: float,
                   areas: list[tuple[int, int, Path]] | None = None) -> Sdf.Layer:
    """Author the factory into ``layer`` (machines into new area layers instead when ``areas``)."""
    # Author the small parts on a stage, then move them to a layer no stage observes for the
    # bulk work (no change processing: ~2x faster).
    stage = create_stage(None, root="Factory")
    stage.GetDefaultPrim().SetDocumentation(f"Generated factory floor: {assets} machines, {items} conveyor items (seed {seed})")
    proto = stage.DefinePrim("/Factory/Prototypes", "Scope")
    proto.SetSpecifier(Sdf.SpecifierClass)
    UsdGeom.Xform.Define(stage, "/Factory/Prototypes/Machine")
    box(stage, "/Factory/Prototypes/Machine/Body", (1.6, 1.2, 1.4), (0.45, 0.5, 0.55), center=(0, 0, 0.7))
    box(stage, "/Factory/Prototypes/Machine/Panel", (0.1, 0.6, 0.5), (0.1, 0.6, 0.3), center=(0.85, 0, 1.0))
    rng = np.random.default_rng(seed)
    cols = max(1, int(math.ceil(math.sqrt(max(assets, 1)))))
    heat = rng.uniform(500.0, 5000.0, assets)
    resistance = rng.uniform(0.005, 0.02, assets)
    tau = rng.uniform(60.0, 900.0, assets)
    ambient = 22.0
    width = len(str(max(assets, 1)))
    floor = UsdGeom.Xform.Define(stage, "/Factory/Machines").GetPrim()
    Usd.ModelAPI(floor).SetKind(Kind.Tokens.group)
    conveyor_paths = _conveyor_paths(stage, items, cols * spacing) if items else []
    sublayers = list(layer.subLayerPaths)
    layer.TransferContent(stage.GetRootLayer())  # replaces the layer's metadata (its sublayers too)
    layer.subLayerPaths = sublayers
    parent = Sdf.Path("/Factory/Machines")
    if areas is None:
        _machines(layer, parent, width, cols, spacing, ambient, heat, resistance, tau)
    for start, stop, area_path in areas or []:
        if area_path.exists():
            area_path.unlink()
        area = Sdf.Layer.CreateNew(str(area_path))
        _machines(area, parent, width, cols, spacing, ambient, heat, resistance, tau, start, stop)
        area.Save()
        del area
    if items:
        _conveyor_items(layer, items, conveyor_paths, rng)
    return layer


def _machine_template(ambient: float) -> tuple[Sdf.Layer, Sdf.Path]:
    """One machine spec with every property authored; per-machine values are set after copying."""
    layer = Sdf.Layer.CreateAnonymous("machine-template.usda")
    states = ["temperature", "heatInput", "ambientTemperature", "thermalResistance", "timeConstant"]
    path = Sdf.Path("/Machine")
    ps = _asset_spec(layer, path, "machine", "", "thermal", states, (0.0, 0.0, 0.0))
    ps.referenceList.prependedItems.append(Sdf.Reference(primPath="/Factory/Prototypes/Machine"))
    ps.instanceable = True
    _declare(ps, "temperature", "float", ambient, "degC", -50.0, 400.0, "state", "Machine body temperature")
    _declare(ps, "heatInput", "float", 0.0, "W", 0.0, 1e6, "input", "Heat dissipated by the machine")
    _declare(ps, "ambientTemperature", "float", ambient, "degC", -50.0, 80.0, "parameter", "Hall temperature")
    _declare(ps, "thermalResistance", "float", 0.0, "K/W", 0.0, 10.0, "parameter", "Body-to-air thermal resistance")
    _declare(ps, "timeConstant", "float", 0.0, "s", 1e-3, 1e6, "parameter", "Thermal time constant")
    return layer, path


def _machines(layer: Sdf.Layer, parent: Sdf.Path, width: int, cols: int, spacing: float, ambient: float,
              heat: np.ndarray, resistance: np.ndarray, tau: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """The machines: a template spec copied in C++ (``Sdf.CopySpec``, ~40 properties at once), then
    the five values that differ per machine set: the same layer (byte for byte as .usda) as
    authoring every property from Python, ~1.5x faster. Machines ``start`` to ``stop`` only."""
    template, tpath = _machine_template(ambient)
    Sdf.CreatePrimInLayer(layer, parent)
    stop = len(heat) if stop is None else stop
    heat_l, res_l, tau_l = heat[start:stop].tolist(), resistance[start:stop].tolist(), tau[start:stop].tolist()
    copy, get = Sdf.CopySpec, layer.GetAttributeAtPath
    for j, i in enumerate(range(start, stop)):
        name = f"M{i:0{width}d}"
        path = parent.AppendChild(name)
        copy(template, tpath, layer, path)
        x, y = (i % cols) * spacing, (i // cols) * spacing
        get(path.AppendProperty("twin:assetId")).default = name
        get(path.AppendProperty("xformOp:translate")).default = Gf.Vec3d(x, y, 0.0)
        get(path.AppendProperty("twin:heatInput")).default = heat_l[j]
        get(path.AppendProperty("twin:thermalResistance")).default = res_l[j]
        get(path.AppendProperty("twin:timeConstant")).default = tau_l[j]


PER_LOOP = 200


def _conveyor_paths(stage: Usd.Stage, items: int, extent: float) -> list[tuple[Sdf.Path, float, float]]:
    """Closed rectangular conveyor loops beside the machine grid: (curve path, y, length) each."""
    conv = UsdGeom.Xform.Define(stage, "/Factory/Conveyors").GetPrim()
    Usd.ModelAPI(conv).SetKind(Kind.Tokens.group)
    stage.DefinePrim("/Factory/Prototypes/Item", "Xform")
    box(stage, "/Factory/Prototypes/Item/Box", (0.3, 0.3, 0.3), (0.8, 0.5, 0.2), center=(0, 0, 0.15))
    out = []
    for k in range(int(math.ceil(items / PER_LOOP))):
        y = -4.0 - 3.0 * k
        loop = UsdGeom.Xform.Define(stage, f"/Factory/Conveyors/Loop{k}").GetPrim()
        Usd.ModelAPI(loop).SetKind(Kind.Tokens.group)  # items (components) may only sit under groups
        curve = UsdGeom.BasisCurves.Define(stage, f"/Factory/Conveyors/Loop{k}/Path")
        pts = [(0.0, y, 0.8), (extent, y, 0.8), (extent, y - 1.5, 0.8), (0.0, y - 1.5, 0.8), (0.0, y, 0.8)]
        curve.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(*p) for p in pts]))
        curve.CreateCurveVertexCountsAttr(Vt.IntArray([len(pts)]))
        curve.CreateTypeAttr(UsdGeom.Tokens.linear)
        curve.CreateWidthsAttr(Vt.FloatArray([0.05]))
        curve.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(0.2, 0.2, 0.2)]))
        curve.CreateExtentAttr(UsdGeom.Boundable.ComputeExtentFromPlugins(curve, Usd.TimeCode.Default()))
        out.append((curve.GetPath(), y, 2 * extent + 3.0))
    return out


def _conveyor_items(layer: Sdf.Layer, items: int, loops: list[tuple[Sdf.Path, float, float]], rng: np.random.Generator) -> None:
    """Items spread evenly along the conveyor loops, moved by ``path_motion``."""
    speed = rng.uniform(0.3, 1.2, len(loops))
    ref = Sdf.Reference(primPath="/Factory/Prototypes/Item")
    states = ["position", "distance", "speed"]
    for k, (curve, y, length) in enumerate(loops):
        n = min(PER_LOOP, items - k * PER_LOOP)
        for j in range(n):
            p = Sdf.Path(f"/Factory/Conveyors/Loop{k}/Item{j:03d}")
            ps = _asset_spec(layer, p, "item", f"L{k}I{j}", "path_motion", states, (0.0, y, 0.8))
            ps.referenceList.prependedItems.append(ref)
            ps.instanceable = True
            _declare(ps, "position", "vec3", Gf.Vec3d(0.0, y, 0.8), "m", -math.inf, math.inf, "state", "Item position in its parent's space", drives="xformOp:translate")
            _declare(ps, "distance", "float", length * j / n, "m", 0.0, math.inf, "state", "Distance travelled along the path")
            _declare(ps, "speed", "float", float(speed[k]), "m/s", 0.0, 10.0, "input", "Conveyor speed")
            rel = Sdf.RelationshipSpec(ps, "twin:path", custom=False)
            rel.targetPathList.explicitItems.append(curve)
