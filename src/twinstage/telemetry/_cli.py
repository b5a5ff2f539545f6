"""``twinstage bind SCENE --map FILE [-o LAYER.usda] [--check] [--json]``: a mapping file → a bindings layer.

The arguments are declared in ``twinstage.cli`` (argparse only, so ``twinstage --help``
imports no numpy); this is the command's code."""

from __future__ import annotations

import argparse
import collections
import json
import sys


def run_bind(args: argparse.Namespace) -> int:
    from ..usd import SchemaError, StageError
    from ._mapping import load_mapping, validate_mapping, write_bindings_layer
    from ._source import TelemetryError

    try:
        mapping = load_mapping(args.map)
        if args.check:
            from ..usd import open_stage

            bindings = validate_mapping(mapping, open_stage(args.scene))
            out = None
        else:
            out, bindings = write_bindings_layer(args.scene, mapping, args.out)
    except (TelemetryError, SchemaError, StageError) as exc:
        print(f"twinstage bind: error: {exc}", file=sys.stderr)
        return 2
    kinds = collections.Counter(b.kind for b in bindings)
    if args.json:
        rows = [{**b.__dict__, "staleAfter": b.stale_after} for b in bindings]
        for r in rows:
            r.pop("stale_after")
        print(json.dumps({"scene": args.scene, "map": args.map, "out": str(out) if out else None, "bindings": rows}, indent=2))
        return 0
    what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if out is None:
        print(f"{args.map}: {len(bindings)} bindings ({what}) fit {args.scene}")
    else:
        print(f"wrote {out}: {len(bindings)} bindings ({what}) over {args.scene}; open {out} for the scene with its bindings")
    return 0
