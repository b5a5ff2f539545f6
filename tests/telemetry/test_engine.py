"""The headless engine: stages, add_source, ownership, fed rows vs models, inbox overflow, sink context."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import twinstage
from twinstage.runtime import Engine, SinkContext, Twin
from twinstage.state import Quality, StateError
from twinstage.telemetry import Binding, Inbox, ReplaySource, Samples, TelemetryError, resolve

from services import mosquitto  # noqa: F401  (fixture: a real broker on loopback)

P = "/Testbed/Sensors/PressureSensor"
C = "/Testbed/Sensors/CurrentSensor"
PUMP = "/Testbed/Pump"
V1 = "/Testbed/Valve1"


def csv(tmp_path, name, header, rows):
    p = tmp_path / name
    p.write_text(";".join(["time", *header]) + "\n" + "".join(";".join(str(x) for x in r) + "\n" for r in rows))
    return p


class ThreadSource:
    """A live source: a real thread pushing batches into the engine's inbox."""

    kind = "live"

    def __init__(self, name: str, bindings: list[Binding], batches: list[tuple[float, list[float]]], gap_s: float = 0.0):
        self.name, self.bindings, self.batches, self.gap_s = name, bindings, batches, gap_s
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    def bind(self, table: Any) -> None:
        self.resolved = [resolve(table, b) for b in self.bindings]

    def feeds(self) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {}
        for r in self.resolved:
            out.setdefault(r.channel, []).append(r.row)
        return {k: np.array(v) for k, v in out.items()}

    def start(self, inbox: Inbox) -> None:
        def run() -> None:
            for event_time, values in self.batches:
                for r, v in zip(self.resolved, values):
                    inbox.put(Samples.make(r.channel, [r.row], r.apply([v]), [event_time], source=self.name))
                time.sleep(self.gap_s)
            self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def poll(self, t0: float, t1: float) -> tuple:
        return ()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(5)

    def stats(self) -> dict[str, float]:
        return {"batches": float(len(self.batches))}


def test_headless_engine_has_no_live_layer_writers_or_listener(pump_scene):
    eng = twinstage.open(pump_scene, headless=True)
    assert type(eng) is Engine and eng.live_layer is None and not eng._sinks
    layers = list(eng.stage.GetLayerStack())
    eng.set(V1, opening=0.5)
    eng.run(ticks=20)
    assert eng.get(V1, "opening") == 0.5 and eng.get(PUMP, "flowRate") < 125.2
    assert list(eng.stage.GetLayerStack()) == layers  # nothing added to the stage
    assert not eng.stage.GetPrimAtPath(V1).GetAttribute("twin:opening").Get() == 0.5  # a pxr reader does not see engine state
    eng.close()


def test_fork_is_independent_and_repeats_a_fresh_engine(pump_scene):
    a = twinstage.open(pump_scene, headless=True, seed=3)
    b = a.fork()
    a.set(V1, opening=0.2)
    a.run(ticks=5)
    b.run(ticks=5)
    assert b.get(V1, "opening") == 1.0 and a.get(V1, "opening") == 0.2
    c = twinstage.open(pump_scene, headless=True, seed=3)
    c.run(ticks=5)
    assert b.table.snapshot().keys() == c.table.snapshot().keys()
    assert all(np.array_equal(b.table[k], c.table[k]) for k in c.table.channels)


def test_sinks_get_a_sink_context_with_the_names_sinks_use(pump_scene):
    got = {}

    class Probe:
        writes_stage = False

        def start(self, twin: Any) -> None:
            got["ctx"] = twin

        def consume(self, frame: Any) -> None:
            pass

        def close(self) -> None:
            pass

    with twinstage.open(pump_scene) as twin:
        twin.add_sink(Probe())
        ctx = got["ctx"]
        assert isinstance(ctx, SinkContext) and not isinstance(ctx, Twin)
        for name in ("stage", "table", "clock", "source", "errors", "assets", "models", "live_layer", "tick_count", "sim_time"):
            assert getattr(ctx, name) is not None, name
        assert ctx.live_layer is twin.live_layer and ctx.table is twin.table and ctx.errors is twin.errors
        ctx.set(V1, opening=0.3)
        ctx.step(1)
        assert twin.get(V1, "opening") == 0.3 and ctx.tick_count == 1 and ctx.provenance()["seed"] == 0
        assert ctx.quality_reason(V1, "opening") == "good"
        with pytest.raises(AttributeError):
            ctx.add_source  # noqa: B018 - a sink cannot reach the engine's other parts


def test_a_fed_input_drives_the_models_in_the_same_tick(tmp_path, pump_scene):
    p = csv(tmp_path, "v.csv", ["valve1"], [(0, 1.0), (1, 0.2)])
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, [Binding(V1, "opening", "csv", "valve1")]))
    eng.run(ticks=1)  # sources run before models: the pump sees the measured opening at once
    assert eng.get(V1, "opening") == 0.2
    ref = twinstage.open(pump_scene, headless=True, rate=1.0)
    ref.set(V1, opening=0.2)
    ref.run(ticks=1)
    assert eng.get(PUMP, "flowRate") == ref.get(PUMP, "flowRate") < 125.0


