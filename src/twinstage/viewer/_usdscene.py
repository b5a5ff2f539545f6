"""USD stage → viewer geometry (numpy only; no GPU).

The stage is walked once. Every gprim ends up either

* in a **part**: its triangles in the local frame of the *object* that owns it
  (a twin asset, else the nearest ``component`` model, else the gprim itself);
  all parts are later merged into one mesh with a per-vertex object index, or
* in a **prototype**: geometry shared by several instances (USD native instancing
  with ``instanceable = true``, or a ``PointInstancer``), drawn once per instance
  with a per-instance matrix.

Objects carry their world matrix, so a Frame that moves an asset rewrites one
matrix, never the vertices. Bad input is skipped with a note (``SceneGeometry.notes``,
also logged): degenerate or empty meshes, bad indices, non-finite points or
transforms, unsupported prim types. Nothing here raises for a malformed prim.

Decisions (written down as DESIGN.md asks):

* purposes ``default`` and ``render`` are drawn, ``proxy`` and ``guide`` are not
  (usdview's "render" view); invisible prims are pruned with their subtree;
* a bound ``UsdPreviewSurface`` colour wins over ``displayColor`` (as in Hydra
  Storm); a texture feeding ``diffuseColor`` contributes its mean colour;
  ``GeomSubset`` material bindings colour their faces;
* subdivision surfaces are drawn as their control cage with smooth normals;
* draw modes on models: ``bounds`` (edges of the extent), ``origin`` (axes),
  ``cards`` (the cards' boxes, textured later by the renderer when images resolve);
* geometry is read at the stage's start time code when it has a time range,
  else at the default time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade

from . import _tessellate as tess
from ._tessellate import MeshData

log = logging.getLogger("twinstage.viewer")

DEFAULT_COLOR = (0.5, 0.5, 0.5)
#: coordinates beyond this are treated as garbage (float32 cannot place them anyway)
HUGE = 1e15
SHAPES = ("Cube", "Sphere", "Cylinder", "Cone", "Capsule", "Plane", "Cylinder_1", "Capsule_1")
#: prim types that carry no geometry of their own; anything else not handled gets a note
_SILENT = {"", "Xform", "Points", "Scope", "Material", "Shader", "NodeGraph", "GeomSubset", "Camera", "DistantLight", "DomeLight",
           "SphereLight",
           "RectLight", "DiskLight", "CylinderLight", "PortalLight", "GeometryLight", "SkelRoot", "Skeleton", "SkelAnimation",
           "BlendShape", "RenderSettings", "RenderProduct", "RenderVar", "RenderPass", "Volume", "OpenVDBAsset", "Field3DAsset",
           "GeomModelAPI", "PhysicsScene", "Backdrop", "NurbsPatch", "TetMesh"}


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


class _Colors:
    """Resolves a gprim's colour: bound UsdPreviewSurface, else displayColor, else grey."""

    def __init__(self, time: Usd.TimeCode):
        self.time = time
        self._material_cache: dict[str, tuple[float, float, float] | None] = {}
        self._texture_cache: dict[str, tuple[float, float, float] | None] = {}

    def material_color(self, material: UsdShade.Material | None, prim: Usd.Prim) -> tuple[float, float, float] | None | str:
        """Linear RGB of a material's diffuse colour; ``"displayColor"`` when it reads the primvar; None if unknown."""
        if material is None or not material.GetPrim():
            return None
        key = str(material.GetPath())
        if key in self._material_cache:
            return self._material_cache[key]
        color = None
        try:
            shader, _, _ = material.ComputeSurfaceSource()
            if shader and shader.GetPrim():
                color = self._shader_color(shader)
        except Exception as exc:  # a broken network must not stop the scene
            log.debug("material %s: %s", key, exc)
        self._material_cache[key] = color
        return color

    def _shader_color(self, shader: UsdShade.Shader):
        for name in ("diffuseColor", "base_color", "diffuse_color_constant", "baseColor"):
            inp = shader.GetInput(name)
            if not inp:
                continue
            for attr in inp.GetValueProducingAttributes():
                owner = UsdShade.Shader(attr.GetPrim())
                if UsdShade.Input.IsInput(attr):
                    v = attr.Get(self.time)
                    if v is not None:
                        return tuple(float(c) for c in v)[:3]
                elif owner:
                    sid = owner.GetShaderId() or ""
                    if sid.startswith("UsdPrimvarReader"):
                        var = owner.GetInput("varname")
                        if var and var.Get() == "displayColor":
                            return "displayColor"
                    if sid == "UsdUVTexture":
                        return self._texture_color(owner)
            # an unconnected input with its own value
            v = inp.Get(self.time)
            if v is not None:
                return tuple(float(c) for c in v)[:3]
        return None

    def _texture_color(self, tex: UsdShade.Shader):
        f = tex.GetInput("file")
        asset = f.Get(self.time) if f else None
        scale = tex.GetInput("scale")
        bias = tex.GetInput("bias")
        sc = np.array(scale.Get(), dtype=float)[:3] if scale and scale.Get() is not None else np.ones(3)
        bi = np.array(bias.Get(), dtype=float)[:3] if bias and bias.Get() is not None else np.zeros(3)
        mean = None
        if isinstance(asset, Sdf.AssetPath):
            mean = self.texture_mean(asset.resolvedPath or "")
        if mean is None:
            fb = tex.GetInput("fallback")
            v = fb.Get() if fb else None
            mean = np.array(v, dtype=float)[:3] if v is not None else np.array([0.5, 0.5, 0.5])
        return tuple(float(c) for c in np.clip(np.asarray(mean) * sc + bi, 0.0, 1.0))

    def texture_mean(self, resolved: str) -> np.ndarray | None:
        """Mean linear RGB of an image (files or packaged ``a.usdz[b.png]`` paths); None if unreadable."""
        if not resolved:
            return None
        if resolved in self._texture_cache:
            return self._texture_cache[resolved]
        out = None
        try:
            data = read_asset_bytes(resolved)
            if data is not None:
                img = decode_image(data)
                if img is not None:
                    rgb = img[..., :3].astype(np.float64) / 255.0
                    out = srgb_to_linear(rgb.reshape(-1, 3)).mean(axis=0)
        except Exception as exc:
            log.debug("texture %s unreadable: %s", resolved, exc)
        self._texture_cache[resolved] = out
        return out


