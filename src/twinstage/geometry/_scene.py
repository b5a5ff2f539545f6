"""What the geometry module hands out: objects (twin assets and scenery), parts, prototypes, cards.

Plain data (numpy arrays, dataclasses); matrices are USD row-vector 4×4 float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pxr import Gf, Sdf, Usd

from ._mesh import MeshData

DEFAULT_COLOR = (0.5, 0.5, 0.5)
#: coordinates beyond this are treated as garbage (float32 cannot place them anyway)
HUGE = 1e15


@dataclass
class SceneObject:
    """A pickable unit of the scene: a twin asset or a piece of scenery."""

    path: str
    twin: bool
    matrix: np.ndarray  # (4, 4) float64 local-to-world, row-vector
    kind: str = ""
    type_name: str = ""
    layer: str = ""  # the layer that defines the prim (provenance in the selection panel)


@dataclass
class Part:
    object: int
    mesh: MeshData  # in the object's frame
    source: str  # the gprim it came from


@dataclass
class Prototype:
    """Shared geometry (in its own frame) and the instances that draw it."""

    key: str
    mesh: MeshData
    objects: list[int] = field(default_factory=list)  # per instance: owning object
    locals: list[np.ndarray] = field(default_factory=list)  # per instance: matrix relative to the object


@dataclass
class Card:
    """A textured quad of a model drawn with ``model:drawMode = cards``."""

    object: int
    corners: np.ndarray  # (4, 3) in the object's frame, counter-clockwise, uv (0,0) (1,0) (1,1) (0,1)
    image: str  # resolved texture path ('' → drawModeColor)
    color: tuple[float, float, float]


@dataclass
class SceneGeometry:
    objects: list[SceneObject]
    parts: list[Part]
    prototypes: list[Prototype]
    cards: list[Card]
    up_axis: str
    meters_per_unit: float
    notes: list[str]
    time: float | None
    n_twin: int = 0

    @property
    def object_index(self) -> dict[str, int]:
        return {o.path: i for i, o in enumerate(self.objects)}

    def stats(self) -> dict[str, int]:
        tris = sum(p.mesh.n_triangles for p in self.parts) + sum(p.mesh.n_triangles * len(p.objects) for p in self.prototypes)
        return {"objects": len(self.objects), "parts": len(self.parts), "prototypes": len(self.prototypes),
                "instances": sum(len(p.objects) for p in self.prototypes), "triangles": int(tris), "cards": len(self.cards)}

    def local_bounds(self) -> np.ndarray:
        """(n_objects, 2, 3) bounds of each object's geometry in its own frame (NaN where it has none)."""
        b = np.full((len(self.objects), 2, 3), np.nan)

        def grow(i: int, lo: np.ndarray, hi: np.ndarray) -> None:
            if np.isnan(b[i, 0, 0]):
                b[i, 0], b[i, 1] = lo, hi
            else:
                b[i, 0] = np.minimum(b[i, 0], lo)
                b[i, 1] = np.maximum(b[i, 1], hi)

        for p in self.parts:
            lo, hi = p.mesh.bounds()
            grow(p.object, lo, hi)
        for proto in self.prototypes:
            lo, hi = proto.mesh.bounds()
            corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            for o, m in zip(proto.objects, proto.locals):
                c = corners @ m
                grow(o, c[:, :3].min(axis=0), c[:, :3].max(axis=0))
        for card in self.cards:
            grow(card.object, card.corners.min(axis=0), card.corners.max(axis=0))
        return b

    def world_bounds(self) -> np.ndarray | None:
        """(2, 3) world AABB of everything drawn, or None for an empty scene."""
        lb = self.local_bounds()
        have = ~np.isnan(lb[:, 0, 0])
        if not have.any():
            return None
        mats = np.stack([self.objects[i].matrix for i in np.flatnonzero(have)])
        lo, hi = lb[have, 0], lb[have, 1]
        corners = np.stack([np.stack([np.where(bits[0], hi[:, 0], lo[:, 0]), np.where(bits[1], hi[:, 1], lo[:, 1]),
                                      np.where(bits[2], hi[:, 2], lo[:, 2])], axis=1) for bits in np.ndindex(2, 2, 2)], axis=1)
        w = np.einsum("nkj,nji->nki", np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=2), mats)[..., :3]
        w = w.reshape(-1, 3)
        w = w[np.isfinite(w).all(axis=1)]
        if not len(w):
            return None
        return np.stack([w.min(axis=0), w.max(axis=0)])


def defining_layer(prim: Usd.Prim) -> str:
    """The (non-anonymous) layer whose spec defines ``prim`` (``def``), else its weakest named layer."""
    named = [s for s in prim.GetPrimStack() if not s.layer.anonymous]
    for spec in named:
        if spec.specifier == Sdf.SpecifierDef:
            return spec.layer.realPath or spec.layer.identifier
    if named:
        return named[-1].layer.realPath or named[-1].layer.identifier
    return "(in-memory layer)" if prim.GetPrimStack() else ""


def _mat(m: Gf.Matrix4d) -> np.ndarray:
    return np.array(m, dtype=np.float64).reshape(4, 4)


def _finite_matrix(m: np.ndarray) -> bool:
    return bool(np.isfinite(m).all()) and float(np.abs(m[3, :3]).max(initial=0.0)) < HUGE


def _relative(world: np.ndarray, owner_world: np.ndarray) -> np.ndarray | None:
    """``world`` expressed in the frame of ``owner_world`` (None if that frame is singular)."""
    try:
        inv = np.linalg.inv(owner_world)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(inv).all():
        return None
    return world @ inv