def test_sensor_model_leaves_fed_rows_alone_measured_and_simulated_side_by_side(tmp_path, pump_scene):
    p = csv(tmp_path, "m.csv", ["Pressure"], [(k, 0.5 + k / 100) for k in range(5)])
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")]))
    eng.run(ticks=4)
    assert eng.get(P, "pressure") == pytest.approx(0.54)  # measured
    assert eng.get(PUMP, "pressure") == pytest.approx(0.111, abs=1e-3)  # simulated
    assert eng.get(C, "current") == pytest.approx(eng.get(PUMP, "current"))  # an unfed sensor still simulates
    sensor = eng.models["sensor"]
    assert all(P not in [eng.table.prims[eng.table.channels[d].prim_index[r]] for r in dr] for d, _, dr, _, _ in sensor.groups)


def test_a_model_that_writes_a_fed_row_is_overridden(tmp_path, pump_scene):
    p = csv(tmp_path, "f.csv", ["Flow"], [(0, 50.0), (1, 51.0)])
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, [Binding(PUMP, "flowRate", "csv", "Flow")]))  # pump_loop writes flowRate itself
    eng.run(ticks=1)
    assert eng.get(PUMP, "flowRate") == 51.0
    assert eng.get("/Testbed/Sensors/FlowMeter", "flowRate") == 51.0  # the sensor reads the measured value


def test_a_row_has_one_source_the_error_names_both(tmp_path, pump_scene):
    p = csv(tmp_path, "a.csv", ["Pressure"], [(0, 1.0)])
    eng = twinstage.open(pump_scene, headless=True)
    eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")], name="first"))
    with pytest.raises(TelemetryError, match=r"PressureSensor\.twin:pressure is already fed by source 'first'; source 'second'"):
        eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")], name="second"))
    with pytest.raises(TelemetryError, match="already added"):
        eng.add_source(ReplaySource(p, [Binding(C, "current", "csv", "Pressure")], name="first"))


def test_set_and_pxr_edits_of_a_fed_row_are_rejected(tmp_path, pump_scene):
    p = csv(tmp_path, "a.csv", ["Pressure"], [(0, 1.0)])
    with twinstage.open(pump_scene) as twin:
        twin.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")], name="plant"))
        with pytest.raises(StateError, match=r"PressureSensor\.twin:pressure is fed by telemetry source 'plant'"):
            twin.set(P, pressure=2.0)
        twin.run(ticks=1)
        twin.stage.GetPrimAtPath(P).GetAttribute("twin:pressure").Set(3.0)
        twin.run(ticks=1)
        assert twin.get(P, "pressure") == 1.0 and any("fed by telemetry source" in e for e in twin.errors)


def test_live_source_thread_feeds_through_the_inbox_with_wall_time_alignment(pump_scene):
    now = time.time()
    src = ThreadSource("plc", [Binding(P, "pressure", "mqtt", "p", period=0.1), Binding(C, "current", "mqtt", "c", unit="mA", period=0.1)],
                       [(now - 0.5 + k * 0.1, [0.1 * k, 1000.0 * k]) for k in range(5)])
    eng = twinstage.open(pump_scene, headless=True)
    eng.add_source(src)
    assert src.done.wait(5)
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == pytest.approx(0.4) and eng.get(C, "current") == pytest.approx(4.0)  # mA → A on the way in
    assert eng.stats()["telemetry"]["sources"]["plc"]["applied"] == 10
    eng.close()


def test_inbox_overflow_is_counted_and_flagged_nothing_blocks(pump_scene):
    src = ThreadSource("burst", [Binding(P, "pressure", "mqtt", "p"), Binding(C, "current", "mqtt", "c")],
                       [(time.time() - 1 + k * 1e-3, [0.2, 2.0]) for k in range(100)])
    eng = Engine(twinstage.open(pump_scene, headless=True).stage)
    eng.feeds.inbox = Inbox(max_samples=10)
    eng.add_source(src)
    assert src.done.wait(5)  # the source never blocked on the full inbox
    eng.run(ticks=1)
    assert eng.feeds.inbox.dropped_batches == 190
    assert eng.quality(P, "pressure") & Quality.OVERFLOW and "overflow" in eng.quality_reason(P, "pressure")
    assert eng.get(P, "pressure") == 0.2  # what was kept is applied
    eng.run(ticks=1)
    assert not eng.quality(P, "pressure") & Quality.OVERFLOW


