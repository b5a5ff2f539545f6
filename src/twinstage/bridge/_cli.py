"""``twinstage serve SCENE``: run a twin in real time and serve it over the bridge."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any


def browser_client_dir() -> Path | None:
    """examples/browser of a source checkout, if there is one (the wheel does not ship it)."""
    d = Path(__file__).resolve().parents[3] / "examples" / "browser"
    return d if (d / "index.html").is_file() else None


#: what a ``--token`` must look like (in its error message and docs/protocol.md)
TOKEN_RULES = ("a token is NAME:ROLE:SECRET — NAME of letters, digits and _.@-; ROLE viewer, operator, admin or ingest (a viewer that may push telemetry: ``ingest`` messages, with serve --ingest); "
               "SECRET at least 8 characters (python -c 'import secrets; print(secrets.token_urlsafe())' makes a good one). "
               "Without --token/--tokens, an operator and a viewer token are generated and printed")


def generated_tokens() -> list[Any]:
    """An operator and a viewer token with fresh random secrets, for a server started without any."""
    import secrets

    from twinstage.bridge import Token

    return [Token("operator", "operator", secrets.token_urlsafe(16)), Token("viewer", "viewer", secrets.token_urlsafe(16))]


def make_server(args: argparse.Namespace) -> Any:
    from twinstage.bridge import AuthError, Server, Token

    tokens = []
    for spec in args.token or []:
        try:
            tokens.append(Token.parse(spec))
        except AuthError as exc:
            raise AuthError(f"--token: {exc}. Rules: {TOKEN_RULES}") from None
    generated = [] if tokens or args.tokens else generated_tokens()
    anonymous = "default" if args.anonymous is None else (None if args.anonymous == "none" else args.anonymous)
    http = args.http
    if http == "auto":
        http = browser_client_dir()
    procs = getattr(args, "fanout_procs", 0) or 0
    glb = {} if getattr(args, "glb_max_prims", None) is None else {"glb_max_prims": args.glb_max_prims}
    if procs:
        from ._fanout import FanoutHub

        server = FanoutHub(args.scene, procs, args.host, args.port, open_kwargs={"rate": args.rate, "realtime": True, "seed": args.seed},
                           server_kwargs={"tokens": tokens + generated, "tokens_file": args.tokens, "anonymous": anonymous,
                                          "origins": args.origin or [], "http_dir": str(http) if http else None, **glb})
    else:
        server = Server(args.host, args.port, tokens=tokens + generated, tokens_file=args.tokens, anonymous=anonymous, origins=args.origin or [],
                        http_dir=http, **glb)
    server.generated_tokens = generated
    return server


def build_ingest(twin: Any, spec: str) -> Any:
    """The :class:`~twinstage.telemetry.BridgeIngestSource` of ``serve --ingest``, added to ``twin``.

    ``spec``: a mapping file (TOML/YAML, ``twinstage.telemetry.load_mapping``) whose bindings of
    kind ``ingest`` are used, or ``scene`` for the scene's own ingest bindings. Raises
    TelemetryError (a MappingError names file, binding and field) when there is none or one is bad.
    """
    from twinstage.telemetry import TelemetryError
    from twinstage.telemetry._ingest import BridgeIngestSource

    if spec == "scene":
        from twinstage.usd._binding import read_bindings

        bindings = read_bindings(twin.stage, "ingest")
        where = "the scene"
    else:
        from twinstage.telemetry import load_mapping, validate_mapping

        bindings = [b for b in validate_mapping(load_mapping(spec), twin.stage, twin.table) if b.kind == "ingest"]
        where = spec
    if not bindings:
        raise TelemetryError(f"{where}: no bindings of kind 'ingest' (a binding with kind = \"ingest\" and key = the name clients push)")
    src = BridgeIngestSource(bindings)
    twin.add_source(src)
    return src


def example_input(twin: Any) -> tuple[str, str, Any] | None:
    """A (prim, attribute, current value) an operator may set: the first scalar ``input`` attribute of the twin."""
    table = twin.table
    for ch in table.channels.values():
        if ch.type in ("float", "int", "bool"):
            for row, role in enumerate(ch.role):
                if role == "input":
                    prim = table.prims[int(ch.prim_index[row])]
                    return prim, ch.name, table.get(prim, ch.name)
    return None


def python_snippet(url: str, token: str, example: tuple[str, str, Any] | None) -> str:
    """The client code ``serve``/``demo --serve`` print; it runs as printed (the README shows the same)."""
    if example is None:
        prim, attr, value = "/", "", None
        act = ""
    else:
        prim, attr, value = example
        act = f'        await c.set("{prim}", "{attr}", {value!r})   # acked once the twin accepted it\n'
    show = f'c.get("{prim}", "{attr}"), ' if example else ""
    return f"""import asyncio
