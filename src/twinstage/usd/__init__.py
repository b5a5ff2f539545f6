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
from ._stage import StageError, candidate_assets, create_stage, describe, open_stage, twin_prims

__all__ = [
    "ASSET_API",
    "STATE_API",
    "AssetDecl",
    "AttrDecl",
    "SchemaError",
    "StageError",
    "candidate_assets",
    "create_stage",
    "declare_asset",
    "declare_attribute",
    "describe",
    "is_twin_asset",
    "open_stage",
    "read_asset",
    "read_attributes",
    "register",
    "twin_prims",
]
