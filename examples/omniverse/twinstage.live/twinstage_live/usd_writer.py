"""Write twin values into a session sublayer of a stage, one ``Sdf.ChangeBlock`` per update.

The layer is anonymous and inserted as the strongest sublayer of the stage's session
layer, so the values win over the scene's own without editing any file, and removing
it (``detach``) restores the scene. Attribute specs are resolved once, when the hello
arrives (Usd API is used only then, never inside a change block); each update then
only sets ``spec.default`` values.
"""

from __future__ import annotations

from typing import Any

from pxr import Gf, Sdf, Usd

_TYPES = {"float": Sdf.ValueTypeNames.Double, "int": Sdf.ValueTypeNames.Int64, "bool": Sdf.ValueTypeNames.Bool, "vec3": Sdf.ValueTypeNames.Double3}
_VEC = {"double3": Gf.Vec3d, "float3": Gf.Vec3f, "half3": Gf.Vec3h, "point3d": Gf.Vec3d, "point3f": Gf.Vec3f, "vector3d": Gf.Vec3d, "vector3f": Gf.Vec3f}


def _converter(type_name: Any, kind: str):
    tn = str(type_name)
    if kind == "vec3":
        vec = _VEC.get(tn, Gf.Vec3d)
        return lambda v: vec(float(v[0]), float(v[1]), float(v[2]))
    if tn == "bool":
        return lambda v: bool(v)
    if tn.startswith("int") or tn.startswith("uint") or tn == "uchar":
        return lambda v: int(v)
    return lambda v: float(v)


class SessionLayerWriter:
    def __init__(self, stage: Usd.Stage, *, name: str = "twinstage-live.usda"):
        self.stage = stage
        self.layer = Sdf.Layer.CreateAnonymous(name)
        stage.GetSessionLayer().subLayerPaths.insert(0, self.layer.identifier)
        self.specs: dict[int, list[tuple[Sdf.AttributeSpec, Any]]] = {}
        self.missing: list[str] = []
        self.updates = 0
        self.values_written = 0

    def bind(self, hello: dict[str, Any]) -> None:
        """Resolve (and create in the session sublayer) a spec per attribute of the hello's table."""
        self.specs.clear()
        self.missing = []
        plan = []
        for a in hello["attributes"]:
            prim = self.stage.GetPrimAtPath(a["prim"])
            if not prim:
                self.missing.append(a["prim"])
                continue
            targets = [f"twin:{a['attribute']}"] + [d for d in a.get("drives", "").split(",") if d]
            for name in targets:
                attr = prim.GetAttribute(name)
                type_name = attr.GetTypeName() if attr else _TYPES[a["type"]]
                plan.append((a["index"], a["prim"], name, type_name, a["type"]))
        with Sdf.ChangeBlock():
            for index, prim_path, name, type_name, kind in plan:
                ps = Sdf.CreatePrimInLayer(self.layer, prim_path)
                spec = ps.attributes.get(name) or Sdf.AttributeSpec(ps, name, type_name)
                self.specs.setdefault(index, []).append((spec, _converter(type_name, kind)))

    def apply(self, indices: Any, values: Any, vec3_indices: Any = (), vec3_values: Any = ()) -> int:
        """Write one update (flat indices + values, vec3 values as (m, 3)); returns values written."""
        n = 0
        specs = self.specs
        with Sdf.ChangeBlock():
            for i, v in zip(list(indices), list(values)):
                for spec, conv in specs.get(int(i), ()):
                    spec.default = conv(v)
                    n += 1
            for i, v in zip(list(vec3_indices), list(vec3_values)):
                for spec, conv in specs.get(int(i), ()):
                    spec.default = conv(v)
                    n += 1
        self.updates += 1
        self.values_written += n
        return n

    def detach(self) -> None:
        """Remove the sublayer: the stage shows its own values again."""
        subs = self.stage.GetSessionLayer().subLayerPaths
        if self.layer.identifier in subs:
            subs.remove(self.layer.identifier)
