"""``twinstage`` command line: thin wrappers over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence


_QUANTITY = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s.+-].*?)\s*")


def _value(text: str) -> Any:
    """JSON (``0.4``, ``true``, ``[1, 2, 3]``), or a number with a unit (``77 degF`` → ``(77.0, "degF")``,
    converted like ``twin.set(path, name=(77.0, "degF"))``), else the text (rejected by the twin with a message)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    m = _QUANTITY.fullmatch(text)
    if m:
        return float(m.group(1)), m.group(2)
    return text


def plural(n: int, word: str) -> str:
    """``1 error``, ``2 errors``, ``0 errors``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _parse_set(items: Sequence[str]) -> list[tuple[str, str, Any]]:
    out = []
    for item in items:
        prim, sep, rest = item.partition(".")
        name, eq, value = rest.partition("=")
        if not sep or not eq or not prim.startswith("/") or not name:
            raise SystemExit(f"--set {item!r}: expected /Prim/Path.attribute=value")
        out.append((prim, name, _value(value)))
    return out


def _count(text: str) -> int:
    """argparse type: an integer >= 0 (a bad value is a usage error, not a traceback)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {n}")
    return n


def _finite(minimum: float, *, strict: bool) -> Any:
    """argparse type: a finite number above ``minimum`` (``strict``) or at least it."""
    what = f"a finite number {'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(x) and (x > minimum if strict else x >= minimum)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return x

    return parse


