"""MQTT ingest: 10k bound attributes at 10 Hz through Debian's mosquitto on loopback.

``run_mqtt(n=10_000, rate=10.0, seconds=8.0)`` starts a private ``mosquitto`` on a free
127.0.0.1 port and two subscriber processes on the same stream:

* ``twin`` — :class:`twinstage.telemetry.MqttSource` (binary batches: parse, route by
  cached key block, °F → °C conversion, Samples into the Inbox) feeding a headless
  :class:`~twinstage.runtime.Engine` of a generated ``n``-machine factory ticking at 60 Hz
  in real time; publish→Frame latency is the wall time after the tick whose table
  first shows a batch, minus the batch's publish time;
* ``bare``  — the baseline, measured in the same run: a paho subscriber that only
  parses the same payloads (header; key block decoded once, then compared in place;
  times and values copied out with ``numpy.frombuffer``) — no routing, units,
  quality or hand-over.

The publisher (this process) sends one binary batch of ``n`` values every ``1/rate`` s
(QoS 1, every key's value = the batch number in °F). CPU per sample is the CPU time
(``time.thread_time``) of each subscriber's paho network thread — socket reads, MQTT
framing and the message callback — from its 6th to its last message (the first batch
builds the routing caches), divided by the samples in that window; the engine's tick thread is reported on its own. Run alone::

    .venv/bin/python bench/_ingest_mqtt.py [--quick] [--json]

``bench/ingest.py`` calls :func:`run_mqtt` for its MQTT part.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

MOSQUITTO = os.environ.get("TWINSTAGE_MOSQUITTO", "/usr/sbin/mosquitto")
TOPIC = "bench/batch"
TICK_RATE = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keys(n: int) -> list[str]:
    return [f"plant/m{i:05d}/temp" for i in range(n)]


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# -- subscriber workers (separate processes) ----------------------------------------------------

def _until_stopped(limit: float) -> None:
    """Until the driver writes a line on stdin (after its last publish), or ``limit`` s."""
    t = threading.Thread(target=sys.stdin.readline, daemon=True)
    t.start()
    t.join(limit)


WARMUP = 5  # messages before the CPU window opens (the first batch builds the routing caches)


def _cpu_probe(state: dict, end: bool = False, samples: int = 0) -> None:
    """Called at the start and the end of each message callback on the paho thread."""
    now = time.thread_time()
    if not end:
        state["k"] = state.get("k", 0) + 1
        state["cb0"] = now
        if state["k"] == WARMUP + 1:
            state["cpu0"] = now
        return
    if state["k"] > WARMUP:
        state["cb"] = state.get("cb", 0.0) + now - state["cb0"]
        state["cpu1"] = now
        state["n"] = state.get("n", 0) + samples


def _worker_bare(port: int, n: int, seconds: float) -> dict[str, Any]:
    import numpy as np
    import paho.mqtt.client as mqtt

    head = struct.Struct("<4sIIII")
    st: dict[str, Any] = {"samples": 0, "messages": 0, "recv": []}

    def on_message(c, u, msg):
        _cpu_probe(st)
        b = msg.payload
        _, nk, nt, flags, klen = head.unpack_from(b)
        kb = st.get("kb")
        if kb is None or len(kb) != klen or not b.startswith(kb, head.size):  # keys: decoded once, then compared
            st["kb"] = b[head.size:head.size + klen]
            st["keys"] = st["kb"].decode().split("\n")
        off = head.size + klen
        off += -off % 8
        ts = np.frombuffer(b, "<f8", nt, off).copy()
        vals = np.frombuffer(b, "<f8", nt * nk, off + 8 * nt).copy()
        st["samples"] += vals.size
        st["messages"] += 1
        st["recv"].append((int(vals[0]), time.time()))
        _cpu_probe(st, True, vals.size)

    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-{os.getpid()}")
    c.on_message = on_message
    c.on_connect = lambda c, u, f, rc, p=None: (c.subscribe(TOPIC, 1), ready.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait(10)
    time.sleep(0.3)
    print("ready", flush=True)
    _until_stopped(seconds)
    c.disconnect()
    c.loop_stop()
    return {"samples": st["samples"], "messages": st["messages"], "cpu_s": st.get("cpu1", 0) - st.get("cpu0", 0), "cb_s": st.get("cb", 0.0),
            "measured": st.get("n", 0), "recv": st["recv"]}


def _worker_twin(port: int, n: int, seconds: float) -> dict[str, Any]:
    from twinstage.runtime._engine import Engine
    from twinstage.scenes import generate_factory
    from twinstage.telemetry import Binding
    from twinstage.telemetry._mqtt import MqttSource

    eng = Engine(generate_factory(n), rate=TICK_RATE)
    prims = [p for p in eng.table.prims if "/Machines/" in p][:n]
    bindings = [Binding(p, "temperature", "mqtt", k, unit="degF") for p, k in zip(prims, _keys(n))]
    src = MqttSource("127.0.0.1", port, bindings, batch_topics=[TOPIC], name="bench")
    st: dict[str, Any] = {}
    feed = src.feed

    def timed_feed(topic, payload, arrival=None):  # the same method, with a CPU probe around it
        _cpu_probe(st)
        out = feed(topic, payload, arrival)
        _cpu_probe(st, True, out)
        return out

    src.feed = timed_feed  # type: ignore[method-assign]
    eng.add_source(src)
    if not src.wait_connected(15):
        raise RuntimeError("twin worker: no connection to the broker")
    time.sleep(0.3)
    row0 = eng.table.row(prims[0], "temperature")
    temp = eng.table["temperature"]
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (_until_stopped(seconds), stop.set()), daemon=True).start()
    seen: list[tuple[int, float]] = []
    last = None
    tick_cpu = 0.0
    ticks = 0
    dt = 1.0 / TICK_RATE
    nxt = time.perf_counter()
    while not stop.is_set():
        c0 = time.thread_time()
        eng.tick()
        tick_cpu += time.thread_time() - c0
        ticks += 1
        seq = int(round(temp[row0] * 9 / 5 + 32))
        if seq != last:
            seen.append((seq, time.time()))
            last = seq
        nxt += dt
        time.sleep(max(0.0, nxt - time.perf_counter()))
    s = src.stats()
    inbox = eng.feeds.inbox
    out = {"samples": int(s["samples"]), "messages": int(s["messages"]), "rejected": int(s["rejected"]), "cpu_s": st.get("cpu1", 0) - st.get("cpu0", 0),
           "cb_s": st.get("cb", 0.0), "measured": st.get("n", 0), "frames": seen, "tick_cpu_ms": 1000 * tick_cpu / max(ticks, 1), "ticks": ticks, "dropped": inbox.dropped_samples}
    eng.close()
    return out


# -- the driver -----------------------------------------------------------------------------------

def run_mqtt(n: int = 10_000, rate: float = 10.0, seconds: float = 8.0) -> dict[str, Any]:
    """Figures (see the module docstring); ``mqtt_cpu_ratio`` = twin / bare CPU per sample."""
    import numpy as np
    import paho.mqtt.client as mqtt

    from twinstage.telemetry._payload import encode_batch

    if not os.access(MOSQUITTO, os.X_OK):
        raise RuntimeError(f"mosquitto not found at {MOSQUITTO} (Debian package mosquitto)")
    work = Path(tempfile.mkdtemp(prefix="twinstage-bench-mqtt-"))
    port = _free_port()
    (work / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    procs: list[subprocess.Popen] = []
    broker = subprocess.Popen([MOSQUITTO, "-c", str(work / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for kind in ("twin", "bare"):
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", kind, str(port), str(n), str(seconds + 120)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker failed to start: {line!r}")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        keys = _keys(n)
        sent: dict[int, float] = {}
        nxt = time.perf_counter()
        for k in range(int(seconds * rate)):
            seq = 1000 + k
            now = time.time()
            payload = encode_batch(keys, [now], np.full((1, n), float(seq)))
            sent[seq] = now
            pub.publish(TOPIC, payload, qos=1)
            nxt += 1.0 / rate
            time.sleep(max(0.0, nxt - time.perf_counter()))
        pub.disconnect()
        pub.loop_stop()
        time.sleep(1.0)  # the last batches reach both subscribers
        res = {}
        for kind, p in zip(("twin", "bare"), procs):
            out, _ = p.communicate("stop\n", timeout=120)
            res[kind] = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.kill()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    tw, bare = res["twin"], res["bare"]
    frame_lat = [1000 * (t - sent[s]) for s, t in tw["frames"] if s in sent]
    bare_lat = [1000 * (t - sent[s]) for s, t in bare["recv"] if s in sent]
    twin_us = 1e6 * tw["cpu_s"] / max(tw["measured"], 1)
    bare_us = 1e6 * bare["cpu_s"] / max(bare["measured"], 1)
    tick_ms = 1000 / TICK_RATE
    return {
        "n": n, "rate_hz": rate, "seconds": seconds, "published_batches": len(sent),
        "twin_samples": tw["samples"], "bare_samples": bare["samples"], "rejected": tw["rejected"], "inbox_dropped": tw["dropped"],
        "samples_per_s": tw["samples"] / seconds,
        "twin_cpu_us_per_sample": twin_us, "bare_cpu_us_per_sample": bare_us,
        "mqtt_cpu_ratio": twin_us / bare_us if bare_us else float("nan"),
        "frame_latency_p50_ms": statistics.median(frame_lat) if frame_lat else float("nan"),
        "frame_latency_p99_ms": _pct(frame_lat, 99),
        "frame_latency_p99_ticks": _pct(frame_lat, 99) / tick_ms,
        "frames_seen": len(frame_lat),
        "bare_latency_p50_ms": statistics.median(bare_lat) if bare_lat else float("nan"),
        "bare_latency_p99_ms": _pct(bare_lat, 99),
        "tick_cpu_ms": tw["tick_cpu_ms"],
        "twin_callback_us_per_sample": 1e6 * tw["cb_s"] / max(tw["measured"], 1),
        "bare_callback_us_per_sample": 1e6 * bare["cb_s"] / max(bare["measured"], 1),
    }


def report(rep: Any, fig: dict[str, Any]) -> None:
    """Add the MQTT figures, table and targets to a ``_common.Report``."""
    for k, v in fig.items():
        rep.figure(f"mqtt_{k}" if not k.startswith("mqtt_") else k, v)
    rep.table(f"MQTT ingest: {fig['n']} bound attributes at {fig['rate_hz']:g} Hz, binary batches, {fig['seconds']:g} s",
              ["subscriber", "samples", "CPU µs/sample", "of which callback", "latency p50 ms", "latency p99 ms"],
              [["twinstage (publish→Frame, 60 Hz ticks)", fig["twin_samples"], fig["twin_cpu_us_per_sample"], fig["twin_callback_us_per_sample"],
                fig["frame_latency_p50_ms"], fig["frame_latency_p99_ms"]],
               ["bare paho + frombuffer (publish→parsed)", fig["bare_samples"], fig["bare_cpu_us_per_sample"], fig["bare_callback_us_per_sample"],
                fig["bare_latency_p50_ms"], fig["bare_latency_p99_ms"]]])
    rep.target("MQTT CPU per sample vs bare paho subscriber", "mqtt_cpu_ratio", fig["mqtt_cpu_ratio"], 1.3)
    rep.target("MQTT publish→Frame p99 (ticks at 60 Hz)", "mqtt_frame_latency_p99_ticks", fig["frame_latency_p99_ticks"], 2.0)
    rep.note(f"MQTT: {fig['samples_per_s']:.0f} samples/s into the twin; engine tick {fig['tick_cpu_ms']:.2f} ms CPU; "
             f"{fig['rejected']} rejected, {fig['inbox_dropped']} dropped by the inbox")


def main() -> int:
    from _common import Report, parse_args

    args = parse_args(__doc__.splitlines()[0], lambda p: (p.add_argument("--n", type=int, default=None), p.add_argument("--seconds", type=float, default=None)))
    rep = Report("ingest_mqtt", args)
    n = args.n or (2_000 if args.quick else 10_000)
    fig = run_mqtt(n=n, seconds=args.seconds or (4.0 if args.quick else 8.0))
    report(rep, fig)
    return rep.finish()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, port, n, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        out = (_worker_twin if kind == "twin" else _worker_bare)(port, n, secs)
        print(json.dumps(out), flush=True)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        raise SystemExit(main())
