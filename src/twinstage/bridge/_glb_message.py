"""``hello.glb``: where the scene's GLB is served (kept beside :mod:`._messages`, same rules)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GLB_DOC = ("the scene's GLB (node extras.twinId = prim path); url '' when the server has none (no stage, more twin prims than its "
           "glb_max_prims, the export failed: status 'none', reason says which); clients then draw a box per asset")


class SceneModel(BaseModel):
    """The scene's geometry as one GLB, served over HTTP on the bridge's port with the same auth."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)

    url: str = Field("", description="path on the bridge's port (resolve against the websocket URL with http(s)), '' when there is none; "
                                     "token by ?token=, Authorization: Bearer or the twinstage_token cookie")
    media_type: Literal["model/gltf-binary"] = "model/gltf-binary"
    bytes: int = Field(0, description="size of the GLB")
    sha256: str = Field("", description="hex digest of the GLB; its first 32 digits are the HTTP ETag")
    up_axis: Literal["Y"] = Field("Y", description="glTF is Y-up; the root node converts to the stage's axes and units, so nodes below "
                                                   "it are in stage units and axes (like prims[].position)")
    meters_per_unit: float = 1.0
    status: Literal["ready", "building", "none"] = Field(
        "none", description="ready: bytes and sha256 describe what url serves; building: a big scene's GLB is being built in the background "
                            "(url set, bytes 0, sha256 ''; GET answers 503 with Retry-After until it is ready, a later hello has bytes and sha256); "
                            "none: no GLB (url '')")
    reason: str = Field("", description="why there is none, or that it is being built ('' when ready)")
