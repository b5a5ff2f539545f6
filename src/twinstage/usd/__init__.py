"""The USD side: stages, the twin schema, live writers, the recorder, validation."""

from ._schema import (
    ASSET_API,
    STATE_API,
    AssetDecl,
    AttrDecl,
    SchemaError,
    declare_asset,
    declare_attribute,
    is_twin_asset,
    read_asset,
    read_attributes,
    register,
)
from ._binding import BINDING_API, declare_binding, read_bindings
from ._read import TwinDescription, read_twin
from ._stage import StageError, candidate_assets, create_stage, describe, open_stage, twin_prims

__all__ = [
    "ASSET_API",
    "BINDING_API",
    "STATE_API",
    "AssetDecl",
    "AttrDecl",
    "SchemaError",
    "StageError",
    "TwinDescription",
    "candidate_assets",
    "create_stage",
    "declare_asset",
    "declare_attribute",
    "declare_binding",
    "describe",
    "is_twin_asset",
    "open_stage",
    "read_asset",
    "read_attributes",
    "read_twin",
    "read_bindings",
    "register",
    "twin_prims",
]