from twinstage.bridge import Client

async def main():
    async with Client("{url}", token="{token}") as c:   # the operator token
        await c.subscribe(prefixes=["{prim.rsplit("/", 1)[0] or "/"}"])
{act}        await asyncio.sleep(1.0)
        print(c.tick, {show}len(c.values()), "values")

asyncio.run(main())"""


def describe(server: Any, example: tuple[str, str, Any] | None = None, until_interrupted: bool = True) -> str:
    """What a user needs to connect: the URLs (with the generated tokens) and a Python snippet that works as printed."""
    auth = server.auth
    who = ", ".join(f"{t.name} ({t.role})" for t in auth.tokens) or "none"
    anon = auth.anonymous or "refused"
    lines = [f"  bridge {server.url}  session {server.session}", f"  tokens: {who}; without a token: {anon}"]
    generated = {t.role: t for t in getattr(server, "generated_tokens", [])}
    page = f"http://{server.host}:{server.port}/"
    if server.http_dir is not None:
        if generated:
            lines.append(f"  browser client, operator (may set values, pause, step): {page}?token={generated['operator'].secret}")
            lines.append(f"  browser client, viewer (read-only):                     {page}?token={generated['viewer'].secret}")
        else:
            lines.append(f"  browser client: {page}?token=YOUR-SECRET (a secret you gave with --token/--tokens)")
    if "operator" in generated:
        lines += ["  from Python, while this twin runs:", "", python_snippet(server.url, generated["operator"].secret, example), ""]
    if until_interrupted:
        lines.append("  running until Ctrl-C")
    return "\n".join(lines)


def run_serve(args: argparse.Namespace) -> int:
    import twinstage

    from twinstage.bridge import AuthError

    try:
        server = make_server(args)
    except (AuthError, OSError) as exc:
        print(f"twinstage serve: error: {exc}", file=sys.stderr)
        return 2
    twin = twinstage.open(args.scene, rate=args.rate, realtime=True, seed=args.seed)
    try:
        if getattr(args, "ingest", None):
            server.ingest = build_ingest(twin, args.ingest)
        twin.add_sink(server)
        if getattr(args, "metrics_port", None) is not None:
            from twinstage.observability import MetricsSink
            from twinstage.observability._metrics import bridge_counters

            metrics = twin.add_sink(MetricsSink(args.metrics_port))
            metrics.set_bridge(bridge_counters(server))
            print(f"twinstage serve: metrics on {metrics.url}", flush=True)
    except Exception as exc:
        from twinstage.telemetry import TelemetryError

        if not isinstance(exc, (OSError, TelemetryError)):
            raise
        twin.close()
        print(f"twinstage serve: error: {exc}", file=sys.stderr)
        return 2
    fan = f"; fan-out: {server.procs} worker processes" if getattr(server, "procs", 0) else ""
    print(f"twinstage serve: {args.scene} — {len(twin.table.prims)} twin prims, {twin.table.n_entries} values at {args.rate:g} Hz{fan}")
    print(describe(server, example_input(twin), until_interrupted=args.duration is None), flush=True)
    if server.ingest is not None:
        print(f"  ingest: {server.ingest.describe()}: keys {', '.join(server.ingest.keys[:8])}{' …' if len(server.ingest.keys) > 8 else ''}",
              flush=True)

    def _stop(*_: Any) -> None:
        twin.stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with twin:
            if args.duration is not None:
                twin.run(duration=args.duration, wait_when_paused=True)
            else:
                twin.run(ticks=sys.maxsize, wait_when_paused=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    st = twin.stats()
    from twinstage.cli import plural

    print(f"twinstage serve: stopped after {plural(st['tick'], 'tick')}; {plural(server.stats().get('connections', 0), 'connection')} served",
          flush=True)
    return 0
