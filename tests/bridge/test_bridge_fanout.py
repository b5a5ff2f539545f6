"""``twinstage serve --fanout-procs 2``: the twin ticks in one process, two worker processes serve the
clients on one port. Clients on either worker see the same seq and values; a request from a client
on either worker is answered once, after its effect; a killed worker takes only its own clients."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import numpy as np
import pytest
from _bridgeutil import arun, bridge_url, reap, spawn_cli, stop
from _fanoututil import client_port, owner_pid

from twinstage.bridge import Client
from twinstage.bridge._fanout import merge_frames
from twinstage.state import Change, Frame

TOKENS = [f"c{i}:admin:admin-secret-{i:02d}" for i in range(24)]


def _secret(i: int) -> str:
    return TOKENS[i].split(":", 2)[2]


def test_merge_frames_keeps_the_last_value_of_each_entry():
    f1 = Frame.make(1, 0.1, 0.0, {"t": Change.make(np.array([0, 2]), np.array([1.0, 2.0]), np.array([0, 1]))})
    f2 = Frame.make(2, 0.2, 0.0, {"t": Change.make(np.array([2, 3]), np.array([5.0, 6.0]), np.array([0, 0])),
                                  "p": Change.make(np.array([1]), np.array([[1.0, 2.0, 3.0]]), np.array([4]))})
    m = merge_frames([f1, f2])
    assert m.tick == 2 and m.sim_time == 0.2
    assert m.changes["t"].rows.tolist() == [0, 2, 3] and m.changes["t"].values.tolist() == [1.0, 5.0, 6.0]
    assert m.changes["t"].quality.tolist() == [0, 0, 0] and m.changes["p"].values.tolist() == [[1.0, 2.0, 3.0]]


def test_a_worker_behind_gets_one_merged_frame_with_every_alarm_and_error_and_the_newest_freshness():
    from twinstage.bridge._fanout_feed import merge_items

    def frame(seq, alarms, events, fresh):
        f = Frame.make(seq, 0.1 * seq, 0.0, {"t": Change.make(np.array([seq % 2]), np.array([float(seq)]), np.array([0]))})
        return ("frame", seq, f, seq == 3, seq == 3, b"blob", alarms, events, fresh)

    before, between = ("msg", ("status", 0, False)), ("msg", ("event", "stepped", "", "u", 1, 0.1))
    items = [before, frame(1, ([("t", 1, "a1")], 0), [("error", "e1", "", 1, 0.1)], "f1"), between,
             frame(2, ([], 2), [], None), frame(3, ([("t", 1, "a3")], 1), [("error", "e3", "", 3, 0.3)], None)]
    out = merge_items(items)
    assert out[0] == before and out[2] == between and len(out) == 3
    kind, seq, f, last, paused, blob, alarms, events, fresh = out[1]
    assert (seq, f.tick, last, paused, blob) == (3, 3, True, True, None)  # re-encoded for this worker
    assert f.changes["t"].rows.tolist() == [0, 1] and f.changes["t"].values.tolist() == [2.0, 3.0]
    assert alarms == ([("t", 1, "a1"), ("t", 1, "a3")], 3) and [e[1] for e in events] == ["e1", "e3"] and fresh == "f1"
    assert merge_items(items[:3]) == items[:3]  # not behind: as they came


def test_the_twin_process_encodes_what_a_worker_session_would(pump_scene):
    """encode_all (once per tick, in the twin process) == the session's own encoding of the same delta."""
    import twinstage
    from twinstage.bridge._fanout import ALL, encode_all
    from twinstage.bridge._state import Mirror, Selection, encode_state, gather

    twin = twinstage.open(pump_scene, rate=20)
    frames = []
    twin.add_sink(type("S", (), {"writes_stage": False, "start": lambda self, t: None, "consume": lambda self, f: frames.append(f),
                                 "close": lambda self: None})())
    twin.run(ticks=3)
    mirror = Mirror(twin.table)
    sel = Selection(mirror, [], [])
    assert sel.key == ALL
    for seq, f in enumerate(frames, start=1):
        assert f.n_changed > 0
        mine = encode_all(twin.table.channels, seq, f)[(ALL, "binary")]
        theirs = encode_state("delta", "binary", gather(mirror, sel.filter(f)), seq, f.tick, f.sim_time, f.wall_time, merged=1)
        assert mine == theirs
    twin.close()


