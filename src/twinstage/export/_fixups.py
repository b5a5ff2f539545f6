"""Repairs applied to a flattened layer before it is written, each reported as a note.

Only repairs that keep what every reader draws: the USD spec or the validators say the
original is wrong and the fix does not change the picture.

* ``over``-only prims are dropped (they are not part of the composed scene; NVIDIA's
  DanglingOverPrimChecker flags them);
* shader outputs typed ``vector3f``/``normal3f`` where UsdPreviewSurface's nodes declare
  ``float3`` (``UsdUVTexture.outputs:rgb``, ``UsdPrimvarReader_float3.outputs:result``) are retyped;
  ``UsdPrimvarReader*.inputs:varname`` authored as a token becomes a string (the current spec);
* subdivision meshes lose authored normals (USD ignores them there: "normals are not
  used for subdivision surfaces");
* boundable prims without ``extent`` get one computed from their points/shape.
"""

from __future__ import annotations

from pxr import Sdf, Usd, UsdGeom

_FLOAT3_OUTPUTS = {"UsdUVTexture": ("outputs:rgb",), "UsdPrimvarReader_float3": ("outputs:result",)}


def fix_flat_layer(flat: Sdf.Layer, notes: list[str]) -> None:
    _drop_overs(flat, notes)
    _shader_types(flat, notes)
    _subdiv_normals(flat, notes)
    _extents(flat, notes)


def _walk(layer: Sdf.Layer):
    stack = list(layer.rootPrims)
    while stack:
        ps = stack.pop()
        yield ps
        stack.extend(ps.nameChildren)


def _internal_targets(flat: Sdf.Layer) -> set[Sdf.Path]:
    out = set()
    for ps in _walk(flat):
        for arcs in (ps.referenceList, ps.payloadList):
            out.update(r.primPath for r in arcs.GetAddedOrExplicitItems() if not r.assetPath and r.primPath)
    return out


def _drop_overs(flat: Sdf.Layer, notes: list[str]) -> None:
    """Drop over-only prims; overs that internal references target (what ``Flatten`` writes for
    instance prototypes) become ``class`` prims: abstract, still composed where referenced."""
    targets = _internal_targets(flat)
    dropped = []
    stack = [flat.pseudoRoot]
    while stack:
        parent = stack.pop()
        for child in list(parent.nameChildren):
            if child.specifier == Sdf.SpecifierOver and child.path in targets and parent == flat.pseudoRoot:
                child.specifier = Sdf.SpecifierClass
            elif child.specifier == Sdf.SpecifierOver:
                dropped.append(str(child.path))
                del parent.nameChildren[child.name]
            else:
                stack.append(child)
    if dropped:
        notes.append(f"{len(dropped)} over-only prims dropped (not part of the composed scene): {', '.join(dropped[:3])}"
                     f"{'…' if len(dropped) > 3 else ''}")


def _retype(ps: Sdf.PrimSpec, name: str, type_name: Sdf.ValueTypeName, value=None) -> None:
    old = ps.attributes[name]
    conns = list(old.connectionPathList.GetAddedOrExplicitItems())
    default = old.default if old.HasDefaultValue() else None
    ps.RemoveProperty(old)
    new = Sdf.AttributeSpec(ps, name, type_name)
    if conns:
        new.connectionPathList.explicitItems = conns
    if value is not None:
        new.default = value
    elif default is not None and type_name == Sdf.ValueTypeNames.Float3:
        new.default = tuple(default)


def _shader_types(flat: Sdf.Layer, notes: list[str]) -> None:
    fixed = 0
    for ps in _walk(flat):
        if ps.typeName != "Shader":
            continue
        ident = ps.attributes.get("info:id")
        sid = str(ident.default) if ident is not None and ident.default else ""
        for name in _FLOAT3_OUTPUTS.get(sid, ()):
            a = ps.attributes.get(name)
            if a is not None and a.typeName != Sdf.ValueTypeNames.Float3:
                _retype(ps, name, Sdf.ValueTypeNames.Float3)
                fixed += 1
        if sid.startswith("UsdPrimvarReader"):
            a = ps.attributes.get("inputs:varname")
            if a is not None and a.typeName == Sdf.ValueTypeNames.Token:
                _retype(ps, "inputs:varname", Sdf.ValueTypeNames.String, str(a.default) if a.default is not None else "")
                fixed += 1
    if fixed:
        notes.append(f"{fixed} shader inputs/outputs retyped to what UsdPreviewSurface declares (float3 outputs, string varname)")


def _subdiv_normals(flat: Sdf.Layer, notes: list[str]) -> None:
    cleared = []
    for ps in _walk(flat):
        if ps.typeName != "Mesh":
            continue
        scheme = ps.attributes.get("subdivisionScheme")
        if scheme is not None and str(scheme.default) == "none":
            continue
        for name in ("normals", "primvars:normals", "primvars:normals:indices"):
            a = ps.attributes.get(name)
            if a is not None:
                ps.RemoveProperty(a)
                cleared.append(str(ps.path))
    if cleared:
        notes.append(f"authored normals removed from {len(set(cleared))} subdivision meshes (USD ignores them there)")


def _extents(flat: Sdf.Layer, notes: list[str]) -> None:
    stage = Usd.Stage.Open(flat)
    added = 0
    for prim in stage.Traverse():
        if not prim.IsA(UsdGeom.Boundable):
            continue
        b = UsdGeom.Boundable(prim)
        if b.GetExtentAttr().HasAuthoredValue():
            continue
        extent = UsdGeom.Boundable.ComputeExtentFromPlugins(b, Usd.TimeCode.Default())
        if extent is None:
            extent = UsdGeom.Boundable.ComputeExtentFromPlugins(b, Usd.TimeCode.EarliestTime())
        if extent is None:
            continue
        b.CreateExtentAttr(extent)
        added += 1
    if added:
        notes.append(f"extent computed and authored on {added} prims that had none")
