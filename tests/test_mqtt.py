"""MQTT between two pipelines through a real Mosquitto: round trip, broker restart mid-stream,
outage buffering and drop counting, retain, credentials, TLS, garbage payloads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from mosquitto import Mosquitto

from conftest import wait_for
from radlogger.devices.mqtt import MQTTDevice
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoint import Endpoint
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.measurement import Measurement
from radlogger.mqtt import MQTTConfigError, from_mqtt_topic, make_client, to_mqtt_topic
from radlogger.pipeline import Pipeline

FAST = {"backoff_initial": 0.02, "backoff_max": 0.1}




class Recorder(Endpoint):
    kind = "test_recorder"

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.items: list[Measurement] = []

    def handle_batch(self, batch: list[Measurement]) -> None:
        self.items.extend(batch)


def _subscriber(p: Pipeline, broker: Mosquitto, name: str = "hostA",
                **kw: Any) -> tuple[MQTTDevice, Recorder]:
    dev = p.add_device(MQTTDevice(name, port=broker.port, **FAST, **kw))
    sink = p.add_endpoint(Recorder("sink"), subscribe=[name])
    return dev, sink


def _raw_publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_topic_mapping() -> None:
    assert to_mqtt_topic("radlogger", "wsa1.spectrum") == "radlogger/wsa1/spectrum"
    assert to_mqtt_topic("lab/hostA/", "a.b") == "lab/hostA/a/b"
    assert from_mqtt_topic("lab/hostA", "lab/hostA/wsa1/iq") == "wsa1.iq"
    assert from_mqtt_topic("radlogger", "sensors/room 1/t+") == "sensors.room_1.t_"


def test_round_trip_keeps_values_units_timestamps_and_meta(broker: Mosquitto, host_a: Pipeline,
                                                          pipeline: Pipeline) -> None:
    dev, sink = _subscriber(pipeline, broker)
    raw = pipeline.add_device(MQTTDevice("raw", port=broker.port, payload="value",
                                         topics=["radlogger/src/v"], clean_session=True, **FAST))
    raw_sink = pipeline.add_endpoint(Recorder("raw_sink"), subscribe=["raw"])
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"] and raw.counters()["connected"])
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, **FAST), subscribe=["src"])
    host_a.start()
    out = host_a.outlet("src")
    arr = (np.arange(1024) * (1 - 1j)).astype(np.complex64)
    out.push(Measurement("src", "src.v", 21.5, t_ns=111, unit="C", meta={"room": "lab"}))
    out.push(Measurement("src", "src.iq", arr, t_ns=222, device_time=333, meta={"f0": 2.4e9}))
    # the broker may deliver to the subscribers before its PUBACKs reach the publisher
    wait_for(lambda: len(sink.items) == 2 and len(raw_sink.items) == 1 and ep.confirmed == 2)
    v, iq = sink.items
    assert (v.source, v.topic, v.value, v.t_ns, v.unit) == ("hostA", "hostA.src.v", 21.5, 111, "C")
    assert v.meta == {"room": "lab", "origin_source": "src", "origin_seq": 0}
    assert iq.topic == "hostA.src.iq" and iq.device_time == 333
    assert np.array_equal(iq.value, arr) and iq.value.dtype == np.complex64
    # Any MQTT tool sees plain JSON for scalars, on the mapped topic.
    plain = raw_sink.items[0]
    assert plain.topic == "raw.src.v" and plain.value["value"] == 21.5
    assert plain.value["unit"] == "C" and plain.value["topic"] == "src.v"
    assert ep.confirmed == 2 and ep.stats.handled == 2


def test_broker_restart_mid_stream_every_measurement_is_accounted(
        broker: Mosquitto, host_a: Pipeline, pipeline: Pipeline) -> None:
    n = 2000
    dev, sink = _subscriber(pipeline, broker)
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"])
    syn = host_a.add_device(SyntheticDevice("syn", rate=4000, count=n, pattern="counter"))
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, inbox_size=300, **FAST),
                             subscribe=["syn"])
    host_a.start()
    wait_for(lambda: len(sink.items) >= n // 4, message="stream flowing")
    at_restart = len(sink.items)
    broker.restart()  # SIGTERM: the broker saves sessions and queued messages, then returns
    wait_for(lambda: syn.state.value == "finished", message="all produced")
    assert host_a.stop(10)

    def unique() -> int:
        return len({m.meta["origin_seq"] for m in sink.items})

    dropped = ep.stats.dropped
    wait_for(lambda: unique() + dropped == n, message="every measurement delivered or dropped")
    assert at_restart < n
    link = ep.counters()
    assert link["disconnects"] >= 1 and link["connects"] >= 2
    assert ep.stats.received == n and ep.stats.handled + dropped == n
    assert ep.confirmed == ep.stats.handled
    assert set(ep.stats.reasons()) <= {"inbox_full", "mqtt_unavailable"}
    assert dev.outlet.stats.errors >= 1  # the device saw the broker go away too
    # Duplicates (QoS 1 redelivery) were dropped by the device, not passed on.
    assert len(sink.items) == unique()
    seqs = [m.meta["origin_seq"] for m in sink.items]
    assert seqs == sorted(seqs)
    assert host_a.balanced()


def test_outage_buffers_in_the_inbox_counts_drops_and_resumes(
        broker: Mosquitto, host_a: Pipeline, pipeline: Pipeline) -> None:
    dev, sink = _subscriber(pipeline, broker)
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"])  # the broker now keeps our session
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, inbox_size=50, **FAST),
                             subscribe=["src"])
    host_a.start()
    wait_for(lambda: ep.counters()["connected"])
    broker.stop()
    wait_for(lambda: not ep.counters()["connected"])
    out = host_a.outlet("src")
    for i in range(200):
        out.push(Measurement("src", "src.v", i))
    wait_for(lambda: ep.stats.received == 200 and ep.stats.dropped >= 100,
             message="inbox full, the rest counted as dropped")
    wait_for(lambda: ep.counters()["connect_failures"] >= 1, message="retrying")
    broker.start()
    dropped = ep.stats.dropped
    wait_for(lambda: len(sink.items) + dropped == 200 and ep.idle, message="resumed")
    assert ep.stats.reasons() == {"inbox_full": dropped}
    values = [m.value for m in sink.items]
    assert values == sorted(values) and len(values) >= 50


def test_stop_while_the_broker_is_down_counts_what_could_not_be_sent(
        broker: Mosquitto, host_a: Pipeline) -> None:
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, **FAST), subscribe=["src"])
    host_a.start()
    wait_for(lambda: ep.counters()["connected"])
    broker.stop()
    wait_for(lambda: not ep.counters()["connected"])
    out = host_a.outlet("src")
    for i in range(20):
        out.push(Measurement("src", "src.v", i))
    wait_for(lambda: ep.stats.received == 20)
    host_a.stop(1.0)
    assert ep.stats.handled == 0 and ep.unsent == 20
    assert ep.stats.reasons() == {"mqtt_unavailable": 20} and ep.stats.balanced()


def test_qos0_and_retain_reach_a_late_subscriber(broker: Mosquitto, host_a: Pipeline,
                                                 pipeline: Pipeline) -> None:
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, qos=0, retain=True, **FAST),
                             subscribe=["src"])
    host_a.start()
    host_a.outlet("src").push(Measurement("src", "src.state", "armed"))
    wait_for(lambda: ep.confirmed == 1)
    host_a.stop(5)
    dev, sink = _subscriber(pipeline, broker, clean_session=True, qos=0)
    pipeline.start()
    wait_for(lambda: len(sink.items) == 1, message="retained message delivered")
    assert sink.items[0].value == "armed" and sink.items[0].topic == "hostA.src.state"


def test_garbage_payloads_are_counted_and_the_device_goes_on(broker: Mosquitto,
                                                             pipeline: Pipeline) -> None:
    dev, sink = _subscriber(pipeline, broker)
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"])
    _raw_publish(broker.port, "radlogger/x/y", b"\x00garbage")
    _raw_publish(broker.port, "radlogger/x/y", b'{"topic": "not valid!", "value": 1}')
    wait_for(lambda: sum(dev.bad_messages.values()) == 2)
    from radlogger.wire import encode

    _raw_publish(broker.port, "radlogger/x/y", encode(Measurement("x", "x.y", 5, seq=1)))
    wait_for(lambda: len(sink.items) == 1)
    assert dev.bad_messages == {"undecodable": 2} and dev.outlet.stats.errors == 2
    assert dev.state.value == "running"
    # a poison message (nesting past the recursion limit), QoS 1: counted and acknowledged
    # once, not redelivered after a reconnect; the next good message arrives
    _raw_publish(broker.port, "radlogger/x/y", b"[" * 100_000 + b"]" * 100_000)
    _raw_publish(broker.port, "radlogger/x/y", encode(Measurement("x", "x.y", 6, seq=2)))
    wait_for(lambda: len(sink.items) == 2)
    assert dev.bad_messages == {"undecodable": 3}
    _raw_publish(broker.port, "radlogger/x/y", encode(Measurement("x", "x.y", 7, seq=3)))
    wait_for(lambda: len(sink.items) == 3)
    assert dev.bad_messages == {"undecodable": 3} and dev.counters()["connected"] == 1


def test_wrong_password_is_reported_and_right_one_works(tmp_path: Path, host_a: Pipeline,
                                                        pipeline: Pipeline) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (part of the mosquitto package)")
    (tmp_path / "pw").write_text("right-pw\n")
    with Mosquitto(tmp_path / "b", passwords={"logger": "right-pw"}) as broker:
        bad = host_a.add_endpoint(MQTTEndpoint("bad", port=broker.port, username="logger",
                                               password="wrong", **FAST), subscribe=["src"])
        good = host_a.add_endpoint(MQTTEndpoint("good", port=broker.port, username="logger",
                                                password_file=str(tmp_path / "pw"), **FAST),
                                   subscribe=["src"])
        dev, sink = _subscriber(pipeline, broker, username="logger", password="right-pw")
        pipeline.start()
        host_a.start()
        wait_for(lambda: bad.link is not None and
                 "check username/password" in bad.link.last_error)
        wait_for(lambda: dev.counters()["connected"] and
                 good.counters()["connected"])
        host_a.outlet("src").push(Measurement("src", "src.v", 1))
        wait_for(lambda: len(sink.items) == 1)
        assert bad.counters()["connect_failures"] >= 1 and bad.confirmed == 0
        host_a.stop(1.0)
        pipeline.stop(5)


def test_tls_round_trip(tmp_path: Path, host_a: Pipeline, pipeline: Pipeline) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    broker = Mosquitto(tmp_path / "b")
    broker.extra = f"cafile {cert}\ncertfile {cert}\nkeyfile {key}"
    with broker:
        tls = {"tls": True, "ca_file": str(cert)}
        ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, **tls, **FAST),
                                 subscribe=["src"])
        dev, sink = _subscriber(pipeline, broker, **tls)
        pipeline.start()
        wait_for(lambda: dev.counters()["connected"])
        host_a.start()
        host_a.outlet("src").push(Measurement("src", "src.v", np.arange(3)))
        wait_for(lambda: len(sink.items) == 1 and ep.confirmed == 1)  # PUBACK may come later
        assert sink.items[0].value.tolist() == [0, 1, 2] and ep.confirmed == 1
        host_a.stop(5)
        pipeline.stop(5)


def test_tls_configuration_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(MQTTConfigError, match="ca_file .* does not exist"):
        make_client({"tls": True, "ca_file": str(tmp_path / "nope.pem")}, "id", True,
                    "endpoint mq")
    with pytest.raises(MQTTConfigError, match="password_file"):
        make_client({"username": "u", "password_file": str(tmp_path / "nope")}, "id", True,
                    "endpoint mq")
