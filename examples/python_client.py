"""Watch (and optionally drive) a running twin over the websocket bridge.

    twinstage serve scenes/pump_testbed.usda --token ops:operator:change-me-please &
    python examples/python_client.py ws://127.0.0.1:8765/ --token change-me-please --set /Testbed/Valve1.opening=0.3

Prints the subscribed values once a second; ``--set`` sends one set (operator token needed)
and waits for its ack. ``--seconds`` bounds the run. Uses ``twinstage.bridge.Client``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from twinstage.bridge import BridgeError, Client


async def main(args: argparse.Namespace) -> int:
    async with Client(args.url, token=args.token, hello=args.hello) as c:
        h = c.hello
        print(f"connected to {h['scene']} (session {h['session'][:8]}, {h['tickRate']:g} Hz, role {h['role']}), {len(c.attributes)} values")
        await c.subscribe(prefixes=args.prefix or [], encoding=args.encoding, max_rate=args.max_rate)
        for item in args.set or []:
            target, _, value = item.partition("=")
            prim, _, attr = target.rpartition(".")
            try:
                ack = await c.set(prim, attr, json.loads(value))
                print(f"set {prim}.{attr} = {value}: ack at tick {ack['tick']}")
            except BridgeError as exc:
                print(f"set {prim}.{attr} = {value}: {exc}", file=sys.stderr)
                return 1
        for _ in range(int(args.seconds)):
            await asyncio.sleep(1.0)
            print(f"tick {c.tick} t={c.sim_time:.1f}s seq {c.seq} ({c.deltas} deltas, {c.gaps} gaps)")
            for (prim, attr), v in sorted(c.values().items())[: args.show]:
                val = ", ".join(f"{x:.3f}" for x in v) if isinstance(v, tuple) else f"{v:.4g}" if isinstance(v, float) else v
                print(f"  {prim}.{attr} = {val} {c.unit(prim, attr)}")
            for a in c.alarms:
                print(f"  ALARM {a['message']}")
            c.alarms.clear()
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/")
    p.add_argument("--token")
    p.add_argument("--prefix", action="append", help="prim path prefix to subscribe to (repeatable)")
    p.add_argument("--encoding", choices=("binary", "json", "compact"), default="binary")
    p.add_argument("--hello", choices=("rows", "compact"), default="rows", help="compact: the attribute table once per channel (big scenes)")
    p.add_argument("--max-rate", type=float, default=2.0, help="state messages per second (0 = every tick)")
    p.add_argument("--set", action="append", metavar="/Prim.attr=VALUE")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--show", type=int, default=12, help="values to print per second")
    sys.exit(asyncio.run(main(p.parse_args())))
