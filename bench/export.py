"""Exporting a twin: GLB and USDC against the work they cannot avoid, measured in the same run.

* ``extract`` — ``twinstage.geometry.extract`` of the stage (reading every gprim into triangle
  meshes): the baseline of a GLB export, which adds materials, nodes, extras and the binary
  buffer. Ratio ``glb_ratio`` = ``to_glb`` seconds / ``extract`` seconds.
* ``flatten`` — ``Usd.Stage.Flatten()`` + ``Sdf.Layer.Export`` to ``.usdc``: the bare USD way. Ratio
  ``usdc_ratio`` = ``export_usd`` seconds (stage metadata, repairs, twin values, assets,
  temp file + rename) / ``flatten`` seconds.

Scenes: the pump testbed and a generated factory floor of N machines with conveyor items
(cached under ``out/bench/``). Medians of interleaved rounds. Targets: both ratios ≤ 3.

    python bench/export.py [--sizes 1000,5000] [--repeat N] [--quick] [--json]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from _common import Report, interleaved, log, parse_args

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench" / "export"


def _scene(n: int) -> Path:
    from twinstage.scenes import generate_factory

    path = OUT / f"factory_{n}.usda"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        generate_factory(n, path, items=max(1, n // 10), seed=0)
    return path


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--sizes", default="1000,5000"))
    from pxr import Usd

    from twinstage.export import export_usd, to_glb
    from twinstage.geometry import extract
    from twinstage.usd import open_stage, twin_prims

    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    repeat = args.repeat or (3 if args.quick else 5)
    rep = Report("export", args)
    scenes = [("pump testbed", ROOT / "scenes" / "pump_testbed.usda")] + [(f"factory {n}", _scene(n)) for n in sizes]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        for label, path in scenes:
            log(args, f"{label}: {path}")
            stage = open_stage(path)
            twins = [str(p.GetPath()) for p in twin_prims(stage)]

            def flat() -> None:
                s = Usd.Stage.Open(str(path))
                s.Flatten().Export(str(tmp / "flat.usdc"))

            t = interleaved({
                "extract": lambda: extract(stage, twin_paths=twins),
                "glb": lambda: to_glb(stage),
                "flatten": flat,
                "usdc": lambda: export_usd(path, tmp / "out.usdc"),
            }, repeat=repeat)
            key = label.replace(" ", "_")
            glb_ratio = rep.figure(f"{key}_glb_ratio", t["glb"] / t["extract"])
            usdc_ratio = rep.figure(f"{key}_usdc_ratio", t["usdc"] / t["flatten"])
            for k, v in t.items():
                rep.figure(f"{key}_{k}_s", v)
            rep.figure(f"{key}_glb_bytes", len(to_glb(stage)))
            rep.target(f"{label}: GLB / extract", f"{key}_glb_ratio", glb_ratio, 3.0)
            rep.target(f"{label}: export_usd / flatten", f"{key}_usdc_ratio", usdc_ratio, 3.0)
            rows.append([label, len(twins), t["extract"], t["glb"], glb_ratio, t["flatten"], t["usdc"], usdc_ratio])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep.table("export (median seconds)", ["scene", "twins", "extract", "GLB", "GLB ratio", "flatten", "export_usd", "USDC ratio"], rows)
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