def read_asset_bytes(resolved: str) -> bytes | None:
    """Bytes of a resolved asset path through Ar (works inside .usdz packages)."""
    from pxr import Ar

    asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved))
    if asset is None:
        return None
    buf = asset.GetBuffer()
    return bytes(buf) if buf is not None else None


def decode_image(data: bytes, max_side: int = 256) -> np.ndarray | None:
    """Decode PNG/JPEG bytes to uint8 RGB(A), subsampled to at most ``max_side`` pixels a side."""
    try:
        import imageio.v3 as iio
    except ImportError:  # pragma: no cover - imageio is part of the viewer extra
        return None
    img = np.asarray(iio.imread(data))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    step = max(1, int(math.ceil(max(img.shape[:2]) / max_side)))
    img = img[::step, ::step]
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / np.iinfo(img.dtype).max if img.dtype.kind in "ui" else img, 0, 1) * 255).astype(np.uint8)
    return img


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


class _Extractor:
    def __init__(self, stage: Usd.Stage, time: Usd.TimeCode, segments: int, twin_paths: Sequence[str], purposes: Iterable[str]):
        self.stage = stage
        self.time = time
        self.segments = segments
        self.purposes = set(purposes)
        self.notes: list[str] = []
        self.xf = UsdGeom.XformCache(time)
        self.colors = _Colors(time)
        self.objects: list[SceneObject] = []
        self.index: dict[str, int] = {}
        for p in twin_paths:
            prim = stage.GetPrimAtPath(p)
            m = _mat(self.xf.GetLocalToWorldTransform(prim)) if prim else np.eye(4)
            if not _finite_matrix(m):
                self.note(f"{p}: non-finite or huge transform; drawn at the origin")
                m = np.eye(4)
            self._add_object(p, True, m, prim)
        self.n_twin = len(self.objects)
        self.parts: list[Part] = []
        self.protos: dict[str, Prototype] = {}
        self.cards: list[Card] = []
        self._owner_cache: dict[str, int | None] = {}
        self._proto_mesh_cache: dict[str, MeshData] = {}

    # -- bookkeeping -------------------------------------------------------------
    def note(self, msg: str) -> None:
        if len(self.notes) < 500:
            self.notes.append(msg)
        log.info("viewer: %s", msg)

    def _add_object(self, path: str, twin: bool, matrix: np.ndarray, prim: Usd.Prim | None) -> int:
        layer = ""
        kind = ""
        tname = ""
        if prim:
            layer = defining_layer(prim)
            kind = str(Usd.ModelAPI(prim).GetKind() or "")
            tname = str(prim.GetTypeName())
        self.index[path] = len(self.objects)
        self.objects.append(SceneObject(path, twin, matrix, kind, tname, layer))
        return self.index[path]

    def owner(self, prim: Usd.Prim) -> int:
        """Object owning ``prim``: nearest twin ancestor-or-self, else nearest component model, else ``prim`` itself."""
        chain = []
        p = prim
        comp = None
        found = None
        while p and not p.IsPseudoRoot():
            key = str(p.GetPath())
            if key in self._owner_cache:
                found = self._owner_cache[key]
                break
            if key in self.index and self.objects[self.index[key]].twin:
                found = self.index[key]
                break
            chain.append(key)
            if comp is None and Usd.ModelAPI(p).IsKind(Kind.Tokens.component):
                comp = p
            p = p.GetParent()
        if found is None:
            target = comp if comp is not None else prim
            key = str(target.GetPath())
            if key in self.index:
                found = self.index[key]
            else:
                m = _mat(self.xf.GetLocalToWorldTransform(target))
                if not _finite_matrix(m):
                    m = np.eye(4)
                found = self._add_object(key, False, m, target)
            # cache only prims at or below the scenery owner (siblings may differ)
            chain = [c for c in chain if c.startswith(key)]
        for c in chain:
            self._owner_cache[c] = found
        return found

    # -- traversal -----------------------------------------------------------------
    def run(self) -> None:
        root = self.stage.GetPseudoRoot()
        it = iter(Usd.PrimRange(root, Usd.PrimDefaultPredicate))
        for prim in it:
            if prim.IsPseudoRoot():
                continue
            if not self._visible(prim):
                it.PruneChildren()
                continue
            mode = self._draw_mode(prim)
            if mode:
                self._draw_mode_geometry(prim, mode)
                it.PruneChildren()
                continue
            if prim.IsInstance():
                self._instance(prim)
                it.PruneChildren()
                continue
            if prim.IsA(UsdGeom.PointInstancer):
                self._point_instancer(prim)
                it.PruneChildren()
                continue
            mesh = self._gprim(prim)
            if mesh is None:
                continue
            world = _mat(self.xf.GetLocalToWorldTransform(prim))
            if not _finite_matrix(world):
                self.note(f"{prim.GetPath()}: non-finite or huge transform; skipped")
                continue
            o = self.owner(prim)
            rel = _relative(world, self.objects[o].matrix)
            if rel is None:
                self.note(f"{prim.GetPath()}: its owner {self.objects[o].path} has a singular transform; skipped")
                continue
            self.parts.append(Part(o, mesh.transformed(rel), str(prim.GetPath())))

    def _visible(self, prim: Usd.Prim) -> bool:
        img = UsdGeom.Imageable(prim)
        if not img:
            return True
        vis = img.GetVisibilityAttr().Get(self.time)
        if vis == UsdGeom.Tokens.invisible:
            return False
        purpose = img.GetPurposeAttr().Get()
        if purpose and purpose != UsdGeom.Tokens.default_ and purpose not in self.purposes:
            return False
        return True

    def _draw_mode(self, prim: Usd.Prim) -> str:
        if not prim.IsModel() or prim.IsPseudoRoot():
            return ""
        api = UsdGeom.ModelAPI(prim)
        attr = prim.GetAttribute("model:drawMode")
        if not attr or not attr.HasAuthoredValue():
            return ""
        apply_attr = prim.GetAttribute("model:applyDrawMode")
        applies = bool(apply_attr.Get()) if apply_attr and apply_attr.HasAuthoredValue() else False
        if not applies and not Usd.ModelAPI(prim).IsKind(Kind.Tokens.component):
            return ""
        mode = str(api.ComputeModelDrawMode())
        return "" if mode in ("default", "inherited", "") else mode

    # -- geometry readers ------------------------------------------------------------
    def _gprim(self, prim: Usd.Prim) -> MeshData | None:
        """Triangles of one gprim in its own frame (None if it draws nothing)."""
        t = str(prim.GetTypeName())
        try:
            if t == "Mesh":
                return self._mesh(prim)
            if t in SHAPES:
                return self._shape(prim, t)
            if t == "BasisCurves":
                return self._curves(prim)
        except Exception as exc:  # malformed data of any kind: skip the prim, keep the scene
            self.note(f"{prim.GetPath()}: {t} skipped ({type(exc).__name__}: {exc})")
            return None
        if t not in _SILENT and prim.IsA(UsdGeom.Gprim):
            self.note(f"{prim.GetPath()}: prim type {t} is not drawn by the viewer (skipped)")
        return None

    def _display_color(self, prim: Usd.Prim, n_points: int, n_faces: int, n_corners: int):
        """(interpolation, values (k,3)) of displayColor, or None."""
        pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
        if not pv or not pv.HasAuthoredValue():
            return None
        vals = pv.ComputeFlattened(self.time)
        if vals is None or len(vals) == 0:
            return None
        arr = np.asarray(vals, dtype=np.float64).reshape(-1, 3)
        interp = pv.GetInterpolation()
        need = {"constant": 1, "uniform": n_faces, "vertex": n_points, "varying": n_points, "faceVarying": n_corners}.get(interp, 1)
        if len(arr) < need:
            self.note(f"{prim.GetPath()}: displayColor has {len(arr)} values for {interp} interpolation (needs {need}); using the first")
            return "constant", arr[:1]
        arr = np.where(np.isfinite(arr), arr, 0.5)
        return interp, arr[:need] if interp != "constant" else arr[:1]

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
            return tess.cube(size, color)
        if t == "Sphere":
            r = float(g("radius", 1.0))
            if not _ok_size(r):
                return self._bad_size(prim, "radius", r)
            return tess.sphere(r, color, seg)
        if t in ("Cylinder", "Cylinder_1"):
            r, h = float(g("radius", 1.0)), float(g("height", 2.0))
            rt = r
            if t == "Cylinder_1":
                rt, r = float(g("radiusTop", 1.0)), float(g("radiusBottom", 1.0))
            if not (_ok_size(r) or _ok_size(rt)) or not _ok_size(h):
                return self._bad_size(prim, "radius/height", (r, h))
            return tess.cylinder(r, h, axis, color, seg, radius_top=rt)
        if t == "Cone":
            r, h = float(g("radius", 1.0)), float(g("height", 2.0))
            if not _ok_size(r) or not _ok_size(h):
                return self._bad_size(prim, "radius/height", (r, h))
            return tess.cone(r, h, axis, color, seg)
        if t in ("Capsule", "Capsule_1"):
            r, h = float(g("radius", 0.5)), float(g("height", 1.0))
            if t == "Capsule_1":
                r = max(float(g("radiusTop", 0.5)), float(g("radiusBottom", 0.5)))
            if not _ok_size(r) or not (math.isfinite(h) and h >= 0):
                return self._bad_size(prim, "radius/height", (r, h))
            return tess.capsule(r, h, axis, color, seg)
        if t == "Plane":
            width, length = float(g("width", 2.0)), float(g("length", 2.0))
            if not _ok_size(width) or not _ok_size(length):
                return self._bad_size(prim, "width/length", (width, length))
            return tess.plane(width, length, axis, color)
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
        return tess.tubes(points, counts, w, self._constant_color(prim), closed=wrap)

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

        per_corner = ((ninterp in ("faceVarying", "uniform") and nvals is not None)
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
            if subset_colors is not None:
                sc, has = subset_colors
                col = np.where(has[corner_face][:, None], sc[corner_face], col)
        else:
            pos = points
            tris = safe_idx[corners]
            nrm = tess.vertex_normals(points, tris) if nvals is None else _expand(nvals, ninterp, np.arange(len(points)), None)
            col = self._colors_for(mat_color, dc, np.arange(len(points)), None, len(points))
        nrm = tess.normalize(nrm).astype(np.float32)
        out = MeshData(pos, nrm, np.clip(col, 0, None).astype(np.float32), np.ascontiguousarray(tris, dtype=np.int64))
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

    # -- instancing ------------------------------------------------------------------
    def _prototype_mesh(self, proto: Usd.Prim, key: str) -> MeshData:
        """All gprims under ``proto`` merged, in ``proto``'s frame (nested instances baked in)."""
        if key in self._proto_mesh_cache:
            return self._proto_mesh_cache[key]
        root_world = _mat(self.xf.GetLocalToWorldTransform(proto))
        meshes = []
        it = iter(Usd.PrimRange(proto, Usd.PrimDefaultPredicate))
        for prim in it:
            if prim != proto and not self._visible(prim):
                it.PruneChildren()
                continue
            if prim != proto and prim.IsInstance():
                inner = prim.GetPrototype()
                sub = self._prototype_mesh(inner, str(inner.GetPath()))
                rel = _relative(_mat(self.xf.GetLocalToWorldTransform(prim)), root_world)
                if rel is not None and _finite_matrix(rel):
                    meshes.append(sub.transformed(rel))
                it.PruneChildren()
                continue
            if prim.IsA(UsdGeom.PointInstancer):
                self.note(f"{prim.GetPath()}: PointInstancer inside an instance prototype: drawn once per prototype "
                          "instance, without sharing")
            mesh = self._gprim(prim)
            if mesh is None:
                continue
            rel = _relative(_mat(self.xf.GetLocalToWorldTransform(prim)), root_world)
            if rel is None or not _finite_matrix(rel):
                self.note(f"{prim.GetPath()}: non-finite transform; skipped")
                continue
            meshes.append(mesh.transformed(rel))
        m = tess.merge(meshes)
        self._proto_mesh_cache[key] = m
        return m

    def _add_instance(self, key: str, mesh: MeshData, owner: int, local: np.ndarray) -> None:
        proto = self.protos.get(key)
        if proto is None:
            proto = self.protos[key] = Prototype(key, mesh)
        proto.objects.append(owner)
        proto.locals.append(local)

    def _instance(self, prim: Usd.Prim) -> None:
        proto = prim.GetPrototype()
        key = str(proto.GetPath())
        mesh = self._prototype_mesh(proto, key)
        if not mesh.n_triangles:
            return
        world = _mat(self.xf.GetLocalToWorldTransform(prim))
        if not _finite_matrix(world):
            self.note(f"{prim.GetPath()}: non-finite or huge transform; instance skipped")
            return
        o = self.owner(prim)
        rel = _relative(world, self.objects[o].matrix)
        if rel is None:
            self.note(f"{prim.GetPath()}: owner has a singular transform; instance skipped")
            return
        self._add_instance(key, mesh, o, rel)

    def _point_instancer(self, prim: Usd.Prim) -> None:
        pi = UsdGeom.PointInstancer(prim)
        path = prim.GetPath()
        targets = pi.GetPrototypesRel().GetTargets()
        if not targets:
            self.note(f"{path}: PointInstancer without prototypes; skipped")
            return
        try:
            xforms = pi.ComputeInstanceTransformsAtTime(self.time, self.time)
        except Exception as exc:
            self.note(f"{path}: PointInstancer transforms could not be computed ({exc}); skipped")
            return
        proto_idx = pi.GetProtoIndicesAttr().Get(self.time)
        if xforms is None or proto_idx is None:
            self.note(f"{path}: PointInstancer without protoIndices/positions; skipped")
            return
        mats = np.asarray([_mat(m) for m in xforms]) if len(xforms) else np.zeros((0, 4, 4))
        proto_idx = np.asarray(proto_idx, dtype=np.int64)
        if len(mats) != len(proto_idx):
            # ComputeInstanceTransforms drops masked/invisible ids; align conservatively
            proto_idx = proto_idx[: len(mats)]
        world = _mat(self.xf.GetLocalToWorldTransform(prim))
        o = self.owner(prim)
        owner_rel = _relative(world, self.objects[o].matrix)
        if owner_rel is None:
            return
        bad = 0
        for k, target in enumerate(targets):
            tprim = self.stage.GetPrimAtPath(target)
            if not tprim:
                self.note(f"{path}: prototype {target} does not exist")
                continue
            sel = np.flatnonzero(proto_idx == k)
            if not len(sel):
                continue
            mesh = self._point_proto_mesh(tprim)
            if not mesh.n_triangles:
                continue
            key = f"{path}:{k}"
            for i in sel:
                m = mats[i] @ owner_rel
                if not _finite_matrix(m):
                    bad += 1
                    continue
                self._add_instance(key, mesh, o, m)
        n_bad_idx = int(((proto_idx < 0) | (proto_idx >= len(targets))).sum())
        if n_bad_idx:
            self.note(f"{path}: {n_bad_idx} protoIndices out of range; those instances skipped")
        if bad:
            self.note(f"{path}: {bad} instances with non-finite transforms skipped")

    def _point_proto_mesh(self, tprim: Usd.Prim) -> MeshData:
        """Prototype of a PointInstancer: its subtree relative to the prototype root, excluding the root's own
        transform (ComputeInstanceTransformsAtTime already includes it)."""
        key = "pi:" + str(tprim.GetPath())
        if key in self._proto_mesh_cache:
            return self._proto_mesh_cache[key]
        if tprim.IsInstance():
            inner = tprim.GetPrototype()
            m = self._prototype_mesh(inner, str(inner.GetPath()))
        else:
            m = self._prototype_mesh(tprim, key + ":tree")
            # _prototype_mesh expresses gprims relative to the root's world frame: exactly the root's local frame
        self._proto_mesh_cache[key] = m
        return m

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
            self.parts.append(Part(o, tess.box_edges(lo, hi, color, size * 0.012).transformed(rel), str(prim.GetPath())))
        elif mode == "origin":
            self.parts.append(Part(o, tess.axes(size * 0.5, size * 0.01).transformed(rel), str(prim.GetPath())))
        elif mode == "cards":
            self._cards(prim, o, rel, lo, hi, color)
        else:
            self.note(f"{prim.GetPath()}: unknown draw mode {mode!r}; drawn as bounds")
            self.parts.append(Part(o, tess.box_edges(lo, hi, color, size * 0.012).transformed(rel), str(prim.GetPath())))

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


def _compact(m: MeshData) -> MeshData:
    """Drop vertices no triangle references."""
    used, inverse = np.unique(m.triangles.ravel(), return_inverse=True)
    return MeshData(m.positions[used], m.normals[used], m.colors[used], inverse.reshape(-1, 3).astype(np.int64))


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


def stage_time(stage: Usd.Stage) -> Usd.TimeCode:
    """The time geometry is read at: the stage's start time code when it has a range, else default."""
    if stage.HasAuthoredTimeCodeRange():
        return Usd.TimeCode(stage.GetStartTimeCode())
    return Usd.TimeCode.Default()


def extract(
    stage: Usd.Stage,
    *,
    twin_paths: Sequence[str] = (),
    time: Usd.TimeCode | float | None = None,
    segments: int = 24,
    purposes: Iterable[str] = ("render",),
) -> SceneGeometry:
    """Read a stage's drawable geometry. ``twin_paths`` become the first objects, in that order
    (the StateTable's prim order), so an object index *is* the twin prim index."""
    if time is None:
        tc = stage_time(stage)
    elif isinstance(time, Usd.TimeCode):
        tc = time
    else:
        tc = Usd.TimeCode(float(time))
    ex = _Extractor(stage, tc, segments, twin_paths, purposes)
    ex.run()
    up = str(UsdGeom.GetStageUpAxis(stage))
    geo = SceneGeometry(ex.objects, ex.parts, list(ex.protos.values()), ex.cards, up if up in ("Y", "Z") else "Y",
                        UsdGeom.GetStageMetersPerUnit(stage), ex.notes, None if tc.IsDefault() else tc.GetValue(), ex.n_twin)
    if not geo.parts and not geo.prototypes and not geo.cards:
        if _material_swatches(stage, ex, geo):
            return geo
        defined = [p for p in stage.TraverseAll() if p.IsDefined()]
        why = "it defines no prims (only `over`s: a layer meant to be composed onto another)" if not defined else "no drawable prims"
        geo.notes.append(f"nothing to draw: {why}")
    return geo


def _material_swatches(stage: Usd.Stage, ex: _Extractor, geo: SceneGeometry) -> bool:
    """A material library without geometry: one preview sphere per material, in a row (like a material browser)."""
    mats = [p for p in stage.Traverse() if p.IsA(UsdShade.Material)]
    if not mats:
        return False
    up = geo.up_axis
    for k, prim in enumerate(mats[:400]):
        color = ex.colors.material_color(UsdShade.Material(prim), prim)
        if not isinstance(color, tuple):
            color = DEFAULT_COLOR
        m = np.eye(4)
        m[3, 0] = 2.5 * (k % 20)
        m[3, 2 if up == "Y" else 1] = -2.5 * (k // 20)
        o = ex._add_object(str(prim.GetPath()), False, m, prim)
        geo.parts.append(Part(o, tess.sphere(1.0, color, ex.segments), str(prim.GetPath())))
    geo.objects = ex.objects
    geo.notes.append(f"material library: {len(mats)} material{'s' if len(mats) != 1 else ''} shown as swatches")
    return True
