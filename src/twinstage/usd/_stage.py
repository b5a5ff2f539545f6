"""Opening and creating USD stages the twin can trust."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from pxr import Ar, Kind, Sdf, Tf, Usd, UsdGeom

from ._binding import read_bindings
from ._schema import is_twin_asset, read_asset, read_attributes, register

USD_EXTENSIONS = (".usd", ".usda", ".usdc", ".usdz")


class StageError(ValueError):
    """A USD file cannot serve as a twin scene; the message names the file and why."""


def open_stage(path: str | os.PathLike[str], *, load: str = "all",
               session: Callable[[Sdf.Layer], Sdf.Layer | None] | None = None) -> Usd.Stage:
    """Open a USD file (``.usd/.usda/.usdc/.usdz``) with clear errors.

    ``load="none"`` opens with ``Usd.Stage.LoadNone`` so payloads stay unloaded
    until :func:`Usd.Stage.Load` asks for them (big scenes). A file that opens
    but holds no prims (a truncated file that kept only its header) is an error.
    ``session(root_layer)`` may return the session layer to open the stage with
    (the twin's live layer already in it: inserting a sublayer once the stage is
    open resyncs the whole stage); None, or a root layer that does not open, takes
    the plain path and its errors.
    """
    register()
    p = Path(path)
    if not p.exists():
        raise StageError(f"{p}: no such file")
    if p.is_dir():
        raise StageError(f"{p}: is a directory, not a USD file")
    if p.suffix.lower() not in USD_EXTENSIONS:
        raise StageError(f"{p}: not a USD file (extension {p.suffix!r}; expected one of {', '.join(USD_EXTENSIONS)})")
    if load not in ("all", "none"):
        raise StageError(f"load must be 'all' or 'none', not {load!r}")
    policy = Usd.Stage.LoadAll if load == "all" else Usd.Stage.LoadNone
    root = session_layer = None
    if session is not None:
        try:  # as Usd.Stage.Open(path) opens its root layer; a failure is reported by the plain open below
            with Ar.ResolverContextBinder(Ar.GetResolver().CreateDefaultContextForAsset(str(p))):
                root = Sdf.Layer.FindOrOpen(str(p))
        except Tf.ErrorException:
            root = None
        session_layer = session(root) if root is not None else None
    try:
        if session_layer is not None:
            stage = Usd.Stage.Open(root, session_layer, policy)
        else:
            stage = Usd.Stage.Open(str(p), policy)
    except Tf.ErrorException as exc:
        raise StageError(f"{p}: cannot open as USD ({tf_error_text(exc)[:400]})") from None
    if stage is None:
        raise StageError(f"{p}: cannot open as USD")
    if not stage.GetPseudoRoot().GetAllChildren():
        raise StageError(f"{p}: holds no prims (empty or truncated file)")
    return stage


def tf_error_text(exc: BaseException) -> str:
    """The messages of a ``Tf.ErrorException`` on one line.

    ``str()`` of the exception itself raises ``UnicodeDecodeError`` when a message
    quotes bytes of a binary or corrupt file; undecodable messages are skipped.
    """
    parts = []
    for err in getattr(exc, "args", ()) or (exc,):
        try:
            text = err.commentary if hasattr(err, "commentary") else str(err)
        except Exception:  # noqa: BLE001 - UnicodeDecodeError from pxr
            text = "(undecodable message)"
        parts.append(" ".join(str(text).split()))
    return "; ".join(p for p in parts if p) or type(exc).__name__


def create_stage(
    path: str | os.PathLike[str] | None = None,
    *,
    root: str = "World",
    root_type: str = "Xform",
    up_axis: str = "Z",
    meters_per_unit: float = 1.0,
    time_codes_per_second: float | None = None,
    kind: str = "assembly",
) -> Usd.Stage:
    """Create a stage with the metadata every twin stage carries.

    One root prim (the ``defaultPrim``), ``upAxis``, ``metersPerUnit`` (a twin is
    metric: 1.0) and, when given, ``timeCodesPerSecond``. ``path=None`` creates it
    in memory.
    """
    register()
    if up_axis not in ("Y", "Z"):
        raise StageError(f"up_axis must be 'Y' or 'Z', not {up_axis!r}")
    if not Sdf.Path.IsValidIdentifier(root):
        raise StageError(f"root prim name {root!r} is not a valid USD identifier")
    stage = Usd.Stage.CreateNew(str(path)) if path is not None else Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z if up_axis == "Z" else UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, meters_per_unit)
    if time_codes_per_second:
        stage.SetTimeCodesPerSecond(time_codes_per_second)
    prim = stage.DefinePrim(f"/{root}", root_type)
    if kind:
        Usd.ModelAPI(prim).SetKind(kind)
    stage.SetDefaultPrim(prim)
    return stage


def twin_prims(stage: Usd.Stage) -> list[Usd.Prim]:
    """Prims carrying ``TwinAssetAPI``, in stage traversal order (active, loaded, defined)."""
    return [p for p in stage.Traverse() if is_twin_asset(p)]


_MODEL_KINDS = (Kind.Tokens.component, Kind.Tokens.assembly, Kind.Tokens.group)


def candidate_assets(stage: Usd.Stage) -> list[Usd.Prim]:
    """Prims of a non-twin file that could become twin assets.

    Model-hierarchy prims of kind component (the units of an asset library), else
    — for files without kinds — prims with a payload, else top-level geometry. Prims
    under an unloaded payload are still reported at the payload.
    """
    comps = []
    payloads = []
    for prim in stage.TraverseAll():
        if not prim.IsActive() or prim.IsAbstract():
            continue
        if Usd.ModelAPI(prim).GetKind() == Kind.Tokens.component:
            comps.append(prim)
        elif prim.HasAuthoredPayloads():
            payloads.append(prim)
    if comps:
        return comps
    if payloads:
        return payloads
    out = []
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Gprim) and not any(prim.GetPath().HasPrefix(o.GetPath()) for o in out):
            out.append(prim)
    return out


def describe(stage: Usd.Stage) -> dict[str, Any]:
    """A summary of a stage for ``twinstage info``: metadata, hierarchy, twin prims."""
    root = stage.GetRootLayer()
    default = stage.GetDefaultPrim()
    info: dict[str, Any] = {
        "file": root.realPath or root.identifier,
        "defaultPrim": str(default.GetPath()) if default else None,
        "upAxis": str(UsdGeom.GetStageUpAxis(stage)),
        "metersPerUnit": UsdGeom.GetStageMetersPerUnit(stage),
        "metersPerUnitAuthored": stage.HasAuthoredMetadata("metersPerUnit"),
        "timeCodesPerSecond": stage.GetTimeCodesPerSecond(),
        "timeRange": [stage.GetStartTimeCode(), stage.GetEndTimeCode()] if stage.HasAuthoredTimeCodeRange() else None,
        "layers": [lay.identifier for lay in stage.GetUsedLayers()],
        "prims": sum(1 for _ in stage.TraverseAll()),
    }
    hierarchy = []
    for prim in stage.TraverseAll():
        depth = prim.GetPath().pathElementCount - 1
        if depth > 3:
            continue
        hierarchy.append(
            {
                "path": str(prim.GetPath()),
                "type": str(prim.GetTypeName()),
                "kind": str(Usd.ModelAPI(prim).GetKind() or ""),
                "loaded": prim.IsLoaded(),
                "payload": prim.HasAuthoredPayloads(),
                "variants": {name: prim.GetVariantSet(name).GetVariantSelection() for name in prim.GetVariantSets().GetNames()},
            }
        )
    info["hierarchy"] = hierarchy
    info["missing"] = composition_problems(stage)  # what could not be composed: missing files, MaterialX
    twins = []
    for prim in twin_prims(stage):
        asset = read_asset(prim)
        attrs = [
            {
                "name": d.name,
                "type": d.type,
                "unit": d.unit,
                "min": d.min,
                "max": d.max,
                "role": d.role,
                "value": v,
                "description": d.description,
            }
            for d, v in read_attributes(prim)
        ]
        twins.append({"path": str(prim.GetPath()), "kind": asset.kind, "model": asset.model, "assetId": asset.asset_id, "attributes": attrs})
    info["twinPrims"] = twins
    info["bindings"] = [
        {"prim": b.prim, "name": b.name, "attribute": b.attribute, "kind": b.kind, "key": b.key, "unit": b.unit,
         "scale": b.scale, "offset": b.offset, "period": b.period, "align": b.align, "staleAfter": b.stale_after}
        for b in read_bindings(stage)
    ]
    if not twins:
        info["candidateAssets"] = [
            {"path": str(p.GetPath()), "type": str(p.GetTypeName()), "kind": str(Usd.ModelAPI(p).GetKind() or "")}
            for p in candidate_assets(stage)
        ]
    return info


def composition_problems(stage: Usd.Stage) -> list[str]:
    """What the stage could not compose, in words: missing referenced files, MaterialX this USD build cannot read."""
    out = []
    try:
        errors = stage.GetCompositionErrors()
    except Exception:  # noqa: BLE001 - older USD
        return out
    for err in errors:
        text = " ".join(str(err).split())
        low = text.lower()
        if ".mtlx" in low:
            out.append(f"MaterialX reference not readable by this USD build (no MaterialX plugin in usd-core); "
                       f"display colours are used instead: {text}")
        elif "could not open asset" in low or "cannot determine file format" in low or "invalidassetpath" in type(err).__name__.lower():
            out.append(f"missing referenced file: {text}")
        else:
            out.append(f"composition error: {text}")
    return out
