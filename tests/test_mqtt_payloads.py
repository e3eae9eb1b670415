"""MQTT payloads other tools read: payload = json, batches, the retained status and metadata,
checked with the mqtt device and with mosquitto_sub, a real MQTT client."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from mosquitto import Mosquitto
from test_mqtt import FAST, Recorder

from conftest import wait_for
from radlogger.devices.mqtt import MQTTDevice
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.measurement import Measurement
from radlogger.payload import decode_payload, encode_batch, encode_json
from radlogger.pipeline import Pipeline
from radlogger.wire import WireError

ARR = (np.arange(6) * (1 - 1j)).astype(np.complex64).reshape(2, 3)




def _values() -> list[object]:
    return [21.5, "text", [1, 2], np.arange(5, dtype=np.float32), ARR, b"\x00\xff"]


@pytest.mark.parametrize("payload,batch", [("json", 1), ("json", 4), ("binary", 4)])
def test_every_payload_form_reaches_the_mqtt_device(broker: Mosquitto, host_a: Pipeline,
                                                   pipeline: Pipeline, payload: str,
                                                   batch: int) -> None:
    dev = pipeline.add_device(MQTTDevice("hostA", port=broker.port, **FAST))
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["hostA"])
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"])
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, payload=payload, batch=batch,
                                          metadata=True, **FAST), subscribe=["src"])
    host_a.start()
    values = _values() * 3
    host_a.outlet("src").push_many([Measurement("src", "src.v", v, unit="V") for v in values])
    wait_for(lambda: len(sink.items) == len(values) and ep.confirmed == len(values))
    for got, want in zip(sink.items, values, strict=True):
        if isinstance(want, np.ndarray):
            assert got.value.dtype == want.dtype and np.array_equal(got.value, want)
        else:
            assert got.value == want
        assert got.unit == "V" and got.topic == "hostA.src.v"
    assert ep.counters()["messages"] < len(values) if batch > 1 else True
    wait_for(lambda: dev.counters()["status_messages"] >= 1 and dev.counters()["meta_messages"]
             >= 1, message=f"status and metadata counted, not relayed: {dev.counters()}")
    assert sum(dev.bad_messages.values()) == 0 and ep.stats.dropped == 0


def test_json_payload_is_plain_json_with_iso_time() -> None:
    m = Measurement("s", "s.iq", ARR, t_ns=1_700_000_000_123_456_789)
    doc = json.loads(encode_json(m))
    assert doc["time"] == "2023-11-14T22:13:20.123456Z" and doc["t_ns"] == m.t_ns
    assert doc["dtype"] == "<c8" and doc["shape"] == [2, 3]
    assert doc["value"][1][2] == [5.0, -5.0]  # complex as [re, im]
    batch = json.loads(encode_batch([m, m], "json"))
    assert isinstance(batch, list) and len(batch) == 2


@pytest.mark.parametrize("garbage", [b"[1, 2]", b'{"type": "array", "dtype": "<f4", '
                                     b'"shape": [3], "value": [1], "topic": "a.b", '
                                     b'"source": "a", "t_ns": 1}', b"RLB1\x05\x00",
                                     b'{"type": "bytes", "value": "**", "topic": "a.b", '
                                     b'"source": "a", "t_ns": 1}'])
def test_bad_payloads_raise_wire_error(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode_payload(garbage)


def _mosquitto_sub(port: int, topic: str, count: int) -> dict[str, str]:
    sub = shutil.which("mosquitto_sub")
    if sub is None:
        pytest.skip("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    done = subprocess.run([sub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-v",
                           "-C", str(count), "-W", "20"], capture_output=True, text=True,
                          timeout=30, check=True)
    lines = [line.split(" ", 1) for line in done.stdout.splitlines()]
    return {t: payload for t, payload in lines}


def test_mosquitto_sub_reads_json_payloads_retained_status_and_metadata(
        broker: Mosquitto, host_a: Pipeline) -> None:
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, payload="json", retain=True,
                                          metadata=True, topic_prefix="lab/a", **FAST),
                             subscribe=["src"])
    host_a.start()
    host_a.outlet("src").push(Measurement("src", "src.trace", np.arange(4, dtype=np.int16),
                                          unit="dBm"))
    wait_for(lambda: ep.confirmed == 1)
    got = _mosquitto_sub(broker.port, "lab/a/#", 3)
    assert got["lab/a/status"] == "online"
    data = json.loads(got["lab/a/src/trace"])
    assert data["value"] == [0, 1, 2, 3] and data["unit"] == "dBm" and data["time"].endswith("Z")
    meta = json.loads(got["lab/a/_meta/src/trace"])
    assert meta == {"topic": "src.trace", "unit": "dBm", "type": "array", "dtype": "<i2",
                    "shape": [4]}
    assert host_a.stop(5)
    assert _mosquitto_sub(broker.port, "lab/a/status", 1) == {"lab/a/status": "offline"}


def test_the_will_says_offline_when_the_endpoint_vanishes(broker: Mosquitto,
                                                         host_a: Pipeline) -> None:
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, topic_prefix="lab/b",
                                          **FAST), subscribe=["src"])
    host_a.start()
    wait_for(lambda: ep.counters()["connected"])
    _mosquitto_sub(broker.port, "lab/b/status", 1)  # skips without mosquitto_sub
    watch = subprocess.Popen([str(shutil.which("mosquitto_sub")), "-h", "127.0.0.1", "-p",
                              str(broker.port), "-t", "lab/b/status", "-C", "3", "-W", "20"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "online"  # retained: it is subscribed
        assert ep.link is not None
        sock = ep.link.client.socket()
        assert sock is not None
        sock.shutdown(2)  # gone without a DISCONNECT: the broker publishes the will ...
        assert watch.stdout.readline().strip() == "offline"
        assert watch.stdout.readline().strip() == "online"  # ... and the reconnect the birth
        assert watch.wait(20) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        if watch.stdout is not None:
            watch.stdout.close()


def test_batches_of_plain_numbers_go_as_columns_and_come_back_exact() -> None:
    floats = [Measurement("s", "s.v", i / 3, t_ns=10**18 + i, unit="V", seq=i) for i in range(50)]
    ints = [Measurement("s", "s.n", -(2**62) + i, t_ns=5, seq=i) for i in range(3)]
    for ms in (floats, ints):
        data = encode_batch(ms, "binary")
        assert data[:4] == b"RLC1"
        got = decode_payload(data)
        assert [(m.source, m.topic, m.value, m.t_ns, m.unit, m.seq) for m in got] == \
            [(m.source, m.topic, m.value, m.t_ns, m.unit, m.seq) for m in ms]
        assert all(type(g.value) is type(m.value) for g, m in zip(got, ms, strict=True))
    mixed = [*floats[:2], Measurement("s", "s.v", 1.0, meta={"k": 1})]
    data = encode_batch(mixed, "binary")
    assert data[:4] == b"RLB1" and decode_payload(data)[2].meta == {"k": 1}
    with pytest.raises(WireError):
        decode_payload(encode_batch(floats, "binary")[:-1])


def test_batched_columns_through_the_device_with_a_broker_restart(
        broker: Mosquitto, host_a: Pipeline, pipeline: Pipeline) -> None:
    n = 3000
    dev = pipeline.add_device(MQTTDevice("hostA", port=broker.port, **FAST))
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["hostA"])
    pipeline.start()
    wait_for(lambda: dev.counters()["connected"])
    ep = host_a.add_endpoint(MQTTEndpoint("mq", port=broker.port, batch=50, batch_ms=20,
                                          **FAST), subscribe=["src"])
    host_a.start()
    out = host_a.outlet("src")
    out.push_many([Measurement("src", "src.v", float(i)) for i in range(n // 2)])
    wait_for(lambda: len(sink.items) > 0)
    broker.restart()
    out.push_many([Measurement("src", "src.v", float(i)) for i in range(n // 2, n)])
    assert host_a.stop(10)
    dropped = ep.stats.dropped
    wait_for(lambda: len({m.value for m in sink.items}) + dropped == n)
    assert len(sink.items) == len({m.value for m in sink.items})  # duplicates dropped
    assert ep.stats.handled + dropped == n and ep.confirmed == ep.stats.handled
    assert ep.counters()["messages"] < n // 10
