"""Mapping files: telemetry bindings written by hand, validated, then stored in USD.

A mapping file (TOML, or YAML when pyyaml is installed) lists bindings — which
column / topic / NodeId / tag / ingest key feeds which prim attribute — under
``[[bindings]]`` (``prim``, ``attribute``, ``kind``, ``key``, ``unit``, ``scale``,
``offset``, ``period``, ``align``, ``staleAfter``, ``name``), with optional
``[defaults]`` and ``[defaults.<kind>]`` tables: a binding's own field beats
``[defaults.<kind>]``, which beats ``[defaults]``, which beats the built-in
defaults of :class:`~twinstage.telemetry.Binding`. Format and examples:
docs/telemetry.md#bindings and examples/telemetry/.

:func:`load_mapping` checks the file alone (types, ranges, unknown fields, YAML
aliases, size); :func:`validate_mapping` checks it against a scene (unknown prim,
unknown attribute, incompatible unit through :func:`resolve`);
:func:`write_bindings_layer` writes the bindings into a layer over the scene. Every
error names the file, the binding's index and key, and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from ._binding import Binding, resolve
from ._source import TelemetryError

#: mapping files larger than this are refused before parsing (a 100k-binding file is ~15 MB)
MAX_BYTES = 16 * 1024 * 1024
#: at most this many problems are listed in one error message
MAX_LISTED = 10

Kind = Literal["csv", "parquet", "mqtt", "opcua", "sql", "ingest"]
Align = Literal["hold", "linear", "mean"]
Finite = Annotated[float, Field(allow_inf_nan=False)]
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class MappingError(TelemetryError):
    """A mapping file is malformed or does not fit its scene; the message names file, binding and field."""


class _Common(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    unit: Optional[str] = None
    scale: Optional[Finite] = None
    offset: Optional[Finite] = None
    period: Optional[Annotated[float, Field(allow_inf_nan=False, ge=0)]] = None
    align: Optional[Align] = None
    stale_after: Optional[Annotated[float, Field(allow_inf_nan=False, gt=0)]] = Field(
        None, validation_alias=AliasChoices("staleAfter", "stale_after")
    )


class _KindDefaults(_Common):
    pass


class _Defaults(_Common):
    kind: Optional[Kind] = None
    csv: Optional[_KindDefaults] = None
    parquet: Optional[_KindDefaults] = None
    mqtt: Optional[_KindDefaults] = None
    opcua: Optional[_KindDefaults] = None
    sql: Optional[_KindDefaults] = None
    ingest: Optional[_KindDefaults] = None


class _BindingSpec(_Common):
    prim: Annotated[str, Field(pattern=r"^/\S*$", max_length=4096)]
    attribute: Annotated[str, Field(pattern=_IDENT, max_length=256)]
    kind: Optional[Kind] = None
    key: Annotated[str, Field(min_length=1, max_length=4096)]
    name: Optional[Annotated[str, Field(pattern=_IDENT, max_length=256)]] = None


class _MappingFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    version: Literal[1] = 1
    description: str = ""
    defaults: _Defaults = _Defaults()
    bindings: Annotated[list[_BindingSpec], Field(min_length=1)]


@dataclasses.dataclass(frozen=True)
class Mapping:
    """A loaded mapping file: its bindings with defaults applied and names filled in."""

    file: str
    bindings: tuple[Binding, ...]
    description: str = ""


def _fail(file: str, problems: list[str]) -> MappingError:
    more = len(problems) - MAX_LISTED
    text = "\n  ".join(problems[:MAX_LISTED]) + (f"\n  ... and {more} more" if more > 0 else "")
    return MappingError(f"{file}: {text}" if len(problems) == 1 else f"{file}: {len(problems)} problems:\n  {text}")


def _describe_loc(loc: tuple[Any, ...], data: Any) -> str:
    """('bindings', 3, 'period') → "bindings[3] (key 'Pressure'): period"."""
    parts: list[str] = []
    where = ""
    for i, item in enumerate(loc):
        if isinstance(item, int) and i > 0 and loc[i - 1] == "bindings":  # the only list; other ints are YAML keys
            parts[-1] += f"[{item}]"
            if i == 1 and isinstance(data, dict):
                try:
                    key = data["bindings"][item].get("key")
                except (AttributeError, IndexError, KeyError, TypeError):
                    key = None
                if isinstance(key, str):
                    where = f" (key {key[:80]!r})"
        else:
            parts.append(str(item))
    head, _, field = ".".join(parts).partition("].")
    if field:
        return f"{head}]{where}: {field}"
    return ".".join(parts) + where


def _pydantic_problems(exc: ValidationError, data: Any) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) else f" (got {got!r:.80})"
        out.append(f"{_describe_loc(loc, data) or 'file'}: {msg}{shown}")
    return out


def _load_toml(text: str, file: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise MappingError(f"{file}: not valid TOML: nested too deeply") from None


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """Safe loading without anchors/aliases (an alias bomb expands exponentially on
        validation), and YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-3`` as a string."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in mapping files", event.start_mark)
            return super().compose_node(parent, index)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader


