"""``twinstage run --scenario``, ``twinstage sweep`` and ``twinstage compare`` (argparse + thin commands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(sub: Any, *, count: Any) -> None:
    s = sub.add_parser("sweep", help="run a scenario over a grid / seeded samples of its parameters (docs/scenarios.md)")
    s.add_argument("spec", help="scenario spec (.toml/.yaml)")
    s.add_argument("--grid", action="append", metavar="NAME=lo:hi:n", default=None,
                   help="sweep axis: Prim.attr (initial state), model.param or events.NAME.field; lo:hi:n, v1,v2,… or lo:hi (sampled)")
    s.add_argument("--samples", type=count, help="draw N points over the lo:hi axes")
    s.add_argument("--method", choices=("lhs", "random"), help="sampling method (default lhs)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (each run's model seed is the spec's)")
    s.add_argument("--workers", type=count, default=1, help="local worker processes (0: in this process; default 1)")
    s.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on this Dask distributed scheduler instead "
                   "(local or local:N: start a Dask LocalCluster of N workers, tuned for sweeps, for this sweep)")
    s.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to reach the scheduler (default 5)")
    s.add_argument("-o", "--out", required=True, metavar="DIR", help="results.parquet + runs/<id>/recording.usdc go here")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--metrics-port", type=count, metavar="PORT", help="serve sweep progress as Prometheus metrics on 127.0.0.1:PORT (0: a free port)")
    s.set_defaults(fn=cmd_sweep)
    c = sub.add_parser("compare", help="compare two runs (metrics, per-attribute diff) or summarise a sweep")
    c.add_argument("runs", nargs="+", metavar="RUN", help="two run folders / recordings, or one sweep folder")
    c.add_argument("--diff", metavar="OUT.usdc", help="write B − A as a recording (view it with --record OUT.usdc --color-by ATTR)")
    c.add_argument("--against", metavar="RUN_ID", help="with a sweep folder: diff every run against this one (id or unique prefix)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_compare)


def add_run_arguments(r: argparse.ArgumentParser, *, count: Any) -> None:
    r.add_argument("--scenario", metavar="SPEC", help="run this scenario spec on SCENE headless and check its expectations (exit 1 on a failed one)")
    r.add_argument("--metrics-port", type=count, metavar="PORT", help="serve Prometheus metrics on 127.0.0.1:PORT (0: a free port, printed)")
    r.add_argument("--log-format", choices=("text", "json"), default=None, help="log line format (json: one object per line)")


def _grid(items: list[str] | None) -> dict[str, Any] | None:
    from ._points import parse_axis

    if not items:
        return None
    return dict(parse_axis(x) for x in items)


def cmd_run_scenario(args: argparse.Namespace) -> int:
    """``twinstage run SCENE --scenario SPEC``: SCENE overrides the spec's scene."""
    from pathlib import Path

    from ._runner import run_scenario
    from ._spec import ScenarioError, load_spec, parse_spec

    try:
        spec = load_spec(args.scenario)
        changes: dict[str, Any] = {}
        if args.scene and args.scene != "-":
            scene = Path(args.scene).resolve()
            if not scene.is_file():
                raise ScenarioError(f"{args.scene}: no such scene")
            changes["scene"] = str(scene)
        if args.seed:
            changes["seed"] = args.seed
        if getattr(args, "duration", None):
            changes["duration"] = args.duration
        if changes:  # re-checked like the file itself (e.g. an event after a shortened end)
            spec = parse_spec({**spec.model_dump(mode="json", exclude_none=True), **changes}, spec.path)
        sinks = []
        if getattr(args, "metrics_port", None) is not None:
            from ..observability import MetricsSink

            sinks.append(MetricsSink(args.metrics_port))
            print(f"metrics on http://127.0.0.1:{sinks[-1].listen()}/metrics", flush=True)
        res = run_scenario(spec, record=args.record, sinks=tuple(sinks))
    except ScenarioError as exc:
        print(f"twinstage run: error: {exc}", file=sys.stderr)
        return 2
    print(res.report())
    if res.recording:
        print(f"recorded to {res.recording}")
    return 0 if res.passed else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from ._spec import ScenarioError
    from ._sweep import SweepError, run_sweep

    metrics = None
    if args.metrics_port is not None:
        from ..observability import MetricsSink

        metrics = MetricsSink(args.metrics_port)
        print(f"metrics on http://127.0.0.1:{metrics.listen()}/metrics", flush=True)
    try:
        res = run_sweep(args.spec, args.out, grid=_grid(args.grid), samples=args.samples, method=args.method, seed=args.seed,
                        workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress, connect_timeout=args.connect_timeout,
                        on_progress=metrics.sweep_progress if metrics else None)
    except (ScenarioError, SweepError) as exc:
        print(f"twinstage sweep: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if metrics is not None:
            metrics.close()
    ok = len(res.rows) - len(res.failed)
    print(f"{len(res.rows)} runs ({res.skipped} already done) on {res.executor}: {ok} ok, {len(res.failed)} failed, "
          f"{sum(bool(r['passed']) for r in res.rows)} passed their expectations; results in {res.out / 'results.parquet'}")
    for r in res.failed:
        print(f"failed {r['run_id']}: {r['error']}")
    return 1 if res.failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ._compare import compare_runs, compare_sweep, compare_sweep_against
    from ._spec import ScenarioError

    try:
        if len(args.runs) == 1:
            print(compare_sweep_against(args.runs[0], args.against) if args.against else compare_sweep(args.runs[0]))
            return 0
        if len(args.runs) != 2:
            raise ScenarioError("compare takes two runs (or one sweep folder)")
        cmp = compare_runs(args.runs[0], args.runs[1], diff_out=args.diff)
    except ScenarioError as exc:
        print(f"twinstage compare: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"a": str(cmp.a), "b": str(cmp.b), "ticks": cmp.ticks, "attributes": cmp.attributes,
                          "metrics": [{"metric": k, "a": x, "b": y} for k, x, y in cmp.metrics],
                          "diff_recording": str(cmp.diff_recording) if cmp.diff_recording else None}, allow_nan=True))
    else:
        print(cmp.report())
    return 0
