"""The twin schema: declare twin assets and their state attributes on USD prims.

Two codeless applied API schemas (see ``schema/schema.usda``):

* ``TwinAssetAPI`` (single-apply) marks a prim as a twin asset
  (``twin:assetId``, ``twin:kind``, ``twin:model``).
* ``TwinStateAPI:<name>`` (multiple-apply) declares the state attribute
  ``twin:<name>`` with ``twin:<name>:unit``, ``:min``, ``:max``, ``:description``,
  ``:role`` and ``:drives``.

Every schema property is authored explicitly, so a reader without our plugin
(Omniverse, usdview, Unity) sees the same values; the plugin only adds fallbacks
and documentation. Reading goes through the raw ``apiSchemas`` list op for the
same reason.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxr import Gf, Plug, Sdf, Usd

ASSET_API = "TwinAssetAPI"
STATE_API = "TwinStateAPI"
NAMESPACE = "twin"
ROLES = ("state", "input", "parameter", "measured")
_META_FIELDS = ("unit", "min", "max", "description", "role", "drives")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: twin value types and the USD value type each is authored with
VALUE_TYPES: dict[str, Any] = {
    "float": Sdf.ValueTypeNames.Double,
    "int": Sdf.ValueTypeNames.Int64,
    "bool": Sdf.ValueTypeNames.Bool,
    "vec3": Sdf.ValueTypeNames.Double3,
}
_USD_TO_TWIN = {
    "double": "float",
    "float": "float",
    "half": "float",
    "int": "int",
    "int64": "int",
    "uint": "int",
    "uint64": "int",
    "uchar": "int",
    "bool": "bool",
    "double3": "vec3",
    "float3": "vec3",
    "point3d": "vec3",
    "point3f": "vec3",
    "vector3d": "vec3",
    "vector3f": "vec3",
}

_registered = False


class SchemaError(ValueError):
    """A twin declaration is malformed; the message names the prim and attribute."""


def register() -> None:
    """Register the twin schema plugin with USD (idempotent, cheap after the first call)."""
    global _registered
    if not _registered:
        Plug.Registry().RegisterPlugins(str(Path(__file__).with_name("schema")))
        _registered = True


@dataclass(frozen=True)
class AttrDecl:
    """One declared twin state attribute ``twin:<name>`` of a prim."""

    name: str
    type: str  # float | int | bool | vec3
    unit: str = ""
    min: float = -math.inf
    max: float = math.inf
    description: str = ""
    role: str = "state"
    drives: str = ""

    @property
    def attr_name(self) -> str:
        return f"{NAMESPACE}:{self.name}"


@dataclass(frozen=True)
class AssetDecl:
    path: str
    kind: str = ""
    asset_id: str = ""
    model: str = ""


def _api_schemas(prim: Usd.Prim) -> list[str]:
    op = prim.GetMetadata("apiSchemas")
    if not op:
        return []
    return list(op.ApplyOperations([]))


def is_twin_asset(prim: Usd.Prim) -> bool:
    return ASSET_API in _api_schemas(prim)


_RESERVED = frozenset({"binding"})


def _not_instance_proxy(prim: Usd.Prim) -> None:
    """USD refuses edits on an instance proxy with a bare Tf error; say what to do instead."""
    if prim.IsInstanceProxy():
        raise SchemaError(f"{prim.GetPath()}: is inside an instance (an instance proxy cannot be edited); "
                          "declare twin schema on the instance root or make the instance not instanceable")


def declare_asset(prim: Usd.Prim, *, kind: str = "", asset_id: str = "", model: str = "") -> Usd.Prim:
    """Apply ``TwinAssetAPI`` to ``prim`` and author its properties explicitly."""
    if not prim or not prim.IsValid():
        raise SchemaError(f"{prim}: not a valid prim")
    _not_instance_proxy(prim)
    if ASSET_API not in _api_schemas(prim):
        prim.AddAppliedSchema(ASSET_API)
    for name, value, vtype in (
        ("twin:assetId", asset_id, Sdf.ValueTypeNames.String),
        ("twin:kind", kind, Sdf.ValueTypeNames.Token),
        ("twin:model", model, Sdf.ValueTypeNames.Token),
    ):
        prim.CreateAttribute(name, vtype, custom=False, variability=Sdf.VariabilityUniform).Set(value)
    return prim


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (USD would store True as 1.0 and "1.5" not at all)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy bools are not Real


def _check_value(prim_path: str, decl: AttrDecl, value: Any) -> Any:
    where = f"{prim_path}.{decl.attr_name}"
    if decl.type == "vec3":
        if isinstance(value, (str, bytes)):
            raise SchemaError(f"{where}: expected 3 numbers, got {value!r}")
        try:
            comps = list(value)
        except TypeError as exc:
            raise SchemaError(f"{where}: expected 3 numbers, got {value!r}") from exc
        if len(comps) != 3 or not all(_is_number(c) and math.isfinite(c) for c in comps):
            raise SchemaError(f"{where}: expected 3 finite numbers, got {value!r}")
        return Gf.Vec3d(*(float(c) for c in comps))
    if decl.type == "bool":
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise SchemaError(f"{where}: expected a bool, got {value!r}")
        return bool(value)
    if not _is_number(value):
        expected = "an integer" if decl.type == "int" else "a number"
        raise SchemaError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")
    if decl.type == "int" and not float(value).is_integer():
        raise SchemaError(f"{where}: expected an integer, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SchemaError(f"{where}: value must be finite, got {value!r}")
    if not decl.min <= v <= decl.max:
        raise SchemaError(f"{where}: {value} is outside its limits [{decl.min}, {decl.max}]")
    return int(value) if decl.type == "int" else v


def declare_attribute(
    prim: Usd.Prim,
    name: str,
    type: str,
    value: Any,
    *,
    unit: str = "",
    min: float = -math.inf,
    max: float = math.inf,
    description: str = "",
    role: str = "state",
    drives: str = "",
) -> Usd.Attribute:
    """Declare the twin state attribute ``twin:<name>`` on ``prim`` and author its value.

    ``type`` is one of ``float``, ``int``, ``bool``, ``vec3``. The unit is checked
    to be one pint understands; the value must be finite and within the limits.
    """
    path = str(prim.GetPath())
    _not_instance_proxy(prim)
    if not _NAME_RE.match(name):
        raise SchemaError(f"{path}: twin attribute name {name!r} must be an identifier")
    if name in _RESERVED:
        raise SchemaError(f"{path}: twin:{name} is reserved (twin:binding:* holds telemetry bindings); choose another name")
    if type not in VALUE_TYPES:
        raise SchemaError(f"{path}.twin:{name}: unknown type {type!r}; use one of {sorted(VALUE_TYPES)}")
    if role not in ROLES:
        raise SchemaError(f"{path}.twin:{name}: unknown role {role!r}; use one of {ROLES}")
    if not min <= max:
        raise SchemaError(f"{path}.twin:{name}: min {min} is above max {max}")
    from twinstage.units import check_unit

    check_unit(unit, where=f"{path}.twin:{name}")
    decl = AttrDecl(name, type, unit, float(min), float(max), description, role, drives)
    usd_value = _check_value(path, decl, value)
    existing = prim.GetAttribute(decl.attr_name)
    if existing and existing.GetTypeName() != VALUE_TYPES[type]:
        # USD would silently convert (1.5 -> 1 on an int) or raise a bare Tf error
        raise SchemaError(f"{path}.{decl.attr_name}: already declared as {existing.GetTypeName()}, cannot redeclare as {type!r}")
    instance = f"{STATE_API}:{name}"
    if instance not in _api_schemas(prim):
        prim.AddAppliedSchema(instance)
    uniform = Sdf.VariabilityUniform
    meta = {
        "unit": (unit, Sdf.ValueTypeNames.String),
        "min": (float(min), Sdf.ValueTypeNames.Double),
        "max": (float(max), Sdf.ValueTypeNames.Double),
        "description": (description, Sdf.ValueTypeNames.String),
        "role": (role, Sdf.ValueTypeNames.Token),
        "drives": (drives, Sdf.ValueTypeNames.Token),
    }
    for field, (v, vtype) in meta.items():
        prim.CreateAttribute(f"{NAMESPACE}:{name}:{field}", vtype, custom=False, variability=uniform).Set(v)
    attr = prim.CreateAttribute(decl.attr_name, VALUE_TYPES[type], custom=False)
    attr.Set(usd_value)
    if description:
        attr.SetDocumentation(description)
    return attr


def read_asset(prim: Usd.Prim) -> AssetDecl | None:
    if not is_twin_asset(prim):
        return None

    def get(name: str) -> str:
        a = prim.GetAttribute(name)
        v = a.Get() if a else None
        return str(v) if v is not None else ""

    return AssetDecl(str(prim.GetPath()), get("twin:kind"), get("twin:assetId"), get("twin:model"))


def read_attributes(prim: Usd.Prim) -> list[tuple[AttrDecl, Any]]:
    """All declared twin attributes of ``prim`` with their current values (python types).

    Raises :class:`SchemaError` naming the prim and attribute when a declaration
    has no value attribute, an unsupported type, a non-finite value or bad limits.
    """
    path = str(prim.GetPath())
    out: list[tuple[AttrDecl, Any]] = []
    schemas = [s for s in _api_schemas(prim) if s.startswith(STATE_API + ":")]
    if not schemas:
        return out
    # one call for all of the prim's attributes: ~2x faster than GetAttribute per name
    attrs = {a.GetName(): a for a in prim.GetAttributes()}
    for schema in schemas:
        name = schema.split(":", 1)[1]
        where = f"{path}.{NAMESPACE}:{name}"
        attr = attrs.get(f"{NAMESPACE}:{name}")
        if not attr or not attr.HasAuthoredValue():
            raise SchemaError(f"{where}: declared by {schema} but has no authored value")
        type_name = attr.GetTypeName()
        twin_type = _USD_TO_TWIN.get(str(type_name))
        if twin_type is None:
            raise SchemaError(f"{where}: unsupported value type {type_name} ({type_name.cppTypeName or type_name.type.typeName})")
        meta: dict[str, Any] = {}
        for field in _META_FIELDS:
            a = attrs.get(f"{NAMESPACE}:{name}:{field}")
            v = a.Get() if a is not None else None
            if v is not None:
                meta[field] = v
        decl = AttrDecl(
            name,
            twin_type,
            str(meta.get("unit", "")),
            float(meta.get("min", -math.inf)),
            float(meta.get("max", math.inf)),
            str(meta.get("description", "")),
            str(meta.get("role", "state")),
            str(meta.get("drives", "")),
        )
        if decl.role not in ROLES:
            raise SchemaError(f"{where}: unknown role {decl.role!r}; use one of {ROLES}")
        if not decl.min <= decl.max:
            raise SchemaError(f"{where}: min {decl.min} is above max {decl.max}")
        value = attr.Get()
        if twin_type == "vec3":
            value = tuple(float(c) for c in value)
            if not all(math.isfinite(c) for c in value):
                raise SchemaError(f"{where}: value {value} is not finite")
        elif twin_type == "float":
            value = float(value)
            if not math.isfinite(value):
                raise SchemaError(f"{where}: value {value} is not finite")
        elif twin_type == "int":
            value = int(value)
        else:
            value = bool(value)
        out.append((decl, value))
    return out
