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
from collections.abc import Iterable, Sequence

import numpy as np
from pxr import Kind, Usd, UsdGeom, UsdShade

from . import _mesh as tess
from . import _shapes as shapes
from ._drawmodes import DrawModes
from ._gprims import GprimReader
from ._materials import _Colors
from ._mesh import MeshData
from ._scene import DEFAULT_COLOR, Card, Part, Prototype, SceneGeometry, SceneObject, _finite_matrix, _mat, _relative, defining_layer

log = logging.getLogger("twinstage.geometry")


class _Extractor(GprimReader, DrawModes):
    def __init__(self, stage: Usd.Stage, time: Usd.TimeCode, segments: int, twin_paths: Sequence[str], purposes: Iterable[str],
                 split_moving: bool = False):
        self.split_moving = split_moving
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
        moving = None  # the lowest prim (self or ancestor) under the component whose transform is time-varying
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
            if self.split_moving and comp is None and moving is None:
                xf = UsdGeom.Xformable(p)
                if xf and xf.TransformMightBeTimeVarying():
                    moving = p
            if comp is None and Usd.ModelAPI(p).IsKind(Kind.Tokens.component):
                comp = p
            p = p.GetParent()
        if found is None:
            target = comp if comp is not None else prim
            if comp is not None and moving is not None:
                target = moving  # a part that moves on its own is its own object (an exporter animates it)
            key = str(target.GetPath())
            if key in self.index:
                found = self.index[key]
            else:
                m = _mat(self.xf.GetLocalToWorldTransform(target))
                if not _finite_matrix(m):
                    m = np.eye(4)
                found = self._add_object(key, False, m, target)
            # cache only prims at or below the scenery owner (siblings may differ); when moving parts are split,
            # only the prim itself (an ancestor's siblings may move on their own)
            chain = [c for c in chain if c.startswith(key)] if not self.split_moving else chain[:1]
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
    split_moving: bool = False,
) -> SceneGeometry:
    """Read a stage's drawable geometry. ``twin_paths`` become the first objects, in that order
    (the StateTable's prim order), so an object index *is* the twin prim index. ``split_moving``
    makes a scenery part with a time-varying transform its own object (for exporters that animate)."""
    if time is None:
        tc = stage_time(stage)
    elif isinstance(time, Usd.TimeCode):
        tc = time
    else:
        tc = Usd.TimeCode(float(time))
    from ..usd._stage import composition_problems

    ex = _Extractor(stage, tc, segments, twin_paths, purposes, split_moving)
    for msg in composition_problems(stage)[:20]:  # say what is missing, not just "nothing to draw"
        ex.note(msg)
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
        geo.parts.append(Part(o, shapes.sphere(1.0, color, ex.segments), str(prim.GetPath())))
    geo.objects = ex.objects
    geo.notes.append(f"material library: {len(mats)} material{'s' if len(mats) != 1 else ''} shown as swatches")
    return True