_positive = _finite(0.0, strict=True)
_nonnegative = _finite(0.0, strict=False)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    import twinstage

    if getattr(args, "log_format", None):  # structured logs (observability)
        from ..observability import configure_logging

        configure_logging(args.log_format, level=logging.INFO if args.verbose else logging.WARNING)
    if getattr(args, "scenario", None):  # a scenario spec: headless runner + expectations (docs/scenarios.md)
        from ..scenarios._cli import cmd_run_scenario

        return cmd_run_scenario(args)
    paced = args.realtime or args.speed is not None  # --speed N: N× real time; without it as fast as possible
    twin = twinstage.open(args.scene, rate=args.rate, realtime=paced, speed=args.speed or 1.0, seed=args.seed)
    if getattr(args, "metrics_port", None) is not None:  # Prometheus endpoint (observability)
        from ..observability import MetricsSink

        print(f"metrics on {twin.add_sink(MetricsSink(args.metrics_port)).url}", flush=True)
    with twin:
        duration = args.duration
        if args.replay or args.mqtt or args.opcua:  # telemetry: bindings from the scene (docs/telemetry.md)
            from ..telemetry import _attach

            for path in args.replay or []:
                src = _attach.attach_replay(twin, path)
                end = float(src.sim_time[-1]) if len(src.sim_time) else 0.0
                print(f"replay {path}: {len(src.data)} rows, {len(src.bindings)} bindings, sim {src.sim_time[0] if len(src.sim_time) else 0:g}..{end:g} s")
                if args.ticks is None and args.duration is None:
                    duration = max(duration or 0.0, end + 1.0 / args.rate)
            for address in args.mqtt or []:
                print(f"mqtt {_attach.attach_mqtt(twin, address).describe()}")
            for url in args.opcua or []:
                print(f"opcua {_attach.attach_opcua(twin, url).describe()}")
        if getattr(args, "params", None):  # calibration layer (fidelity): identifiable parameters only
            from ..fidelity import CalibrationError, apply_params

            try:
                res = apply_params(twin, args.params)
            except CalibrationError as exc:
                print(f"twinstage run: error: {exc}", file=sys.stderr)
                return 2
            print(f"params {args.params}: applied {', '.join(res['applied']) or 'none'}"
                  + (f"; skipped (not identifiable) {', '.join(res['skipped'])}" if res["skipped"] else ""))
        for prim, name, value in _parse_set(args.set or []):
            twin.set(prim, **{name: value})
        live = {}
        if getattr(args, "assimilate", False) or getattr(args, "detect", False):  # fidelity: Kalman stage, live anomaly alarm
            from ..fidelity._cli import attach_live

            live = attach_live(twin, assimilate=args.assimilate, detect=args.detect)
        if args.record:
            twin.record(args.record, reproducible=args.reproducible)
        if args.ticks is not None:
            twin.run(ticks=args.ticks)
        else:
            twin.run(duration=10.0 if duration is None else duration)
        lines = _attach.summary(twin) if args.replay or args.mqtt or args.opcua else []
    st = twin.stats()
    print(f"ran {plural(st['tick'], 'tick')} ({st['sim_time']:.3f} s sim) of {args.scene}; {twin.table.n_entries} values, "
          f"max per-prim staleness {st['writer']['max_staleness_s']:.3f} s, {plural(st['errors'], 'error')}")
    if lines:
        print("telemetry:\n" + "\n".join(lines))
    if live:
        from ..fidelity._cli import live_summary

        print("\n".join(live_summary(live)))
    if args.record:
        print(f"recorded to {args.record}")
    return 1 if twin.errors else 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..units import format_unit, with_unit
    from ..usd import describe, open_stage

    info = describe(open_stage(args.file, load=args.load))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['file']}\n  defaultPrim {info['defaultPrim']}  upAxis {info['upAxis']}  metersPerUnit {info['metersPerUnit']}"
          f"{'' if info['metersPerUnitAuthored'] else ' (not authored)'}  prims {info['prims']}")
    if info["timeRange"]:
        print(f"  time {info['timeRange'][0]}..{info['timeRange'][1]} at {info['timeCodesPerSecond']} codes/s")
    for m in info.get("missing", []):
        print(f"  missing: {m}")
    print("hierarchy:")
    for h in info["hierarchy"]:
        depth = h["path"].count("/") - 1
        extra = " ".join(x for x in (h["kind"], "payload" if h["payload"] else "", "unloaded" if not h["loaded"] else "",
                                        " ".join(f"{k}={v}" for k, v in h["variants"].items())) if x)
        print(f"  {'  ' * depth}{h['path'].rsplit('/', 1)[-1]} <{h['type'] or '-'}> {extra}".rstrip())
    if info["twinPrims"]:
        print(f"twin prims ({len(info['twinPrims'])}):")
        for t in info["twinPrims"]:
            print(f"  {t['path']}  kind={t['kind']} model={t['model'] or '-'} id={t['assetId']}")
            for a in t["attributes"]:
                print(f"      twin:{a['name']} = {with_unit(a['value'], a['unit'])}  [{a['type']}, {a['role']}, {a['min']}..{a['max']}]")
    else:
        print(f"no twin prims; candidate assets ({len(info['candidateAssets'])}):")
        for c in info["candidateAssets"]:
            print(f"  {c['path']} <{c['type']}> {c['kind']}")
    if info.get("bindings"):
        print(f"telemetry bindings ({len(info['bindings'])}):")
        for b in info["bindings"]:
            conv = "".join(x for x in (f" ×{b['scale']:g}" if b["scale"] != 1 else "", f" {b['offset']:+g}" if b["offset"] else ""))
            unit = (format_unit(b["unit"]) or "1") if b["unit"] else "same unit"
            print(f"  {b['prim']}.twin:{b['attribute']} ← {b['kind']} {b['key']!r} [{unit}{conv}]  "
                  f"period {b['period']:g} s, {b['align']}, stale after ×{b['staleAfter']:g}  ({b['name']})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..usd._validate import summary, validate

    findings = validate(args.file, usd_validators=not args.no_usd_validators)
    s = summary(findings)
    if args.json:
        print(json.dumps({"file": str(args.file), **s, "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f)
        print(f"{args.file}: {plural(s['errors'], 'error')}, {plural(s['warnings'], 'warning')}")
    return 1 if s["errors"] else 0


def cmd_scene(args: argparse.Namespace) -> int:
    from ..scenes import build_pump_testbed, generate_factory

    if args.scene_cmd == "generate":
        generate_factory(args.assets, args.out, items=args.items, seed=args.seed)
        print(f"wrote {args.out}: {args.assets} machines, {args.items} conveyor items")
    else:
        build_pump_testbed(args.out, parts=args.parts)
        print(f"wrote {args.out}")
    return 0


def cmd_export_animation(args: argparse.Namespace) -> int:
    from ..usd._recorder import Recording

    out = Recording(args.recording).export_per_prim(args.out)
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    ticks = args.ticks if args.ticks is not None else (None if args.serve is not None else 1200)  # served: until Ctrl-C
    return run_demo(Path(args.out), ticks=ticks, realtime=args.realtime, serve=args.serve, view=args.view, screenshot=args.screenshot,
                    data=Path(args.data) if args.data else None)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..bridge._cli import run_serve

    return run_serve(args)


def cmd_bind(args: argparse.Namespace) -> int:
    from ..telemetry._cli import run_bind

    return run_bind(args)


def cmd_view(args: argparse.Namespace) -> int:
    from ..viewer._cli import run_view

    return run_view(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinstage", description="A digital twin runtime on OpenUSD.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("run", help="run a twin scene")
    r.add_argument("scene")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--ticks", type=_count)
    g.add_argument("--duration", type=_nonnegative, help="sim seconds (default 10; with --replay: to the end of the file)")
    r.add_argument("--rate", type=_positive, default=10.0, help="ticks per sim second (default 10)")
    r.add_argument("--realtime", action="store_true", help="pace ticks to the wall clock")
    r.add_argument("--replay", action="append", metavar="FILE", help="replay a CSV (SKAB ';' or plain) or Parquet file through the scene's bindings")
    r.add_argument("--speed", type=_positive, metavar="N", help="pace at N× real time (default: as fast as possible; --realtime: 1×)")
    r.add_argument("--mqtt", action="append", metavar="HOST:PORT", help="subscribe to the scene's mqtt bindings on this broker")
    r.add_argument("--opcua", action="append", metavar="opc.tcp://HOST:PORT/…", help="subscribe to the scene's opcua bindings on this server")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--record", metavar="OUT.usdc")
    r.add_argument("--reproducible", action="store_true", help="no wall-clock times in the recording: same inputs, same bytes")
    r.add_argument("--set", action="append", metavar="/Prim.attr=value", help="initial input, e.g. /Testbed/Valve1.opening=0.4")
    r.add_argument("--params", metavar="PARAMS.usda", help="calibrated model parameters (twinstage calibrate -o ...; docs/fidelity.md)")
    r.add_argument("--assimilate", action="store_true", help="Kalman-blend simulated attributes with their sensors' readings (ESTIMATED, ± std)")
    r.add_argument("--detect", action="store_true", help="run the live anomaly detector; its score and alarm become twin state")
    from ..scenarios._cli import add_parsers as add_scenario_parsers, add_run_arguments  # --scenario, --metrics-port; sweep, compare

    add_run_arguments(r, count=_count)
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("info", help="hierarchy, twin prims, attributes and units of a USD file")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.add_argument("--load", choices=("all", "none"), default="all", help="'none' leaves payloads unloaded")
    i.set_defaults(fn=cmd_info)

    v = sub.add_parser("validate", help="OpenUSD validators + twin schema checks (exit 1 on errors)")
    v.add_argument("file")
    v.add_argument("--json", action="store_true")
    v.add_argument("--no-usd-validators", action="store_true", help="only stage-convention and twin checks")
    v.set_defaults(fn=cmd_validate)

    s = sub.add_parser("scene", help="build sample scenes")
    ssub = s.add_subparsers(dest="scene_cmd", required=True)
    sg = ssub.add_parser("generate", help="a factory floor of N machines (thermal) and conveyor items")
    sg.add_argument("--assets", type=_count, required=True)
    sg.add_argument("--items", type=_count, default=0)
    sg.add_argument("--seed", type=int, default=0)
    sg.add_argument("-o", "--out", required=True)
    sp = ssub.add_parser("pump", help="the SKAB pump testbed")
    sp.add_argument("-o", "--out", required=True)
    sp.add_argument("--parts", help="where to write the mesh parts file (default beside the scene)")
    s.set_defaults(fn=cmd_scene)

    e = sub.add_parser("export-animation", help="recording → per-prim time samples (Omniverse/usdview animation)")
    e.add_argument("recording")
    e.add_argument("out")
    e.set_defaults(fn=cmd_export_animation)

    d = sub.add_parser("demo", help="run the pump testbed on embedded defaults and record it")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--ticks", type=_count, help="ticks at 10 Hz (default 1200 = 2 sim minutes; with --serve: until Ctrl-C)")
    d.add_argument("--realtime", action="store_true")
    d.add_argument("--serve", type=_count, metavar="PORT",
                   help="also serve the twin over the websocket bridge on 127.0.0.1:PORT (paces in real time; prints generated tokens)")
    d.add_argument("--view", action="store_true", help="show it live in a window (10x real time); without a display: a screenshot of the final state")
    d.add_argument("--screenshot", metavar="OUT.png", help="write a screenshot of the final state (offscreen)")
    d.add_argument("--data", metavar="DIR", help="where SKAB lives (default ../shared/data); without it the demo generates its own data")
    d.set_defaults(fn=cmd_demo)

    b = sub.add_parser("serve", help="run a twin in real time and serve it over the websocket bridge (docs/protocol.md)")
    b.add_argument("scene")
    b.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    b.add_argument("--port", type=_count, default=8765, help="0 picks a free port (printed)")
    b.add_argument("--rate", type=_positive, default=10.0, help="ticks per second (default 10)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--duration", type=_nonnegative, help="stop after this many sim seconds (default: until Ctrl-C)")
    b.add_argument("--tokens", metavar="FILE", help="tokens file: NAME:ROLE:SECRET per line (roles viewer, operator, admin)")
    b.add_argument("--token", action="append", metavar="NAME:ROLE:SECRET",
                   help="a token; SECRET at least 8 characters (visible in ps: prefer --tokens). "
                        "Default: an operator and a viewer token are generated and printed")
    b.add_argument("--anonymous", choices=("none", "viewer", "operator", "admin"),
                   help="role without a token (default: viewer if no tokens are given, else none)")
    b.add_argument("--origin", action="append", metavar="URL", help="browser Origin to allow besides the server's own ('*' for any)")
    b.add_argument("--http", metavar="DIR", help="also serve DIR's static files over HTTP ('auto': the browser client of a checkout)")
    b.add_argument("--ingest", nargs="?", const="scene", metavar="MAPPING",
                   help="take telemetry pushed by clients with an ingest-role token: the ingest bindings of MAPPING (a mapping file), "
                        "or of the scene when no file is given")
    b.add_argument("--fanout-procs", type=_count, default=0, metavar="N",
                   help="serve clients from N worker processes sharing the port (the twin ticks alone in this one); default 0: one process")
    b.add_argument("--glb-max-prims", type=_count, default=None, metavar="N",
                   help="no scene GLB (/scene.glb) for a scene of more than N twin prims: clients draw a box per asset "
                        "(default 100000; scenes over 5000 prims build it in the background after the server starts)")
    b.add_argument("--metrics-port", type=_count, metavar="PORT", help="serve Prometheus metrics (twin and bridge) on 127.0.0.1:PORT (0: a free port, printed)")
    b.set_defaults(fn=cmd_serve)

    from ..viewer._cli import add_parser as add_view_parser  # argparse only: no GPU code is imported
    from ..export._cli import add_parsers as add_export_parsers  # argparse only: export/import commands

    add_export_parsers(sub)

    bd = sub.add_parser("bind", help="write a mapping file's telemetry bindings into a layer over the scene (docs/telemetry.md#bindings)")
    bd.add_argument("scene", help="the scene whose prims the bindings feed (never modified)")
    bd.add_argument("--map", required=True, metavar="FILE", help="mapping file: .toml, or .yaml/.yml")
    bd.add_argument("-o", "--out", metavar="LAYER.usda", help="bindings layer to write (default <scene>_bindings.usda beside the scene)")
    bd.add_argument("--check", action="store_true", help="validate the mapping against the scene; write nothing")
    bd.add_argument("--json", action="store_true", help="print the bindings as JSON")
    bd.set_defaults(fn=cmd_bind)

    add_view_parser(sub, count=_count, positive=_positive).set_defaults(fn=cmd_view)

    from ..fidelity._cli import add_parsers as add_fidelity_parsers  # calibrate, detect (argparse only)

    add_fidelity_parsers(sub)
    add_scenario_parsers(sub, count=_count)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    if not args.cmd:
        parser.print_help()
        return 2
    from ..models import ModelError
    from ..state import StateError
    from ..units import UnitError
    from ..telemetry._source import TelemetryError
    from ..usd import SchemaError, StageError

    try:
        return args.fn(args)
    except (StageError, SchemaError, StateError, ModelError, UnitError, TelemetryError) as exc:
        print(f"twinstage {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
