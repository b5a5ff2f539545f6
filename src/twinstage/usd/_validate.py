"""Validation: OpenUSD's ``UsdValidation`` validators plus twin-schema checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pxr import Sdf, Usd, UsdGeom, UsdValidation

from ._schema import STATE_API, SchemaError, _api_schemas, is_twin_asset, read_attributes
from ._stage import open_stage


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


def _stage_checks(stage: Usd.Stage) -> list[Finding]:
    out = []
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
    from ..units import UnitError, check_unit

    out = []
    for prim in stage.Traverse():
        schemas = _api_schemas(prim)
        has_state = any(s.startswith(STATE_API + ":") for s in schemas)
        if not has_state and not is_twin_asset(prim):
            continue
        where = str(prim.GetPath())
        if has_state and not is_twin_asset(prim):
            out.append(Finding("error", "TwinStateWithoutAsset", where, "declares TwinStateAPI attributes but does not apply TwinAssetAPI"))
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
                out.append(Finding("error", "TwinLimits", attr, f"value {value} outside [{decl.min}, {decl.max}] {decl.unit}"))
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
    return findings


def summary(findings: list[Finding]) -> dict[str, Any]:
    return {
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
    }
