"""``twinstage export`` and ``twinstage import``: argparse wiring only (the work is in the package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("usda", "usdc", "usdz", "glb")


def add_parsers(sub) -> None:
    e = sub.add_parser("export", help="scene or recording → USD/USDA/USDC/USDZ (Omniverse) or GLB (Unity, three.js)",
                       description="Export a scene, or a run's recording (with its animation), for other engines. "
                                   "See docs/export.md.")
    e.add_argument("source", metavar="SCENE_OR_RUN", help="a scene (.usd/.usda/.usdc/.usdz) or a recording (twinstage run --record)")
    e.add_argument("--format", choices=FORMATS, help="default: from the output's extension")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--layers", choices=("flatten", "keep"), default="flatten",
                   help="flatten (default): one self-contained file; keep: state/animation as a layer over the untouched scene")
    e.add_argument("--recording", metavar="RUN.usdc", help="a recording of SCENE whose animation to include")
    e.add_argument("--no-animation", action="store_true", help="from a recording: only its final state, no time samples")
    e.set_defaults(fn=run_export)

    i = sub.add_parser("import", help="glTF/GLB/OBJ/STL/PLY → USD mesh asset referenced into a scene",
                       description="Convert a mesh into a UsdGeom.Mesh asset in assets/ beside the scene and reference it "
                                   "at --at (units and up axis converted). See docs/export.md.")
    i.add_argument("mesh", metavar="MESH")
    i.add_argument("--into", required=True, metavar="SCENE", help="the scene to add it to (edited in place)")
    i.add_argument("--at", required=True, metavar="/Path", help="the new prim, e.g. /World/Pump")
    i.add_argument("--as-twin", metavar="KIND", help="declare the new prim a twin asset of this kind")
    i.add_argument("--up-axis", choices=("Y", "Z"), help="the mesh's up axis (default: Y for glTF/OBJ, Z for STL/PLY)")
    i.add_argument("--unit", choices=("m", "cm", "mm", "in", "ft"), help="the mesh's unit (default m)")
    i.set_defaults(fn=run_import)


def run_export(args: argparse.Namespace) -> int:
    from ._common import ExportError

    out = Path(args.out)
    fmt = args.format or out.suffix.lstrip(".").lower()
    try:
        if fmt == "glb":
            from ._glb import to_glb

            if args.layers != "flatten" or args.no_animation:
                raise ExportError("--layers keep and --no-animation apply to USD formats only")
            path = to_glb(args.source, out, recording=args.recording)
            notes: list[str] = []
        elif fmt in ("usda", "usdc", "usdz"):
            from ._usd import export_usd

            res = export_usd(args.source, out, fmt=fmt, layers=args.layers, recording=args.recording,
                             animation=not args.no_animation)
            path, notes = res.path, res.notes
            if res.assets:
                notes.append(f"{len(res.assets)} assets packaged")
        else:
            raise ExportError(f"{out}: cannot tell the format from the extension; pass --format {'|'.join(FORMATS)}")
    except ExportError as exc:
        print(f"twinstage export: error: {exc}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ._common import ExportError
    from ._import import import_mesh

    try:
        res = import_mesh(args.mesh, args.into, args.at, as_twin=args.as_twin, up_axis=args.up_axis, unit=args.unit)
    except ExportError as exc:
        print(f"twinstage import: error: {exc}", file=sys.stderr)
        return 2
    for n in res.notes:
        print(f"note: {n}")
    for src, dst in res.names.items():
        print(f"note: node {src!r} renamed {dst!r} (not a valid USD name)")
    print(f"imported {res.meshes} meshes ({res.vertices} vertices, {res.faces} triangles) into {args.into} at {res.prim}; "
          f"asset {res.asset}")
    return 0
