"""Model draw modes (``bounds``, ``origin``, ``cards``): what a model looks like when it is not drawn in full."""

from __future__ import annotations

import numpy as np
from pxr import Sdf, Usd, UsdGeom

from . import _shapes as shapes
from ._scene import Card, Part, _mat, _relative


class DrawModes:
    """Mixin of the extractor: needs ``time``, ``xf``, ``objects``, ``parts``, ``cards``, ``owner`` and ``note``."""

    # -- draw modes --------------------------------------------------------------------
    def _draw_mode_geometry(self, prim: Usd.Prim, mode: str) -> None:
        bbox = UsdGeom.BBoxCache(self.time, [UsdGeom.Tokens.default_, UsdGeom.Tokens.render], useExtentsHint=True)
        box = bbox.ComputeUntransformedBound(prim).ComputeAlignedRange()
        o = self.owner(prim)
        world = _mat(self.xf.GetLocalToWorldTransform(prim))
        rel = _relative(world, self.objects[o].matrix)
        if rel is None or box.IsEmpty():
            self.note(f"{prim.GetPath()}: draw mode {mode!r} without a computable extent; skipped")
            return
        lo, hi = np.array(box.GetMin()), np.array(box.GetMax())
        size = float(np.linalg.norm(hi - lo)) or 1.0
        dmc = prim.GetAttribute("model:drawModeColor")
        color = tuple(float(c) for c in dmc.Get()) if dmc and dmc.Get() is not None else (0.18, 0.18, 0.18)
        if mode == "bounds":
            self.parts.append(Part(o, shapes.box_edges(lo, hi, color, size * 0.012).transformed(rel), str(prim.GetPath())))
        elif mode == "origin":
            self.parts.append(Part(o, shapes.axes(size * 0.5, size * 0.01).transformed(rel), str(prim.GetPath())))
        elif mode == "cards":
            self._cards(prim, o, rel, lo, hi, color)
        else:
            self.note(f"{prim.GetPath()}: unknown draw mode {mode!r}; drawn as bounds")
            self.parts.append(Part(o, shapes.box_edges(lo, hi, color, size * 0.012).transformed(rel), str(prim.GetPath())))

    def _cards(self, prim: Usd.Prim, o: int, rel: np.ndarray, lo: np.ndarray, hi: np.ndarray, color) -> None:
        geom = prim.GetAttribute("model:cardGeometry")
        kind = str(geom.Get()) if geom and geom.Get() else "cross"
        tex = {}
        for face in ("XPos", "XNeg", "YPos", "YNeg", "ZPos", "ZNeg"):
            a = prim.GetAttribute(f"model:cardTexture{face}")
            v = a.Get(self.time) if a else None
            tex[face] = v.resolvedPath if isinstance(v, Sdf.AssetPath) and v.resolvedPath else ""
        c = (lo + hi) / 2
        faces = {"XPos": (0, 1), "XNeg": (0, -1), "YPos": (1, 1), "YNeg": (1, -1), "ZPos": (2, 1), "ZNeg": (2, -1)}
        for face, (axis, sign) in faces.items():
            # cards with no texture on this face but one on the opposite face reuse it mirrored (USD rule)
            img = tex[face]
            opposite = face[0] + ("Neg" if face.endswith("Pos") else "Pos")
            if not img and tex[opposite]:
                img = tex[opposite]
            if kind != "box" and not img and any(tex.values()):
                continue
            # the image's right/up directions as seen looking at the face from outside
            right = np.zeros(3)
            up = np.zeros(3)
            if axis == 0:
                right[2], up[1] = -sign, 1.0
            elif axis == 1:
                right[0], up[2] = sign, -1.0
            else:
                right[0], up[1] = sign, 1.0
            plane_at = (hi[axis] if sign > 0 else lo[axis]) if kind == "box" else c[axis]
            half = (hi - lo) / 2
            centre = c.copy()
            centre[axis] = plane_at
            r = right * half
            up_v = up * half
            corners = np.array([centre - r - up_v, centre + r - up_v, centre + r + up_v, centre - r + up_v])
            corners = np.c_[corners, np.ones(4)] @ rel
            self.cards.append(Card(o, corners[:, :3], img, color))
