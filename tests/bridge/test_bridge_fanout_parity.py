"""A client cannot tell ``serve`` from ``serve --fanout-procs 2`` (issue 10, item 3): the same scripted
session against a single-process :class:`Server` and a :class:`FanoutHub` with two worker processes,
each on 127.0.0.1 with a real twin stepped tick by tick, gives the same messages in the same order —
acks, errors, events (twin errors, stepped/paused/resumed from a client on the *other* worker), alarms
(a quality crossing and an alarm attribute), structure, freshness with a stale reason, a what-if's
forecasts, ingest — and the same values, apart from wall-clock fields.

Client A (admin) runs the script; client B (viewer) only watches, and with fan-out it sits on the
other worker process than A."""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from typing import Any

import pytest
from _bridgeutil import ADMIN, ADMIN_SECRET, VIEW_SECRET, VIEWER, arun, ws_connect
from _fanoututil import Recorder, client_port, owner_pid

import twinstage
from twinstage.bridge import Server
from twinstage.bridge._fanout import FanoutHub
from twinstage.bridge._messages import SERVER_TYPES
from twinstage.telemetry import Binding, ReplaySource
from twinstage.telemetry._ingest import BridgeIngestSource

P = "/Testbed/Sensors/PressureSensor"
STATE = ("snapshot", "delta")
SCENARIOS = {"close": [(0.5, "/Testbed/Valve2", "opening", 0.25), (1.0, "/Testbed/Valve2", "opening", 0.125)]}
WALL = {"wallTime", "session", "server"}


class FlakyReplay(ReplaySource):
    """A CSV replay whose poll fails once as it reaches sim time 0.3 s and once at 1.2 s (twin errors)."""

    def poll(self, t0: float, t1: float) -> Any:
        for t in (0.3, 1.2):
            if t0 < t <= t1:
                raise RuntimeError(f"flaky feed at {t:g} s")
        return super().poll(t0, t1)


def _twin(pump_scene: Any, tmp_path: Any) -> tuple[Any, Any]:
    times = [round(0.1 * i, 1) for i in range(6)] + [round(2.5 + 0.1 * i, 1) for i in range(60)]  # a gap from 0.5 to 2.5 s
    csv = tmp_path / "gap.csv"
    csv.write_text("time;Pressure\n" + "".join(f"{t};{0.1 + t / 100}\n" for t in times))
    twin = twinstage.open(pump_scene, rate=20.0, realtime=True, seed=1)
    twin.add_source(FlakyReplay(csv, [Binding(P, "pressure", "csv", "Pressure", period=0.1, stale_after=5.0)], name="flaky"))
    ingest = BridgeIngestSource([Binding("/Testbed/Tank", "level", "ingest", "tank.level", unit="percent")])
    twin.add_source(ingest)
    twin.pause()
    return twin, ingest


def _norm(m: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in m.items() if k not in WALL}
    if m["type"] == "ack" and m.get("of") == "whatif":
        m["detail"] = re.sub(r"in \S+ s wall", "in - s wall", m["detail"])
    if m["type"] == "ack" and m.get("of") == "clients":
        m["clients"] = sorted((c["user"], c["role"], c["dialect"], c["encoding"]) for c in m["clients"])
    return m


def _values(msgs: list[dict[str, Any]]) -> dict[int, tuple]:
    """The state a client holds after these messages (snapshots and deltas, JSON encoding)."""
    state: dict[int, tuple] = {}
    for m in msgs:
        if m["type"] == "snapshot":
            state = {}
        if m["type"] in STATE:
            state.update({i: (v, q) for i, v, q in zip(m["indices"], m["values"], m["quality"])})
            v3 = m["vec3Values"]
            state.update({i: (tuple(v3[3 * k:3 * k + 3]), q) for k, (i, q) in enumerate(zip(m["vec3Indices"], m["vec3Quality"]))})
    return state


