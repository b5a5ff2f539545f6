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


def make_server(args: argparse.Namespace) -> Any:
    from ._auth import Token
    from ._server import Server

    tokens = [Token.parse(t) for t in (args.token or [])]
    anonymous = "default" if args.anonymous is None else (None if args.anonymous == "none" else args.anonymous)
    http = args.http
    if http == "auto":
        http = browser_client_dir()
    return Server(args.host, args.port, tokens=tokens, tokens_file=args.tokens, anonymous=anonymous, origins=args.origin or [], http_dir=http)


def describe(server: Any) -> str:
    auth = server.auth
    who = ", ".join(f"{t.name} ({t.role})" for t in auth.tokens) or "none"
    anon = auth.anonymous or "refused"
    lines = [f"  bridge {server.url}  session {server.session}", f"  tokens: {who}; without a token: {anon}"]
    if server.http_dir is not None:
        lines.append(f"  browser client: http://{server.host}:{server.port}/ (add ?token=SECRET for a token)")
    return "\n".join(lines)


def run_serve(args: argparse.Namespace) -> int:
    import twinstage

    from ._auth import AuthError

    try:
        server = make_server(args)
    except (AuthError, OSError) as exc:
        print(f"twinstage serve: error: {exc}", file=sys.stderr)
        return 2
    twin = twinstage.open(args.scene, rate=args.rate, realtime=True, seed=args.seed)
    try:
        twin.add_sink(server)
    except OSError as exc:
        twin.close()
        print(f"twinstage serve: error: {exc}", file=sys.stderr)
        return 2
    print(f"twinstage serve: {args.scene} — {len(twin.table.prims)} twin prims, {twin.table.n_entries} values at {args.rate:g} Hz")
    print(describe(server), flush=True)

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
    print(f"twinstage serve: stopped after {st['tick']} ticks; {server.stats().get('connections', 0)} connections served", flush=True)
    return 0
