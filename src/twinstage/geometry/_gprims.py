"""Readers of single gprims (Mesh, the shapes, BasisCurves) into :class:`MeshData`, in the gprim's frame."""

from __future__ import annotations

import math

import numpy as np
from pxr import Usd, UsdGeom, UsdShade

from . import _mesh as tess
from . import _shapes as shapes
from ._mesh import MeshData
from ._scene import DEFAULT_COLOR, HUGE

SHAPES = ("Cube", "Sphere", "Cylinder", "Cone", "Capsule", "Plane", "Cylinder_1", "Capsule_1")
#: prim types that carry no geometry of their own; anything else not handled gets a note
_SILENT = {"", "Xform", "Points", "Scope", "Material", "Shader", "NodeGraph", "GeomSubset", "Camera", "DistantLight", "DomeLight",
           "SphereLight",
           "RectLight", "DiskLight", "CylinderLight", "PortalLight", "GeometryLight", "SkelRoot", "Skeleton", "SkelAnimation",
           "BlendShape", "RenderSettings", "RenderProduct", "RenderVar", "RenderPass", "Volume", "OpenVDBAsset", "Field3DAsset",
           "GeomModelAPI", "PhysicsScene", "Backdrop", "NurbsPatch", "TetMesh"}



class GprimReader:
    """Mixin of the extractor: needs ``self.time``, ``self.segments``, ``self.colors`` and ``self.note``."""

    def _gprim(self, prim: Usd.Prim) -> MeshData | None:
        """Triangles of one gprim in its own frame (None if it draws nothing)."""
        t = str(prim.GetTypeName())
        try:
            if t == "Mesh":
                return self._styled(prim, self._mesh(prim))
            if t in SHAPES:
                return self._styled(prim, self._shape(prim, t))
            if t == "BasisCurves":
                return self._styled(prim, self._curves(prim))
        except Exception as exc:  # malformed data of any kind: skip the prim, keep the scene
            self.note(f"{prim.GetPath()}: {t} skipped ({type(exc).__name__}: {exc})")
            return None
        if t not in _SILENT and prim.IsA(UsdGeom.Gprim):
            self.note(f"{prim.GetPath()}: prim type {t} is not drawn by the viewer (skipped)")
        return None

    def _styled(self, prim: Usd.Prim, mesh: MeshData | None) -> MeshData | None:
        """Sidedness (``doubleSided``) and, unless the reader set it per vertex, constant opacity."""
        if mesh is None:
            return None
        ds = UsdGeom.Gprim(prim).GetDoubleSidedAttr().Get()
        alpha = None
        if mesh.alpha is None:
            a = self._constant_opacity(prim)
            alpha = a if a < 0.999 else None
        mat = self._material(prim)
        pbr = self.colors.material_pbr(mat) if mat is not None else None
        return mesh.with_style(alpha=alpha, double_sided=bool(ds), pbr=pbr)

    def _constant_opacity(self, prim: Usd.Prim) -> float:
        """Opacity of a whole gprim: bound material's ``opacity``, else the first ``displayOpacity``, else 1."""
        mat = self._material(prim)
        op = self.colors.material_opacity(mat) if mat is not None else None
        if op is not None:
            return op
        do = self._primvar(prim, "displayOpacity", 1, 1, 1, 1)
        return float(np.clip(do[1][0, 0], 0.0, 1.0)) if do is not None else 1.0

    def _material(self, prim: Usd.Prim):
        try:
            mat, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
        except Exception:
            return None
        return mat if mat and mat.GetPrim() else None

    def _primvar(self, prim: Usd.Prim, name: str, width: int, n_points: int, n_faces: int, n_corners: int, fill: float = 0.5):
        """(interpolation, values (k, width)) of a primvar such as displayColor/displayOpacity, or None."""
        pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar(name)
        if not pv or not pv.HasAuthoredValue():
            return None
        vals = pv.ComputeFlattened(self.time)
        if vals is None or len(vals) == 0:
            return None
        arr = np.asarray(vals, dtype=np.float64).reshape(-1, width)
        interp = pv.GetInterpolation()
        need = {"constant": 1, "uniform": n_faces, "vertex": n_points, "varying": n_points, "faceVarying": n_corners}.get(interp, 1)
        if len(arr) < need:
            self.note(f"{prim.GetPath()}: {name} has {len(arr)} values for {interp} interpolation (needs {need}); using the first")
            return "constant", arr[:1]
        arr = np.where(np.isfinite(arr), arr, fill)
        return interp, arr[:need] if interp != "constant" else arr[:1]

    def _display_color(self, prim: Usd.Prim, n_points: int, n_faces: int, n_corners: int):
        """(interpolation, values (k,3)) of displayColor, or None."""
        return self._primvar(prim, "displayColor", 3, n_points, n_faces, n_corners)

    def _base_color(self, prim: Usd.Prim) -> tuple[float, float, float] | str | None:
        """Colour from the bound material (or ``"displayColor"`` / None)."""
        try:
            mat, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
        except Exception:
            return None
        return self.colors.material_color(mat, prim)

    def _shape(self, prim: Usd.Prim, t: str) -> MeshData | None:
        def g(name: str, default):
            return _get(prim, name, self.time, default)

        color = self._constant_color(prim)
        seg = self.segments
        axis = str(g("axis", "Z"))
        if axis not in ("X", "Y", "Z"):
            axis = "Z"
        if t == "Cube":
            size = float(g("size", 2.0))
            if not _ok_size(size):
                return self._bad_size(prim, "size", size)
            return shapes.cube(size, color)
        if t == "Sphere":
            r = float(g("radius", 1.0))
            if not _ok_size(r):
                return self._bad_size(prim, "radius", r)
            return shapes.sphere(r, color, seg)
        if t in ("Cylinder", "Cylinder_1"):
            r, h = float(g("radius", 1.0)), float(g("height", 2.0))
            rt = r
            if t == "Cylinder_1":
                rt, r = float(g("radiusTop", 1.0)), float(g("radiusBottom", 1.0))
            if not (_ok_size(r) or _ok_size(rt)) or not _ok_size(h):
                return self._bad_size(prim, "radius/height", (r, h))
            return shapes.cylinder(r, h, axis, color, seg, radius_top=rt)
        if t == "Cone":
            r, h = float(g("radius", 1.0)), float(g("height", 2.0))
            if not _ok_size(r) or not _ok_size(h):
                return self._bad_size(prim, "radius/height", (r, h))
            return shapes.cone(r, h, axis, color, seg)
        if t in ("Capsule", "Capsule_1"):
            r, h = float(g("radius", 0.5)), float(g("height", 1.0))
            if t == "Capsule_1":
                r = max(float(g("radiusTop", 0.5)), float(g("radiusBottom", 0.5)))
            if not _ok_size(r) or not (math.isfinite(h) and h >= 0):
                return self._bad_size(prim, "radius/height", (r, h))
            return shapes.capsule(r, h, axis, color, seg)
        if t == "Plane":
            width, length = float(g("width", 2.0)), float(g("length", 2.0))
            if not _ok_size(width) or not _ok_size(length):
                return self._bad_size(prim, "width/length", (width, length))
            return shapes.plane(width, length, axis, color)
        return None

    def _curves(self, prim: Usd.Prim) -> MeshData | None:
        """Curves as tubes along their control points (cubic curves: the control polygon)."""
        c = UsdGeom.BasisCurves(prim)
        pts = c.GetPointsAttr().Get(self.time)
        counts = c.GetCurveVertexCountsAttr().Get(self.time)
        if pts is None or counts is None or len(pts) < 2:
            self.note(f"{prim.GetPath()}: BasisCurves without points; skipped")
            return None
        points = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.sum() != len(points) or not np.isfinite(points).all():
            self.note(f"{prim.GetPath()}: BasisCurves with {int(counts.sum())} counted vertices for {len(points)} points "
                      "(or non-finite points); skipped")
            return None
        widths = c.GetWidthsAttr().Get(self.time)
        ext = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0))) or 1.0
        w = float(np.median(np.asarray(widths))) if widths is not None and len(widths) else ext * 0.005
        if not (math.isfinite(w) and w > 0):
            w = ext * 0.005
        wrap = c.GetWrapAttr().Get() == UsdGeom.Tokens.periodic
        return shapes.tubes(points, counts, w, self._constant_color(prim), closed=wrap)

    def _bad_size(self, prim: Usd.Prim, what: str, value) -> None:
        self.note(f"{prim.GetPath()}: {prim.GetTypeName()} with {what} {value} is degenerate or non-finite; skipped")
        return None

    def _constant_color(self, prim: Usd.Prim) -> tuple[float, float, float]:
        mat = self._base_color(prim)
        if isinstance(mat, tuple):
            return mat
        dc = self._display_color(prim, 1, 1, 1)
        if dc is not None:
            return tuple(float(c) for c in dc[1][0])
        return DEFAULT_COLOR

    def _mesh(self, prim: Usd.Prim) -> MeshData | None:
        path = prim.GetPath()
        mesh = UsdGeom.Mesh(prim)
        pts = mesh.GetPointsAttr().Get(self.time)
        counts = mesh.GetFaceVertexCountsAttr().Get(self.time)
        idx = mesh.GetFaceVertexIndicesAttr().Get(self.time)
        if pts is None or counts is None or idx is None or len(pts) == 0 or len(counts) == 0:
            self.note(f"{path}: empty mesh (no points or faces); skipped")
            return None
        points = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        counts = np.asarray(counts, dtype=np.int64)
        idx = np.asarray(idx, dtype=np.int64)
        n_faces = len(counts)
        if (counts < 0).any() or counts.sum() != len(idx):
            self.note(f"{path}: faceVertexCounts sum to {int(counts[counts > 0].sum())} but there are {len(idx)} indices; skipped")
            return None
        corners, face = tess.triangulate(counts)
        keep = np.ones(len(corners), bool)
        bad_idx = (idx < 0) | (idx >= len(points))
        if bad_idx.any():
            keep &= ~bad_idx[corners].any(axis=1)
            self.note(f"{path}: {int(bad_idx.sum())} face-vertex indices outside 0..{len(points) - 1}; their faces dropped")
        bad_pts = ~np.isfinite(points).all(axis=1) | (np.abs(points) > HUGE).any(axis=1)
        if bad_pts.any():
            safe = np.clip(idx, 0, len(points) - 1)
            keep &= ~bad_pts[safe][corners].any(axis=1)
            self.note(f"{path}: {int(bad_pts.sum())} non-finite or huge points; their faces dropped")
        holes = mesh.GetHoleIndicesAttr().Get(self.time)
        if holes is not None and len(holes):
            hole = np.zeros(n_faces, bool)
            h = np.asarray(holes, dtype=np.int64)
            hole[h[(h >= 0) & (h < n_faces)]] = True
            keep &= ~hole[face]
        if (counts < 3).any():
            self.note(f"{path}: {int((counts < 3).sum())} faces with fewer than 3 vertices ignored")
        corners, face = corners[keep], face[keep]
        if not len(corners):
            self.note(f"{path}: no valid triangles; skipped")
            return None
        if mesh.GetOrientationAttr().Get() == UsdGeom.Tokens.leftHanded:
            corners = corners[:, ::-1]
        n_corners = len(idx)
        safe_idx = np.clip(idx, 0, len(points) - 1)

        # Normals: primvars:normals wins over normals; computed when absent or malformed.
        nvals, ninterp = None, None
        pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar("normals")
        if pv and pv.HasAuthoredValue():
            v = pv.ComputeFlattened(self.time)
            nvals, ninterp = (np.asarray(v, dtype=np.float64).reshape(-1, 3) if v is not None else None), pv.GetInterpolation()
        else:
            v = mesh.GetNormalsAttr().Get(self.time)
            if v is not None and len(v):
                nvals, ninterp = np.asarray(v, dtype=np.float64).reshape(-1, 3), mesh.GetNormalsInterpolation()
        need = {"vertex": len(points), "varying": len(points), "faceVarying": n_corners, "uniform": n_faces, "constant": 1}
        if nvals is not None and len(nvals) < need.get(ninterp, 1 << 62):
            self.note(f"{path}: {len(nvals)} normals for {ninterp} interpolation (needs {need.get(ninterp)}); computed instead")
            nvals = None

        # Colours: material (maybe per GeomSubset), else displayColor.
        mat_color = self._base_color(prim)
        dc = None
        if not isinstance(mat_color, tuple):
            dc = self._display_color(prim, len(points), n_faces, n_corners)
        subset_colors = self._subset_colors(prim, n_faces)

        # Opacity: the material's wins; else displayOpacity (maybe varying over the mesh).
        mat = self._material(prim)
        mat_op = self.colors.material_opacity(mat) if mat is not None else None
        dop = None if mat_op is not None else self._primvar(prim, "displayOpacity", 1, len(points), n_faces, n_corners, 1.0)
        if dop is not None and dop[0] == "constant":
            dop = None  # constant opacity is applied by _styled
        per_corner = ((ninterp in ("faceVarying", "uniform") and nvals is not None)
                      or (dop is not None and dop[0] in ("faceVarying", "uniform"))
                      or (dc is not None and dc[0] in ("faceVarying", "uniform")) or subset_colors is not None)
        if per_corner:
            # one vertex per face corner (face-varying data needs it)
            corner_face = np.repeat(np.arange(n_faces), counts)
            pos = points[safe_idx]
            tris = corners
            if nvals is None:
                sm = tess.vertex_normals(points, safe_idx[corners])
                nrm = sm[safe_idx]
            else:
                nrm = _expand(nvals, ninterp, safe_idx, corner_face)
            col = self._colors_for(mat_color, dc, safe_idx, corner_face, n_corners)
            alpha = self._colors_for(None, dop, safe_idx, corner_face, n_corners)[:, 0] if dop is not None else None
            if subset_colors is not None:
                sc, has = subset_colors
                col = np.where(has[corner_face][:, None], sc[corner_face], col)
        else:
            pos = points
            tris = safe_idx[corners]
            nrm = tess.vertex_normals(points, tris) if nvals is None else _expand(nvals, ninterp, np.arange(len(points)), None)
            col = self._colors_for(mat_color, dc, np.arange(len(points)), None, len(points))
            alpha = self._colors_for(None, dop, np.arange(len(points)), None, len(points))[:, 0] if dop is not None else None
        nrm = tess.normalize(nrm).astype(np.float32)
        out = MeshData(pos, nrm, np.clip(col, 0, None).astype(np.float32), np.ascontiguousarray(tris, dtype=np.int64))
        if alpha is not None and (alpha < 0.999).any():
            out.alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
        if bad_pts.any() or bad_idx.any():
            out = _compact(out)  # unreferenced (bad) points must not reach bounds or the GPU
        return out

    def _colors_for(self, mat_color, dc, vidx: np.ndarray, corner_face: np.ndarray | None, n: int) -> np.ndarray:
        if isinstance(mat_color, tuple):
            return np.tile(np.asarray(mat_color, np.float64), (n, 1))
        if dc is None:
            return np.tile(np.asarray(DEFAULT_COLOR), (n, 1))
        interp, vals = dc
        if interp == "constant":
            return np.tile(vals[0], (n, 1))
        if interp in ("vertex", "varying"):
            return vals[vidx]
        if corner_face is None:  # cannot happen (per-corner path taken for these)
            return np.tile(vals[0], (n, 1))
        if interp == "uniform":
            return vals[corner_face]
        return vals[:n]

    def _subset_colors(self, prim: Usd.Prim, n_faces: int):
        """Per-face colours from GeomSubsets bound to materials: (colors (F,3), has (F,)) or None."""
        subsets = UsdShade.MaterialBindingAPI(prim).GetMaterialBindSubsets()
        if not subsets:
            return None
        col = np.zeros((n_faces, 3))
        has = np.zeros(n_faces, bool)
        dc = self._display_color(prim, 0, n_faces, 0)
        for sub in subsets:
            faces = sub.GetIndicesAttr().Get(self.time)
            if faces is None:
                continue
            f = np.asarray(faces, dtype=np.int64)
            f = f[(f >= 0) & (f < n_faces)]
            mat, _ = UsdShade.MaterialBindingAPI(sub.GetPrim()).ComputeBoundMaterial()
            c = self.colors.material_color(mat, sub.GetPrim())
            if c == "displayColor":
                c = tuple(dc[1][0]) if dc is not None and dc[0] == "constant" else None
            if isinstance(c, tuple):
                col[f] = c
                has[f] = True
        return (col, has) if has.any() else None



def _compact(m: MeshData) -> MeshData:
    """Drop vertices no triangle references."""
    used, inverse = np.unique(m.triangles.ravel(), return_inverse=True)
    return MeshData(m.positions[used], m.normals[used], m.colors[used], inverse.reshape(-1, 3).astype(np.int64),
                    None if m.alpha is None else m.alpha[used], m.double_sided, m.pbr)


def _expand(vals: np.ndarray, interp: str, vidx: np.ndarray, corner_face: np.ndarray | None) -> np.ndarray:
    if interp == "constant":
        return np.tile(vals[0], (len(vidx), 1))
    if interp in ("vertex", "varying"):
        return vals[vidx]
    if interp == "uniform":
        return vals[corner_face] if corner_face is not None else np.tile(vals[0], (len(vidx), 1))
    return vals[: len(vidx)]


def _get(prim: Usd.Prim, name: str, time: Usd.TimeCode, default):
    a = prim.GetAttribute(name)
    v = a.Get(time) if a else None
    return default if v is None else v


def _ok_size(v: float) -> bool:
    return math.isfinite(v) and 0 < v < HUGE