async def _script(url: str, twin: Any, pids: list[int] | None, port: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    a = Recorder(await ws_connect(url, token=ADMIN_SECRET))
    hello = await a.until(lambda m: m["type"] == "hello")
    b = None
    for _ in range(40):  # B: a viewer — with fan-out, on the worker A is not on
        ws = await ws_connect(url, token=VIEW_SECRET)
        if pids is None or owner_pid(port, client_port(ws), pids) not in (None, owner_pid(port, client_port(a.ws), pids)):
            b = Recorder(ws)
            break
        await ws.close()
    assert b is not None, "no connection landed on the second worker"
    await b.until(lambda m: m["type"] == "hello")
    assert (await b.reply({"type": "subscribe", "id": "b", "prefixes": [], "encoding": "json"}))["type"] == "ack"
    await b.until(lambda m: m["type"] == "snapshot")
    out: dict[str, Any] = {"hello": hello, "checkpoints": []}
    replies = []

    async def ask(msg: dict[str, Any]) -> dict[str, Any]:
        r = await a.reply(msg)
        replies.append(r)
        if r["type"] == "ack" and r["of"] == "step":
            out["checkpoints"].append((r["tick"], _values(a.msgs)))
        return r

    await ask({"type": "subscribe", "id": "s", "prefixes": ["/Testbed"], "encoding": "json"})
    await a.until(lambda m: m["type"] == "snapshot")
    await a.send('{"type": "set", "id": "j1", "prim": ')  # bad JSON: its id is recovered
    replies.append(await a.until(lambda m: m["type"] == "error" and m.get("id") == "j1"))
    await ask({"type": "set", "id": "e1", "prim": "/Testbed/Nope", "attribute": "opening", "value": 1})
    await ask({"type": "command", "id": "e2", "command": "step", "steps": 200000})
    await ask({"type": "command", "id": "e3", "command": "fly"})
    await ask({"type": "set", "id": "s1", "prim": "/Testbed/Valve1", "attribute": "opening", "value": 0.375})
    await ask({"type": "ingest", "id": "i1", "samples": [{"key": "tank.level", "value": 150.0}]})  # 1.5 > max 1: out of range
    await ask({"type": "set", "id": "s2", "prim": "/Testbed/Pump", "attribute": "anomalyAlarm", "value": True})  # an alarm attribute
    await ask({"type": "command", "id": "t1", "command": "step", "steps": 4})

    def add_marker() -> None:
        from pxr import UsdGeom

        cube = UsdGeom.Cube.Define(twin.stage, "/Testbed/Marker")
        UsdGeom.XformCommonAPI(cube).SetTranslate((1.0, 2.0, 3.0))

    await loop.run_in_executor(None, add_marker)
    for c in (a, b):
        await c.until(lambda m: m["type"] == "structure" and any(p["position"] == [1.0, 2.0, 3.0] for p in m["added"]))
    out["late"] = []
    for _ in range(4):  # late joiners (on either worker) learn of the added prim from their hello
        late = Recorder(await ws_connect(url, token=VIEW_SECRET))
        out["late"].append((await late.until(lambda m: m["type"] == "hello"))["added"])
        await late.close()
    await ask({"type": "command", "id": "sc", "command": "scenario", "scenario": "close"})
    await ask({"type": "command", "id": "sx", "command": "scenario", "scenario": "nope"})
    await ask({"type": "command", "id": "t2", "command": "step", "steps": 40})  # through the replay's gap: stale; the scenario runs
    await ask({"type": "whatif", "id": "w1", "events": [], "horizon": 1.0, "attributes": ["/Testbed/Pump.pressure"]})
    await ask({"type": "command", "id": "c1", "command": "clients"})
    await ask({"type": "set", "id": "s3", "prim": "/Testbed/Pump", "attribute": "anomalyAlarm", "value": False})
    t3 = await ask({"type": "command", "id": "t3", "command": "step", "steps": 1})
    await b.until(lambda m: m["type"] == "event" and m["kind"] == "stepped" and m["tick"] == t3["tick"])
    out["scripted"] = {"a": len(a.msgs), "b": len(b.msgs)}
    # resume, run a while, pause: the ack names the last tick, its state came first, nothing follows it
    await ask({"type": "command", "id": "r1", "command": "resume"})
    await asyncio.sleep(0.6)
    n = len(a.msgs)
    p = await ask({"type": "command", "id": "p1", "command": "pause"})
    before = [m for m in a.msgs[:a.msgs.index(p)] if m["type"] in STATE]
    assert before[-1]["tick"] == p["tick"] > out["checkpoints"][-1][0], (before[-1], p)
    await b.until(lambda m: m["type"] == "event" and m["kind"] == "paused", start=0)
    await asyncio.sleep(0.6)
    assert not [m for m in a.msgs[n:] + b.msgs if m["type"] in STATE and m["tick"] > p["tick"]]
    await ask({"type": "command", "id": "t4", "command": "step", "steps": 2})
    assert replies[-1]["tick"] == p["tick"] + 2
    await b.until(lambda m: m["type"] in STATE and m["tick"] == p["tick"] + 2)
    out["final"] = (_values(a.msgs), _values(b.msgs))
    out["a"], out["b"], out["replies"] = a.msgs, b.msgs, replies
    await a.close()
    await b.close()
    return out


def _run_single(pump_scene: Any, tmp_path: Any) -> dict[str, Any]:
    twin, ingest = _twin(pump_scene, tmp_path)
    server = Server("127.0.0.1", 0, tokens=[ADMIN, VIEWER], ingest=ingest, scenarios=SCENARIOS)
    server.freshness_interval = 1e-6  # one freshness message per tick: comparable tick by tick
    return _drive(twin, server, None)


def _run_fanout(pump_scene: Any, tmp_path: Any) -> dict[str, Any]:
    twin, ingest = _twin(pump_scene, tmp_path)
    hub = FanoutHub(str(pump_scene), 2, "127.0.0.1", 0, open_kwargs={"rate": 20.0, "realtime": True, "seed": 1},
                    server_kwargs={"tokens": [ADMIN, VIEWER], "scenarios": SCENARIOS}, ingest=ingest)
    hub.freshness_interval = 1e-6
    return _drive(twin, hub, hub)


def _drive(twin: Any, server: Any, hub: Any) -> dict[str, Any]:
    twin.add_sink(server)
    th = threading.Thread(target=twin.run, kwargs={"ticks": 10**9, "wait_when_paused": True}, daemon=True)
    th.start()
    try:
        pids = [w.proc.pid for w in hub.workers] if hub is not None else None
        return arun(_script(server.url, twin, pids, server.port), timeout=180)
    finally:
        twin.stop()
        th.join(10)
        twin.close()


def _freshness(msgs: list[dict[str, Any]], live: int) -> dict[int, tuple]:
    """tick -> (ages, reasons) a client knows after each freshness message (``live``'s age left out)."""
    from twinstage.bridge._freshness_view import FreshnessView

    view, out = FreshnessView(), {}
    for m in msgs:
        if m["type"] == "freshness":
            view.apply(m)
            out[m["tick"]] = ({i: a for i, a in view.ages.items() if i != live}, dict(view.reasons))
    return out


def _control(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_norm(m) for m in msgs if m["type"] not in STATE + ("freshness", "hello")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, _pump_scene_dir: Any) -> dict[str, Any]:
    import shutil

    out = {}
    for kind, run in (("single", _run_single), ("fanout", _run_fanout)):
        d = tmp_path_factory.mktemp(kind)
        for f in _pump_scene_dir.iterdir():
            shutil.copy(f, d / f.name)
        out[kind] = run(d / "pump_testbed.usda", d)
    return out


def test_every_message_is_valid_and_the_script_did_what_it_says(runs):
    for kind, r in runs.items():
        for m in r["a"] + r["b"]:
            SERVER_TYPES[m["type"]].model_validate(m)
        ctl = _control(r["a"])
        kinds = {(m["type"], m.get("kind") or m.get("code") or m.get("of") or m.get("attribute")) for m in ctl}
        for want in [("error", "bad_json"), ("error", "not_found"), ("error", "invalid_value"), ("error", "unknown_type"),
                     ("ack", "ingest"),
                     ("ack", "whatif"), ("forecast", "pressure"), ("event", "error"), ("event", "stepped"), ("event", "paused"),
                     ("event", "resumed"), ("alarm", "anomalyAlarm"), ("alarm", "level"), ("structure", None), ("ack", "scenario"),
                     ("event", "scenario")]:
            assert want in kinds, (kind, want, sorted(kinds, key=str))
        fresh = [m for m in r["a"] if m["type"] == "freshness"]
        assert any(x["text"].startswith("stale") for m in fresh for x in m["reasons"]), kind
        assert [m["tick"] for m in r["a"] if m["type"] == "event" and m["kind"] == "error"] == [6, 24], kind
        scenario = [m["message"] for m in ctl if m.get("kind") == "scenario"]
        assert scenario == ["scenario 'close' started (2 events)", "scenario 'close' finished"], kind
        assert r["final"][0] == {i: v for i, v in r["final"][1].items() if i in r["final"][0]}, kind  # A and B agree
        answered = collections.Counter(m["id"] for m in r["a"] if m["type"] in ("ack", "error") and m.get("id"))
        assert answered == {m["id"]: 1 for m in r["replies"]}, (kind, answered)  # one reply per request


def test_fanout_sends_the_same_messages_in_the_same_order(runs):
    s, f = runs["single"], runs["fanout"]
    hs, hf = ({k: v for k, v in h.items() if k not in WALL} for h in (s["hello"], f["hello"]))
    assert hs == hf
    assert s["late"] == f["late"] and s["late"][0][-1]["path"] == "/Testbed/Marker"
    for who in ("a", "b"):
        cs, cf = _control(s[who][:s["scripted"][who]]), _control(f[who][:f["scripted"][who]])
        assert cs == cf, (who, [(x, y) for x, y in zip(cs, cf) if x != y][:3], len(cs), len(cf))
        # after resume: the same kinds of messages (how many ticks ran is up to the clock)
        ts = [(m["type"], m.get("kind") or m.get("of")) for m in _control(s[who][s["scripted"][who]:])]
        tf = [(m["type"], m.get("kind") or m.get("of")) for m in _control(f[who][f["scripted"][who]:])]
        assert ts == tf, who
        # freshness is state: a worker that fell behind gets the newest only (as a slow client gets merged deltas),
        # so compare what the client knows at every tick both heard of; the ingested entry's age is wall-clock
        live = next(a["index"] for a in s["hello"]["attributes"] if (a["prim"], a["attribute"]) == ("/Testbed/Tank", "level"))
        vs, vf = _freshness(s[who][:s["scripted"][who]], live), _freshness(f[who][:f["scripted"][who]], live)
        common = sorted(set(vs) & set(vf))
        assert len(common) >= 10 and max(common) >= 44, (who, sorted(vs), sorted(vf))
        assert [vs[t] for t in common] == [vf[t] for t in common], who


def test_fanout_clients_hold_the_same_values_at_every_step(runs):
    s, f = runs["single"], runs["fanout"]
    assert [t for t, _ in s["checkpoints"][:3]] == [t for t, _ in f["checkpoints"][:3]] == [4, 44, 45]  # then: how long it ran
    for (t, vs), (_, vf) in zip(s["checkpoints"][:3], f["checkpoints"][:3]):
        assert vs == vf, (t, [(i, vs[i], vf.get(i)) for i in vs if vs[i] != vf.get(i)][:5])
