"""MqttSource against Debian's real mosquitto on a loopback port: payload forms, units,
wildcards, batches, bad input, a broker that dies and comes back; the payload parser
under hypothesis."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from services import binder, drain_until, mosquitto  # noqa: F401  (mosquitto: a fixture)

import twinstage
from twinstage.state import Quality
from twinstage.telemetry import Binding, Inbox, TelemetryError
from twinstage.telemetry._mqtt import MqttSource
from twinstage.telemetry._payload import PayloadError, encode_batch, parse_payload

PUMP = "/Testbed/Pump"
PS = "/Testbed/Sensors/PressureSensor"


mq = binder("mqtt")


class Pub:
    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{port}-{time.monotonic_ns()}")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def __call__(self, topic: str, payload) -> None:
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def collect(inbox: Inbox, n: int, timeout: float = 10.0) -> list:
    return drain_until(inbox, lambda got: sum(len(s) for s in got) >= n, timeout)


def started(table, port, bindings, **kw):
    src = MqttSource("127.0.0.1", port, bindings, **kw)
    src.bind(table)
    inbox = Inbox()
    src.start(inbox)
    assert src.wait_connected(10)
    time.sleep(0.2)  # SUBACK
    return src, inbox


def test_json_and_plain_payloads_enter_in_the_attribute_unit_with_event_time(mosquitto, table):
    src, inbox = started(table, mosquitto.port, [mq(PS, "pressure", "tb/pressure", unit="kPa"), mq(PUMP, "motorTemperature", "tb/motor/temp", unit="degF")])
    pub = Pub(mosquitto.port)
    try:
        assert src.kind == "live" and {k: list(v) for k, v in src.feeds().items()} == {
            "pressure": [table.row(PS, "pressure")], "motorTemperature": [table.row(PUMP, "motorTemperature")]}
        pub("tb/pressure", {"value": 150.0, "ts": 1700000000.5, "quality": "good"})
        pub("tb/motor/temp", b"212")
        got = collect(inbox, 2)
        by = {s.channel: s for s in got}
        p, t = by["pressure"], by["motorTemperature"]
        assert p.values.tolist() == pytest.approx([1.5]) and p.event_time.tolist() == [1700000000.5] and p.quality.tolist() == [0]
        assert p.rows.tolist() == [table.row(PS, "pressure")] and p.source == src.name
        assert t.values.tolist() == pytest.approx([100.0])  # 212 °F
        assert abs(t.event_time[0] - time.time()) < 60  # plain number: arrival time
        assert src.stats()["messages"] == 2 and src.stats()["rejected"] == 0
    finally:
        pub.close()
        src.close()


def test_wildcards_match_concrete_topics_and_one_topic_feeds_two_attributes(mosquitto, table):
    bs = [mq(PS, "pressure", "site/+/pressure"), mq(PUMP, "pressure", "site/line1/pressure"), mq(PUMP, "current", "site/line1/#")]
    src, inbox = started(table, mosquitto.port, bs)
    pub = Pub(mosquitto.port)
    try:
        pub("site/line1/pressure", {"value": 2.0, "ts": 10.0})  # PS (wildcard), Pump (exact), current (#)
        pub("site/line2/pressure", {"value": 3.0, "ts": 11.0})  # PS only
        pub("site/other/current", {"value": 9.0, "ts": 12.0})  # nobody subscribes: the broker keeps it
        got = collect(inbox, 4)
        time.sleep(0.3)
        got += inbox.drain()[0]
        seen = sorted((s.channel, int(r), float(v), float(t)) for s in got for r, v, t in zip(s.rows, s.values, s.event_time))
        assert seen == sorted([
            ("pressure", table.row(PS, "pressure"), 2.0, 10.0), ("pressure", table.row(PUMP, "pressure"), 2.0, 10.0),
            ("current", table.row(PUMP, "current"), 2.0, 10.0), ("pressure", table.row(PS, "pressure"), 3.0, 11.0)])
        assert src.stats()["messages"] == 2
    finally:
        pub.close()
        src.close()


@pytest.mark.parametrize("form", ["json", "binary"])
def test_batches_route_by_key_and_convert_per_binding(mosquitto, table, form):
    bs = [mq(PS, "pressure", "tb/p", unit="kPa"), mq(PUMP, "current", "tb/i", scale=2.0), mq(PUMP, "voltage", "tb/u")]
    src, inbox = started(table, mosquitto.port, bs, batch_topics=["tb/batch"])
    pub = Pub(mosquitto.port)
    keys, ts = ["tb/p", "tb/i", "tb/u", "tb/nobody"], [100.0, 100.1, 100.2]
    vals = np.array([[100.0, 1.0, 230.0, 0.0], [200.0, 2.0, 231.0, 0.0], [300.0, 3.0, float("nan"), 0.0]])
    try:
        if form == "json":
            payload = {"ts": ts, "values": {k: [None if math.isnan(x) else x for x in vals[:, i]] for i, k in enumerate(keys)}, "quality": {"tb/i": "uncertain"}}
        else:
            q = np.zeros(vals.shape, np.uint8)
            q[:, 1] = 1
            payload = encode_batch(keys, ts, vals, q)
        pub("tb/batch", payload)
        got = collect(inbox, 9)
        by = {s.channel: s for s in got}
        assert by["pressure"].values.tolist() == pytest.approx([1.0, 2.0, 3.0]) and by["pressure"].event_time.tolist() == ts
        assert by["current"].values.tolist() == pytest.approx([2.0, 4.0, 6.0]) and set(by["current"].quality) == {Quality.UNCERTAIN}
        u = by["voltage"]
        assert u.values[:2].tolist() == [230.0, 231.0] and u.quality.tolist() == [0, 0, Quality.BAD] and "tb/u" in u.reason
        assert src.stats()["unbound"] == 1 and src.stats()["bad_samples"] == 1
    finally:
        pub.close()
        src.close()


def test_garbage_oversized_and_non_finite_payloads_are_rejected_or_flagged_and_the_loop_goes_on(mosquitto, table):
    src, inbox = started(table, mosquitto.port, [mq(PS, "pressure", "tb/#")], max_payload=1000)
    pub = Pub(mosquitto.port)
    try:
        for topic, payload in [("tb/a", b"\xff\xfe garbage"), ("tb/b", b"{\"value\": "), ("tb/c", b"x" * 5000), ("tb/d", b"[1,2]"),
                               ("tb/e", b'{"value": "high"}'), ("tb/f", b'{"value": 1, "ts": "yesterday"}'), ("tb/g", b"TSB1\x01")]:
            pub(topic, payload)
        pub("tb/nan", b"nan")
        pub("tb/inf", {"value": 1e308, "ts": 5.0, "quality": "bad"})
        pub("tb/ok", {"value": 0.25, "ts": 6.0})
        got = collect(inbox, 3)
        vals = [(float(v), int(q), s.reason) for s in got for v, q in zip(s.values, s.quality)]
        assert vals[-1] == (0.25, 0, "")
        assert math.isnan(vals[0][0]) and vals[0][1] == Quality.BAD and "non-finite" in vals[0][2] and "tb/#" in vals[0][2]
        assert vals[1][1] == Quality.BAD and "quality" in vals[1][2]
        st_ = src.stats()
        assert st_["rejected"] == 7 and st_["messages"] == 3
        rej = dict(src.rejects)
        assert set(rej) == {"tb/a", "tb/b", "tb/c", "tb/d", "tb/e", "tb/f", "tb/g"}
        assert "oversized" in rej["tb/c"] and "malformed JSON" in rej["tb/b"] and "number" in rej["tb/e"] and "ts" in rej["tb/f"]
    finally:
        pub.close()
        src.close()


def test_broker_dies_and_comes_back_samples_flow_again(mosquitto, table):
    src, inbox = started(table, mosquitto.port, [mq(PS, "pressure", "tb/p")], reconnect_min=0.05, reconnect_max=0.5)
    try:
        pub = Pub(mosquitto.port)
        pub("tb/p", {"value": 1.0, "ts": 1.0})
        assert [float(v) for s in collect(inbox, 1) for v in s.values] == [1.0]
        pub.close()
        mosquitto.kill()
        end = time.monotonic() + 10
        while src.stats()["connected"] and time.monotonic() < end:
            time.sleep(0.02)
        assert src.stats()["connected"] == 0 and src.stats()["disconnects"] >= 1
        time.sleep(0.5)  # a few failed attempts while the broker is down
        mosquitto.start()
        assert src.wait_connected(15)
        time.sleep(0.2)
        pub = Pub(mosquitto.port)
        pub("tb/p", {"value": 2.0, "ts": 2.0})
        got = collect(inbox, 1)
        pub.close()
        assert [float(v) for s in got for v in s.values] == [2.0]
        assert src.stats()["reconnects"] >= 1
    finally:
        src.close()


def test_bind_errors_name_the_binding(table):
    with pytest.raises(TelemetryError, match=r"mqtt:tb/x → /Testbed/Nope.twin:pressure: unknown target"):
        MqttSource("127.0.0.1", 1, [mq("/Testbed/Nope", "pressure", "tb/x")]).bind(table)
    with pytest.raises(TelemetryError, match=r"mqtt:tb/y .*PressureSensor.twin:pressure.*degC"):
        MqttSource("127.0.0.1", 1, [mq(PS, "pressure", "tb/y", unit="degC")]).bind(table)
    with pytest.raises(TelemetryError, match=r"invalid topic filter 'tb/#/x'"):
        MqttSource("127.0.0.1", 1, [mq(PS, "pressure", "tb/#/x")])
    with pytest.raises(TelemetryError, match=r"a mqtt source cannot serve a opcua binding"):
        MqttSource("127.0.0.1", 1, [Binding(PS, "pressure", "opcua", "ns=2;s=P")])
    with pytest.raises(TelemetryError, match=r"mqtt:tb/b → .*PressureSensor.twin:pressure is already fed by binding mqtt:tb/a"):
        MqttSource("127.0.0.1", 1, [mq(PS, "pressure", "tb/a"), mq(PS, "pressure", "tb/b")]).bind(table)
    src = MqttSource("127.0.0.1", 1, [mq(PS, "pressure", "tb/z")])
    with pytest.raises(TelemetryError, match="bind"):
        src.start(Inbox())


@pytest.mark.parametrize("payload, why", [
    (b"[" * 100_000, "depth limit"), (b'{"value": 1e400}', "infinity"), (b'{"value": ' + b"9" * 500 + b"}", "infinity"),
    (b'{"value": true}', "got bool"), (b'{"value": "1.5"}', "got str"), (b'{"value": 1, "quality": "meh"}', "quality"),
    (b'"42"', "not a number"), (b"1_000", "not a number"), (b"0x10", "not a number"), (b"1e", "not a number"),
    (b'{"values": {"a": [1, 2]}, "ts": [1]}', "batch key 'a'"), (b'{"values": [1]}', "'values' must be an object"),
    (b'{"values": {"a": [1]}, "ts": ["x"]}', "ts[] must be a number"), (b"TSB1" + b"\xff" * 16, "unknown flags"),
    (encode_batch(["a", "b"], [1.0], [[1.0, 2.0]])[:-1], "header says"), (b"", "empty"),
])
def test_parser_rejects_hostile_payloads_with_a_reason(payload, why):
    with pytest.raises(PayloadError, match=re.escape(why)):
        parse_payload("t", payload, arrival=0.0)


@pytest.mark.parametrize("text, value", [(b"1.5", 1.5), (b" -.5e3 ", -500.0), (b"+3", 3.0), (b"NaN", math.nan), (b"-inf", -math.inf)])
def test_plain_numbers(text, value):
    p = parse_payload("t", text, arrival=7.0)
    assert p.keys == ("t",) and p.ts.tolist() == [7.0]
    assert (math.isnan(p.values[0, 0]) and math.isnan(value)) or p.values[0, 0] == value


# -- the parser ---------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda b: b"TSB1" + b, st.binary(max_size=200)) | st.builds(lambda s: s.encode(), st.text(max_size=100)))
def test_parser_never_raises_anything_but_payload_error(data):
    try:
        p = parse_payload("t", data, arrival=1.0, max_bytes=250)
    except PayloadError as exc:
        assert str(exc)
    else:
        assert p.values.shape == (len(p.ts), len(p.keys)) == p.quality.shape and np.isfinite(p.ts).all()


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=8), min_size=0, max_size=5, unique=True),
       st.lists(finite, min_size=1, max_size=4), st.data())
def test_binary_batch_round_trips(keys, ts, data):
    vals = np.array(data.draw(st.lists(st.lists(st.floats(), min_size=len(keys), max_size=len(keys)), min_size=len(ts), max_size=len(ts))), np.float64).reshape(len(ts), len(keys))
    q = np.array(data.draw(st.lists(st.integers(0, 2), min_size=vals.size, max_size=vals.size)), np.uint8).reshape(vals.shape)
    p = parse_payload("t", encode_batch(keys, ts, vals, q))
    assert p.keys == tuple(keys) and p.ts.tolist() == ts
    np.testing.assert_array_equal(p.values, vals)
    np.testing.assert_array_equal(p.quality, q)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(finite, st.none()), max_size=5), finite)
def test_json_batch_scalar_form(values, ts):
    p = parse_payload("t", json.dumps({"ts": ts, "values": values}).encode())
    assert p.keys == tuple(values) and p.ts.tolist() == [ts]
    for k, v in enumerate(values.values()):
        assert (math.isnan(p.values[0, k]) and p.quality[0, k] == 2) if v is None else (p.values[0, k] == v and p.quality[0, k] == 0)


def tick_until(twin, cond, n: int = 500):
    for _ in range(n):
        twin.tick()
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_end_to_end_through_a_twin(mosquitto, pump_scene):
    twin = twinstage.open(pump_scene, headless=True)
    pub = Pub(mosquitto.port)
    try:
        bs = [mq(PS, "pressure", "plant/p", unit="kPa", period=0.1), mq(PUMP, "current", "plant/i", unit="mA"), mq(PUMP, "voltage", "plant/u")]
        src = twin.add_source(MqttSource("127.0.0.1", mosquitto.port, bs, batch_topics=["plant/batch"], name="plant"))
        assert src.wait_connected(10)
        time.sleep(0.2)
        pub("plant/batch", encode_batch(["plant/i", "plant/u"], [time.time()], [[1500.0, 231.0]]))  # the binary fast path
        pub("plant/p", {"value": 150.0, "ts": time.time()})
        assert tick_until(twin, lambda: twin.get(PS, "pressure") == pytest.approx(1.5)), twin.feeds.errors
        assert twin.get(PUMP, "current") == pytest.approx(1.5) and twin.get(PUMP, "voltage") == 231.0
        assert not twin.quality(PS, "pressure") & Quality.BAD and not twin.feeds.errors
        pub("plant/p", b"nan")
        assert tick_until(twin, lambda: twin.quality(PS, "pressure") & Quality.BAD)
        assert twin.get(PS, "pressure") == pytest.approx(1.5)  # the previous good value is held
        assert "non-finite" in twin.quality_reason(PS, "pressure")
        st = twin.feeds.stats()["sources"]["plant"]
        assert st["source_messages"] == 3 and st["source_connected"] == 1 and not twin.feeds.errors
    finally:
        pub.close()
        twin.close()
    assert src.stats()["connected"] == 0


def test_no_broker_start_returns_and_close_stops_the_retry_loop(table):
    import threading

    from services import free_port

    src = MqttSource("127.0.0.1", free_port(), [mq(PS, "pressure", "tb/p")], reconnect_min=0.05, reconnect_max=0.2)
    src.bind(table)
    src.start(Inbox())  # connects in the background: never blocks the caller
    time.sleep(0.5)
    assert src.stats()["connected"] == 0 and src.stats()["connects"] == 0
    closer = threading.Thread(target=src.close)
    closer.start()
    closer.join(30)  # a hang guard, not a timing assertion
    assert not closer.is_alive()
    src.close()  # idempotent