def _workers(pid: int) -> list[int]:
    """The serve process's worker processes (multiprocessing spawn children, not its resource tracker)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(d))
    return out


def test_fanout_two_workers_same_state_acks_after_effect_and_worker_death(pump_scene):
    args = ["serve", str(pump_scene), "--port", "0", "--rate", "20", "--fanout-procs", "2"]
    for t in TOKENS:
        args += ["--token", t]
    proc, lines = spawn_cli(*args)
    seen: list[str] = []
    try:
        url = bridge_url(lines, seen)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        pids = _workers(proc.pid)
        assert len(pids) == 2, pids

        async def go():
            clients: list[Client] = []
            acks: dict[int, int] = {}
            groups: dict[int, set[int]] = {}
            for i in range(len(TOKENS)):  # connect until both workers have clients (the kernel spreads them)
                c = Client(url, token=_secret(i))
                await c.connect()
                acks[i] = 0
                c.on_state.append(lambda kind, _c, i=i: acks.__setitem__(i, acks[i] + (kind == "ack")))
                await c.subscribe()
                clients.append(c)
                groups.setdefault(owner_pid(port, client_port(c.ws), pids), set()).add(i)
                if i >= 3 and len(groups) == 2:
                    break
            assert len(groups) == 2 and None not in groups, f"all {len(clients)} connections on one worker: {groups}"
            # `clients` lists every worker's clients, each id once, whichever worker answers
            for c in (clients[min(g)] for g in groups.values()):
                r = await c.command("clients")
                users = sorted(x["user"] for x in r["clients"])
                assert r["count"] == len(clients) and users == sorted(f"c{i}" for i in range(len(clients)))
                assert len({x["id"] for x in r["clients"]}) == len(clients)
            before_acks = dict(acks)
            a_members, b_members = sorted(groups.values(), key=min)
            a, b = clients[min(a_members)], clients[min(b_members)]
            # pause from worker A; the ack names the last tick, and every client on both workers stops there
            pa = await a.pause()
            last = pa["tick"]
            for c in clients:
                await c.wait_until(lambda c: c.tick >= last, timeout=20)
            await asyncio.sleep(0.3)
            assert {c.tick for c in clients} == {last}
            assert len({c.seq for c in clients}) == 1
            vals = [c.values() for c in clients]
            assert all(v == vals[0] for v in vals[1:]) and len(vals[0]) > 20
            # a set from worker B: acked (queued), then a step from B acked only after its tick's delta with the value in it
            await b.set("/Testbed/Valve1", "opening", 0.375)
            st = await b.step(2)
            assert st["tick"] == last + 2 and b.tick >= last + 2 and b.get("/Testbed/Valve1", "opening") == 0.375
            for c in clients:
                await c.wait_until(lambda c: c.tick >= last + 2 and c.get("/Testbed/Valve1", "opening") == 0.375, timeout=20)
            assert len({c.seq for c in clients}) == 1
            await asyncio.sleep(0.3)
            want = {i: (1 if i == min(a_members) else 2 if i == min(b_members) else 0) for i in range(len(clients))}
            assert {i: acks[i] - before_acks[i] for i in range(len(clients))} == want  # each request answered exactly once
            # kill one worker: exactly one group loses its connections, the other keeps getting state
            os.kill(pids[0], signal.SIGKILL)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(c.closed_code is not None for c in clients):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            dead = {j for j, c in enumerate(clients) if c.closed_code is not None}
            assert dead == groups[pids[0]], (dead, groups)
            alive = b_members if dead == a_members else a_members
            survivor = clients[min(alive)]
            before = survivor.tick
            r = await survivor.step(3)
            assert r["tick"] == before + 3
            for j in alive:
                await clients[j].wait_until(lambda c: c.tick >= before + 3, timeout=20)
            for c in clients:
                if c.closed_code is None:
                    await c.close()

        arun(go(), timeout=180)
        assert stop(proc, 60) == 0
    finally:
        reap(proc)
    out = "".join(seen) + "".join(lines.queue)
    assert "fan-out: 2 worker processes" in out and "stopped after" in out


def test_fanout_bad_option():
    import subprocess
    import sys

    code = "import sys; from twinstage.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "serve", "scene.usda", "--port", "0", "--duration", "0.1", "--fanout-procs", "-1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--fanout-procs" in r.stderr and "expected an integer >= 0" in r.stderr, r.stderr


def test_fanout_workers_serve_the_browser_client_over_http(pump_scene):
    """``serve --http auto --fanout-procs 2``: every worker serves the static files (and the scene GLB) on the shared port."""
    import http.client
    from pathlib import Path

    index = (Path(__file__).resolve().parents[2] / "examples" / "browser" / "index.html").read_bytes()
    proc, lines = spawn_cli("serve", str(pump_scene), "--port", "0", "--rate", "20", "--fanout-procs", "2", "--http", "auto")
    seen: list[str] = []
    try:
        url = bridge_url(lines, seen)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        while not any("browser client, viewer" in ln for ln in seen):  # describe() names the page, with a token
            seen.append(lines.get(timeout=60))
        token = next(ln for ln in seen if "browser client, viewer" in ln).rsplit("?token=", 1)[1].strip()
        pids = _workers(proc.pid)
        assert len(pids) == 2, pids
        served: dict[int, int] = {}
        def get(path: str) -> tuple[int | None, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.connect()
            pid = None
            for _ in range(200):  # until a worker has accepted it
                pid = owner_pid(port, conn.sock.getsockname()[1], pids)
                if pid is not None:
                    break
                time.sleep(0.01)
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return pid, (r.status, r.getheader("Content-Type"), body)

        for _ in range(40):  # new connections until both workers have answered
            pid, (status, ctype, body) = get("/index.html")
            assert status == 200 and body == index and ctype.startswith("text/html")
            served[pid] = served.get(pid, 0) + 1
            if len(served) == 2:
                break
        assert set(served) == set(pids), served
        for _ in range(4):
            pid, (status, ctype, body) = get(f"/scene.glb?token={token}")
            assert status == 200 and body[:4] == b"glTF" and pid in pids
        assert stop(proc, 60) == 0
    finally:
        reap(proc)
