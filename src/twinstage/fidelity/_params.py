"""Apply a calibration layer (``twinstage calibrate -o params.usda``) to a running twin."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ._calibrate import CalibrationError


def read_params_layer(path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{prim: {param: {"value", "std", "identifiable", "at_bound"}}}`` from a calibration layer."""
    from pxr import Sdf

    path = Path(path)
    try:
        layer = Sdf.Layer.FindOrOpen(str(path))
    except Exception as exc:
        raise CalibrationError(f"{path}: cannot open the calibration layer: {str(exc).strip().splitlines()[-1]}") from None
    if layer is None:
        raise CalibrationError(f"{path}: cannot open the calibration layer")
    if "twinstage:calibration" not in layer.customLayerData:
        raise CalibrationError(f"{path}: not a twinstage calibration layer (no customLayerData twinstage:calibration)")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    specs: list = []
    layer.Traverse(layer.pseudoRoot.path, specs.append)
    for p in specs:
        if p.IsPropertyPath() and p.name.startswith("twin:param:"):
            spec = layer.GetAttributeAtPath(p)
            cd = dict(spec.customData)
            out.setdefault(str(p.GetPrimPath()), {})[p.name[len("twin:param:"):]] = {
                "value": float(spec.default), "std": cd.get("std"), "identifiable": bool(cd.get("identifiable", False)),
                "at_bound": bool(cd.get("at_bound", False)),
            }
    return out


def apply_params(twin: Any, path, *, include_unidentifiable: bool = False) -> dict[str, list[str]]:
    """Set the calibrated parameters on the twin's models; returns ``{"applied": [...], "skipped": [...]}``.

    A parameter the calibration reported as not identifiable (or stuck on a bound) is
    skipped unless ``include_unidentifiable``: a number the data could not determine
    should not silently replace the model's default. Parameters belong to the model
    bound to the layer's prim; a model's parameters are shared by all its prims.
    """
    wanted = read_params_layer(path)
    applied, skipped = [], []
    for prim, params in wanted.items():
        try:
            name = twin.stage.GetPrimAtPath(prim).GetAttribute("twin:model").Get()
        except Exception:
            name = None
        model = twin.models.get(name) if name else None
        current = getattr(model, "params", None)
        if current is None:
            raise CalibrationError(f"{path}: {prim} has no model with parameters in this scene (twin:model {name!r})")
        known = {f.name for f in fields(current)}
        updates = {}
        for key, info in params.items():
            if key not in known:
                raise CalibrationError(f"{path}: {prim}: model {name!r} has no parameter {key!r}")
            if (not info["identifiable"] or info["at_bound"]) and not include_unidentifiable:
                skipped.append(f"{prim}.{key}")
                continue
            updates[key] = info["value"]
            applied.append(f"{prim}.{key}")
        model.params = replace(current, **updates)
    layers = getattr(twin, "params_layers", None)
    if layers is not None:  # the run's provenance names the layer and its bytes
        import hashlib

        layers.append({"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                       "applied": list(applied), "skipped": list(skipped)})
    return {"applied": applied, "skipped": skipped}
