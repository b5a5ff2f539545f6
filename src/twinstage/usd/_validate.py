"""Validation: OpenUSD's ``UsdValidation`` validators plus twin-schema checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pxr import Pcp, Sdf, Usd, UsdGeom, UsdValidation

from ._schema import STATE_API, SchemaError, _api_schemas, is_twin_asset, read_attributes
from ._stage import composition_problems, open_stage


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} [{self.code}] {self.where}: {self.message}"


def _usd_validation(stage: Usd.Stage) -> list[Finding]:
    reg = UsdValidation.ValidationRegistry()
    ctx = UsdValidation.ValidationContext(reg.GetOrLoadAllValidators())
    out = []
    for err in ctx.Validate(stage):
        etype = err.GetType()
        if etype == UsdValidation.ValidationErrorType.Error:
            sev = "error"
        elif etype == UsdValidation.ValidationErrorType.Warn:
            sev = "warning"
        else:
            continue
        sites = [str(s.GetPrim().GetPath()) if s.IsPrim() else str(s.GetLayer().identifier if s.GetLayer() else "") for s in err.GetSites()]
        out.append(Finding(sev, str(err.GetName()), ", ".join(s for s in sites if s) or "stage", err.GetMessage()))
    return out


def up_axis_mismatches(stage: Usd.Stage, limit: int = 50) -> list[tuple[str, str]]:
    """(prim path, message) for references/payloads into a layer whose ``upAxis`` differs from the stage's.

    Such an asset lies on its side unless a correction rotation is authored; a prim marked with
    ``customData = {twinstage:upAxisCorrected: true}`` (what ``twinstage import`` writes) is taken as corrected.
    """
    up = str(UsdGeom.GetStageUpAxis(stage))
    out: list[tuple[str, str]] = []
    for prim in stage.Traverse():
        if not (prim.HasAuthoredReferences() or prim.HasAuthoredPayloads()):
            continue
        if prim.GetCustomDataByKey("twinstage:upAxisCorrected"):
            continue
        for arc in Usd.PrimCompositionQuery(prim).GetCompositionArcs():
            if arc.GetArcType() not in (Pcp.ArcTypeReference, Pcp.ArcTypePayload):
                continue
            layer = arc.GetTargetLayer()
            if layer is None or not layer.pseudoRoot.HasInfo("upAxis"):
                continue
            theirs = str(layer.pseudoRoot.GetInfo("upAxis"))
            if theirs != up:
                out.append((str(prim.GetPath()), f"references {layer.identifier}, which is {theirs}-up, into a {up}-up stage without a "
                            "correction rotation: it will lie on its side"))
                break
        if len(out) >= limit:
            break
    return out


def _metadata_checks(stage: Usd.Stage) -> list[Finding]:
    root = stage.GetRootLayer()
    where = root.identifier
    out = []
    if root.pseudoRoot.HasInfo("upAxis"):
        up = str(root.pseudoRoot.GetInfo("upAxis"))
        if up not in ("Y", "Z"):
            out.append(Finding("error", "UpAxis", where, f"upAxis is {up!r}; it must be \"Y\" or \"Z\""))
    else:
        out.append(Finding("warning", "UpAxis", where, "upAxis is not authored (readers fall back to their own default)"))
    if root.HasTimeCodesPerSecond():
        tcps = root.timeCodesPerSecond
        if not (math.isfinite(tcps) and tcps > 0):
            out.append(Finding("error", "TimeCodesPerSecond", where, f"timeCodesPerSecond is {tcps}; it must be a finite number > 0"))
    if root.HasFramesPerSecond():
        fps = root.framesPerSecond
        if not (math.isfinite(fps) and fps > 0):
            out.append(Finding("error", "FramesPerSecond", where, f"framesPerSecond is {fps}; it must be a finite number > 0"))
    if root.HasStartTimeCode() and root.HasEndTimeCode() and root.startTimeCode > root.endTimeCode:
        out.append(Finding("error", "TimeCodeRange", where,
                           f"startTimeCode {root.startTimeCode} is after endTimeCode {root.endTimeCode}"))
    for path, msg in up_axis_mismatches(stage):
        out.append(Finding("warning", "UpAxisMismatch", path, msg))
    for msg in composition_problems(stage):
        out.append(Finding("warning", "Composition", where, msg))
    return out


def _stage_checks(stage: Usd.Stage) -> list[Finding]:
    out = _metadata_checks(stage)
    root = stage.GetRootLayer()
    roots = [p for p in stage.GetPseudoRoot().GetChildren() if p.GetSpecifier() == Sdf.SpecifierDef]
    if len(roots) != 1:
        out.append(Finding("warning", "SingleRootPrim", root.identifier, f"{len(roots)} root prims defined; twin stages have exactly one"))
    if not stage.HasAuthoredMetadata("metersPerUnit"):
        out.append(Finding("error", "MetersPerUnit", root.identifier, "metersPerUnit is not authored (it falls back to 0.01)"))
    elif not math.isclose(UsdGeom.GetStageMetersPerUnit(stage), 1.0):
        out.append(Finding("warning", "MetersPerUnit", root.identifier, f"metersPerUnit is {UsdGeom.GetStageMetersPerUnit(stage)}; a twin is metric (1.0)"))
    sampled = any(root.ListTimeSamplesForPath(spec.path) for spec in _iter_attr_specs(root))
    if sampled and not root.HasTimeCodesPerSecond():
        out.append(Finding("error", "TimeCodesPerSecond", root.identifier, "layer holds time samples but does not author timeCodesPerSecond"))
    for layer in stage.GetUsedLayers():
        if layer.anonymous:
            continue
        for dep in layer.GetCompositionAssetDependencies():
            if os.path.isabs(dep):
                out.append(Finding("warning", "AbsoluteAssetPath", layer.identifier, f"asset path {dep!r} is absolute; use ./relative paths"))
    return out


def _iter_attr_specs(layer: Sdf.Layer):
    stack = list(layer.rootPrims)
    while stack:
        ps = stack.pop()
        yield from ps.attributes
        stack.extend(ps.nameChildren)


def _twin_checks(stage: Usd.Stage) -> list[Finding]:
    from ..units import UnitError, check_unit, format_unit

    out = []
    for prim in stage.Traverse(Usd.TraverseInstanceProxies()):
        schemas = _api_schemas(prim)
        has_state = any(s.startswith(STATE_API + ":") for s in schemas)
        if not has_state and not is_twin_asset(prim):
            continue
        where = str(prim.GetPath())
        if has_state and not is_twin_asset(prim):
            out.append(Finding("error", "TwinStateWithoutAsset", where, "declares TwinStateAPI attributes but does not apply TwinAssetAPI"))
        if prim.IsInstanceProxy():
            out.append(Finding("error", "TwinOnInstanceProxy", where, "twin schema declared inside an instance (an instance proxy "
                               "cannot carry its own state); make the instance not instanceable or declare it on the instance root"))
            continue
        try:
            decls = read_attributes(prim)
        except SchemaError as exc:
            out.append(Finding("error", "TwinAttribute", where, str(exc)))
            continue
        for decl, value in decls:
            attr = f"{where}.{decl.attr_name}"
            try:
                check_unit(decl.unit)
            except UnitError as exc:
                out.append(Finding("error", "TwinUnit", attr, str(exc)))
            if decl.type in ("float", "int") and not decl.min <= value <= decl.max:
                out.append(Finding("error", "TwinLimits", attr, f"value {value} outside [{decl.min}, {decl.max}]" + (f" {format_unit(decl.unit)}" if format_unit(decl.unit) else "")))
            if decl.drives and not prim.GetAttribute(decl.drives):
                out.append(Finding("warning", "TwinDrives", attr, f"drives {decl.drives!r}, which the prim does not have"))
    return out


def validate(target: str | os.PathLike[str] | Usd.Stage, *, usd_validators: bool = True) -> list[Finding]:
    """Everything wrong with a stage or file: OpenUSD validators, stage conventions, twin schema.

    A file that cannot be opened yields one error finding instead of an exception.
    """
    if isinstance(target, Usd.Stage):
        stage = target
    else:
        try:
            stage = open_stage(target)
        except Exception as exc:
            return [Finding("error", "Open", str(target), str(exc))]
    findings: list[Finding] = []
    if usd_validators:
        findings += _usd_validation(stage)
    findings += _stage_checks(stage)
    findings += _twin_checks(stage)
    findings += _binding_checks(stage)
    return findings


def _binding_checks(stage: Usd.Stage) -> list[Finding]:
    """Telemetry bindings: malformed specs, and targets the twin does not declare or cannot convert to."""
    from ..units import UnitError, converter
    from ._binding import read_bindings

    try:
        bindings = read_bindings(stage)
    except SchemaError as exc:
        return [Finding("error", "TwinBinding", str(stage.GetRootLayer().identifier), str(exc))]
    out = []
    for b in bindings:
        where = f"{b.prim}.twin:binding:{b.name}"
        prim = stage.GetPrimAtPath(b.prim)
        decl = None
        try:
            decl = next((d for d, _ in read_attributes(prim) if d.name == b.attribute), None) if prim else None
        except SchemaError:
            pass  # reported by the twin checks
        if decl is None:
            out.append(Finding("error", "TwinBindingTarget", where, f"feeds twin:{b.attribute}, which {b.prim} does not declare"))
            continue
        if b.unit:
            try:
                converter(b.unit, decl.unit)
            except UnitError as exc:
                out.append(Finding("error", "TwinBindingUnit", where, f"source unit {b.unit!r} cannot feed twin:{b.attribute} ({decl.unit!r}): {exc}"))
    return out


def summary(findings: list[Finding]) -> dict[str, Any]:
    return {
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
    }