def _load_yaml(text: str, file: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is in the dev extra
        raise MappingError(f"{file}: reading YAML needs pyyaml (pip install pyyaml), or write the mapping as TOML") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MappingError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise MappingError(f"{file}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # constructors: !!int "x", a 13th month, ...
        raise MappingError(f"{file}: not valid YAML: {exc}") from None


def _merged(spec: _BindingSpec, defaults: _Defaults) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = spec.kind or defaults.kind
    layers = [{k: v for k, v in defaults.model_dump(exclude_none=True).items() if k in _Common.model_fields}]
    per_kind = getattr(defaults, kind) if kind else None
    if per_kind is not None:
        layers.append(per_kind.model_dump(exclude_none=True))
    layers.append({k: v for k, v in spec.model_dump(exclude_none=True).items() if k in _Common.model_fields})
    for layer in layers:
        out.update(layer)
    out["kind"] = kind
    return out


def parse_mapping(text: str | bytes, fmt: str, file: str = "<mapping>") -> Mapping:
    """Parse and check mapping text (``fmt`` ``'toml'`` or ``'yaml'``) without a scene."""
    from ..usd._binding import binding_name, check_binding
    from ..usd._schema import SchemaError

    if len(text) > MAX_BYTES:
        raise MappingError(f"{file}: {len(text)} bytes, more than the {MAX_BYTES // (1024 * 1024)} MiB a mapping file may have")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MappingError(f"{file}: not UTF-8 text (byte {exc.start}: {text[exc.start:exc.start + 1]!r})") from None
    if "\x00" in text:
        raise MappingError(f"{file}: contains NUL bytes (a binary file?)")
    if fmt == "toml":
        data = _load_toml(text, file)
    elif fmt == "yaml":
        data = _load_yaml(text, file)
    else:
        raise MappingError(f"{file}: unknown mapping format {fmt!r} (use .toml, .yaml or .yml)")
    if not isinstance(data, dict):
        raise MappingError(f"{file}: the top level must be a table/mapping with a 'bindings' list, got {type(data).__name__}")
    try:
        parsed = _MappingFile.model_validate(data)
    except ValidationError as exc:
        raise _fail(file, _pydantic_problems(exc, data)) from None
    problems = []
    bindings = []
    seen: dict[tuple[str, str], int] = {}
    for i, spec in enumerate(parsed.bindings):
        where = f"bindings[{i}] (key {spec.key[:80]!r})"
        fields = _merged(spec, parsed.defaults)
        if fields["kind"] is None:
            problems.append(f"{where}: kind: required (in the binding or in [defaults])")
            continue
        b = Binding(prim=spec.prim, attribute=spec.attribute, key=spec.key, name=spec.name or "", **fields)
        b = dataclasses.replace(b, name=binding_name(b))
        try:
            check_binding(b, where)
        except SchemaError as exc:
            problems.append(str(exc))
            continue
        other = seen.setdefault((b.prim, b.name), i)
        if other != i:
            problems.append(f"{where}: name: {b.name!r} is already used on {b.prim} by bindings[{other}] (give one a distinct name)")
        bindings.append(b)
    if problems:
        raise _fail(file, problems)
    return Mapping(file, tuple(bindings), parsed.description)


def load_mapping(path: str | os.PathLike[str]) -> Mapping:
    """Read and check a mapping file (``.toml``; ``.yaml``/``.yml`` with pyyaml)."""
    p = Path(path)
    suffix = p.suffix.lower()
    fmt = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}.get(suffix)
    if fmt is None:
        raise MappingError(f"{p}: unknown mapping file type {suffix!r} (use .toml, .yaml or .yml)")
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise MappingError(f"{p}: {size} bytes, more than the {MAX_BYTES // (1024 * 1024)} MiB a mapping file may have")
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise MappingError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise MappingError(f"{p}: is a directory, not a mapping file") from None
    except OSError as exc:
        raise MappingError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return parse_mapping(raw, fmt, str(p))


def scene_table(stage: Any) -> Any:
    """The StateTable a twin would build from ``stage`` (twin prims and their declared attributes)."""
    from ..state import Declaration, StateTable
    from ..usd import read_asset, read_attributes, twin_prims

    prims = twin_prims(stage)
    decls = []
    for prim in prims:
        path = read_asset(prim).path
        for d, value in read_attributes(prim):
            decls.append(Declaration(path, d.name, d.type, value, d.unit, d.min, d.max, d.role, d.drives, d.description))
    return StateTable([str(p.GetPath()) for p in prims], decls)


def validate_mapping(mapping: Mapping, stage: Any, table: Any = None) -> list[Binding]:
    """Check every binding of ``mapping`` against ``stage``: the prim exists and is a twin
    asset, it declares the attribute, and the source unit converts to the attribute's unit.

    Raises :class:`MappingError` listing every problem (file, binding index and key, field).
    """
    from ..usd._schema import STATE_API, is_twin_asset

    table = scene_table(stage) if table is None else table
    problems = []
    for i, b in enumerate(mapping.bindings):
        where = f"bindings[{i}] (key {b.key[:80]!r})"
        prim = stage.GetPrimAtPath(b.prim) if _valid_path(b.prim) else None
        if not prim or not prim.IsValid():
            problems.append(f"{where}: prim: no prim {b.prim} in the scene")
            continue
        if not is_twin_asset(prim):
            problems.append(f"{where}: prim: {b.prim} is not a twin asset (no TwinAssetAPI)")
            continue
        op = prim.GetMetadata("apiSchemas")
        declared = sorted(s.split(":", 1)[1] for s in (op.ApplyOperations([]) if op else []) if s.startswith(STATE_API + ":"))
        if b.attribute not in declared:
            problems.append(f"{where}: attribute: {b.prim} declares no twin:{b.attribute} (it has: {', '.join(declared) or 'none'})")
            continue
        try:
            resolve(table, b)
        except TelemetryError as exc:
            field = "unit" if "unit" in str(exc) else "attribute"
            problems.append(f"{where}: {field}: {exc}")
    if problems:
        raise _fail(mapping.file, problems)
    return list(mapping.bindings)


def _valid_path(text: str) -> bool:
    from pxr import Sdf

    return bool(re.match(r"^/[^\s]*$", text)) and Sdf.Path.IsValidPathString(text) and Sdf.Path(text).IsPrimPath()


def default_layer_path(scene: str | os.PathLike[str]) -> Path:
    """``<scene>_bindings.usda`` beside the scene."""
    p = Path(scene)
    return p.with_name(f"{p.stem}_bindings.usda")


def write_bindings_layer(scene: str | os.PathLike[str], mapping: Mapping, out: str | os.PathLike[str] | None = None) -> tuple[Path, list[Binding]]:
    """Validate ``mapping`` against ``scene`` and write its bindings into a layer of their own.

    The layer (default ``<scene>_bindings.usda`` beside the scene) *sublayers the
    scene* by a relative path and holds only ``over`` prims with the
    ``TwinBindingAPI`` properties, plus the stage metadata a root layer must carry
    (defaultPrim, upAxis, metersPerUnit, timeCodesPerSecond). Open it instead of the
    scene to get the scene with its bindings; the scene file itself is never
    touched (DESIGN: base asset layers are never modified by a run). It is
    rewritten from the mapping file each time (same inputs, same bytes) and saved
    atomically.
    """
    import hashlib

    from pxr import Sdf, UsdGeom

    from .. import __version__
    from ..usd import BINDING_API, open_stage
    from ..usd._binding import author_bindings, binding_name, check_binding
    from ..usd._schema import SchemaError

    scene_p = Path(scene)
    out_p = Path(out) if out is not None else default_layer_path(scene_p)
    if out_p.suffix.lower() not in (".usda", ".usd", ".usdc"):
        raise MappingError(f"{out_p}: the bindings layer must be .usda, .usd or .usdc")
    base = open_stage(scene_p)
    if out_p.exists() and out_p.resolve() in {Path(lay.realPath).resolve() for lay in base.GetUsedLayers() if lay.realPath}:
        raise MappingError(f"{out_p}: is a layer of the scene itself; bindings go into a layer of their own (pick another -o)")
    bindings = validate_mapping(mapping, base)

    layer = Sdf.Layer.CreateAnonymous("bindings.usda")
    src_root = base.GetRootLayer()
    if src_root.HasDefaultPrim():
        layer.defaultPrim = src_root.defaultPrim
    root = layer.pseudoRoot
    root.SetInfo("upAxis", UsdGeom.GetStageUpAxis(base))
    root.SetInfo("metersPerUnit", UsdGeom.GetStageMetersPerUnit(base))
    if base.HasAuthoredTimeCodeRange() or src_root.HasTimeCodesPerSecond():
        layer.timeCodesPerSecond = base.GetTimeCodesPerSecond()
    written = []
    for i, b in enumerate(bindings):
        b = dataclasses.replace(b, name=binding_name(b))
        try:
            check_binding(b, f"{b.prim}: binding {b.name!r}")
        except SchemaError as exc:
            raise _fail(mapping.file, [f"bindings[{i}] (key {b.key[:80]!r}): {exc}"]) from None
        written.append(b)
    author_bindings(layer, written)
    rel = os.path.relpath(scene_p.resolve(), out_p.parent.resolve())
    mapping_rel = os.path.relpath(Path(mapping.file).resolve(), out_p.parent.resolve()) if Path(mapping.file).exists() else mapping.file
    digest = hashlib.sha256(Path(mapping.file).read_bytes()).hexdigest() if Path(mapping.file).exists() else ""
    layer.comment = f"Telemetry bindings for {Path(rel).name}, written by `twinstage bind` from {Path(mapping_rel).name}; open this file for the scene with its bindings"
    layer.customLayerData = {"twinstage": {"tool": "twinstage bind", "version": __version__, "scene": rel, "mapping": mapping_rel, "mappingSha256": digest, "bindings": len(written)}}
    layer.subLayerPaths.append(rel if rel.startswith(".") else f"./{rel}")
    out_p.parent.mkdir(parents=True, exist_ok=True)
    if not layer.Export(str(out_p)):
        raise MappingError(f"{out_p}: could not write the bindings layer")
    reopened = Sdf.Layer.Find(str(out_p))
    if reopened is not None:
        reopened.Reload(force=True)
    # the written file composes over the scene (its relative sublayer resolves) and applies every binding
    stage = open_stage(out_p)
    missing = []
    for b in written:
        op = stage.GetPrimAtPath(b.prim).GetMetadata("apiSchemas")
        if not op or f"{BINDING_API}:{b.name}" not in op.ApplyOperations([]):
            missing.append(f"{b.prim}:{b.name}")
    if missing:  # pragma: no cover - would be a bug in the writer
        raise MappingError(f"{out_p}: written, but bindings {missing[:5]} do not read back")
    return out_p, written