def test_a_failing_source_does_not_stop_the_tick(tmp_path, pump_scene):
    class Broken(ReplaySource):
        def poll(self, t0: float, t1: float) -> Any:
            raise OSError("disk gone")

    p = csv(tmp_path, "a.csv", ["Pressure"], [(0, 1.0)])
    eng = twinstage.open(pump_scene, headless=True)
    eng.add_source(Broken(p, [Binding(P, "pressure", "csv", "Pressure")], name="b"))
    eng.run(ticks=3)
    assert eng.tick_count == 3 and any("disk gone" in e for e in eng.errors)
    assert eng.quality(P, "pressure") & Quality.STALE and eng.quality_reason(P, "pressure").startswith("missing")


def test_stale_reaches_the_frame_freshness_is_state(tmp_path, pump_scene):
    p = csv(tmp_path, "g.csv", ["Pressure"], [(0, 0.1), (1, 0.2), (10, 0.3)])
    eng = twinstage.open(pump_scene, headless=True, rate=1.0)
    eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure", period=1.0, stale_after=3.0)]))
    row = eng.table.row(P, "pressure")
    flags = []  # the pressure sensor's quality as the Frames carry it
    eng.on_frame(lambda f: flags.append(int(f.changes["pressure"].quality[np.flatnonzero(f.changes["pressure"].rows == row)[0]])
                                        if "pressure" in f.changes and row in f.changes["pressure"].rows else None))
    eng.run(ticks=9)
    assert eng.freshness(P, "pressure") == 8.0 and eng.freshness()["pressure"][row] == 8.0
    assert np.isnan(eng.freshness()["pressure"][eng.table.row(PUMP, "pressure")])  # not fed
    assert flags[4] == Quality.STALE and [f for f in flags[:4] if f] == []  # age 4 s > 1 s × 3 at the 5th tick
    assert eng.quality_reason(P, "pressure") == "stale: last good sample 8 s ago (period 1 s × 3)"
    eng.run(ticks=1)
    assert eng.freshness(P, "pressure") == 0.0 and eng.quality(P, "pressure") == 0


def test_remove_source_gives_the_rows_back_to_the_models(tmp_path, pump_scene):
    p = csv(tmp_path, "a.csv", ["Pressure"], [(0, 1.0)])
    eng = twinstage.open(pump_scene, headless=True)
    eng.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")], name="x"))
    eng.run(ticks=1)
    eng.remove_source("x")
    eng.run(ticks=1)
    assert eng.get(P, "pressure") == pytest.approx(eng.get(PUMP, "pressure")) and eng.quality(P, "pressure") == 0


def test_recording_keeps_measured_and_simulated_with_quality(tmp_path, pump_scene):
    p = csv(tmp_path, "r.csv", ["Pressure"], [(0, 0.5), (1, np.nan), (2, 0.7)])
    with twinstage.open(pump_scene, rate=1.0) as twin:
        twin.add_source(ReplaySource(p, [Binding(P, "pressure", "csv", "Pressure")]))
        twin.record(tmp_path / "rec.usdc", reproducible=True)
        twin.run(ticks=3)
    rec = twinstage.Recording(tmp_path / "rec.usdc")
    assert list(rec.series(P, "pressure")) == [0.5, 0.7, 0.7]  # measured (at 1 s the NaN: 0.5 held, flagged)
    assert rec.series(PUMP, "pressure")[-1] == pytest.approx(0.111, abs=1e-3)  # simulated, side by side
    q = rec.channel("pressure", quality=True)[:, list(rec.channels["pressure"]).index(rec.prims.index(P))]
    assert list(q) == [Quality.BAD, 0, 0]
    assert "csv:" in str(rec.provenance.get("dataSources"))


def test_cli_run_mqtt_feeds_the_scenes_mqtt_bindings_from_a_real_broker(tmp_path, pump_scene, mosquitto):
    import subprocess
    import sys
    from pathlib import Path

    import paho.mqtt.client as mqtt

    root = Path(__file__).resolve().parents[2]
    layer = tmp_path / "mqtt.usda"
    cli = [sys.executable, "-m", "twinstage"]
    bind = subprocess.run([*cli, "bind", str(pump_scene), "--map", str(root / "examples/telemetry/skab_mqtt.toml"), "-o", str(layer)],
                          capture_output=True, text=True, timeout=120)
    assert bind.returncode == 0, bind.stderr
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("skab/testbed/Pressure", "0.42", qos=1, retain=True).wait_for_publish(5)  # retained: there when the twin subscribes
    pub.loop_stop()
    pub.disconnect()
    proc = subprocess.run([*cli, "run", str(layer), "--mqtt", f"127.0.0.1:{mosquitto.port}", "--duration", "2", "--speed", "1",
                           "--record", str(tmp_path / "rec.usdc")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"mqtt mqtt://127.0.0.1:{mosquitto.port}" in proc.stdout and "samples applied" in proc.stdout
    rec = twinstage.Recording(tmp_path / "rec.usdc")
    assert rec.series(P, "pressure")[-1] == pytest.approx(0.42)
    assert "missing: no good sample yet" in proc.stdout  # the other sensors got nothing: STALE, said so
