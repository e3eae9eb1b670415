"""Crossing boundaries: messages/s and MB/s in-process vs over MQTT vs over HTTP long-poll,
and pool scaling from 1 to 2 workers on FFT work.

* in-process: outlet -> queue -> broker -> counting endpoint (the baseline);
* MQTT: host A's ``mqtt`` endpoint -> Mosquitto on 127.0.0.1 -> host B's ``mqtt`` device ->
  counting endpoint (QoS 0 and 1);
* long-poll: host A's ``longpoll`` endpoint -> host B's ``remote`` device -> counting endpoint;
* pool: ``fft`` on 16384-point I/Q packets, as a pool of 1 or 2 process workers (and 2 threads).

Each for scalars (8-byte floats, JSON on the wire) and 4096-sample float32 arrays (16 KiB,
binary on the wire).  The producer stays at most ``AHEAD`` measurements ahead of the consumer
so memory stays bounded and nothing is dropped; every run asserts its whole workload arrived.

Run: ``python -m pytest benchmarks/bench_boundaries.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.devices.mqtt import MQTTDevice
from radlogger.devices.remote import RemoteDevice
from radlogger.endpoints.longpoll import LongPollEndpoint
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.workers.pool import EndpointPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mosquitto import MOSQUITTO, Mosquitto  # noqa: E402  (the one broker helper, in tests/)

AHEAD = 2000
PAYLOADS: dict[str, Any] = {"scalar": 1.5, "array": np.ones(4096, dtype=np.float32)}


def _wait(predicate: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("benchmark workload did not finish")
        time.sleep(0.0005)


def _pump(p: Pipeline, n: int, value: Any, done: Callable[[], int]) -> None:
    out = p.outlet("src")
    for i in range(n):
        while i - done() > AHEAD:
            time.sleep(0.0002)
        out.push(Measurement("src", "src.v", value))


def _bytes(value: Any) -> int:
    return int(getattr(value, "nbytes", 8))


def _sink(p: Pipeline, pattern: str, n: int) -> NullEndpoint:
    return p.add_endpoint(NullEndpoint("sink", check_order=False, inbox_size=max(n, 65536)),
                          subscribe=[pattern])


def _stop(*pipelines: Pipeline) -> None:
    for p in pipelines:
        p.stop(10)


def run_in_process(n: int, value: Any) -> float:
    a = Pipeline(overflow="block", block_timeout=60)
    sink = _sink(a, "src", n)
    a.start()
    t0 = time.perf_counter()
    _pump(a, n, value, lambda: sink.count)
    _wait(lambda: sink.count >= n)
    elapsed = time.perf_counter() - t0
    _stop(a)
    assert sink.count == n and a.balanced()
    return elapsed


def run_mqtt(n: int, value: Any, qos: int, port: int) -> float:
    a, b = Pipeline(overflow="block", block_timeout=60), Pipeline()
    dev = b.add_device(MQTTDevice("hostA", port=port, qos=qos, clean_session=True,
                                  dedupe=False))
    sink = _sink(b, "hostA", n)
    ep = a.add_endpoint(MQTTEndpoint("mq", port=port, qos=qos, inbox_size=max(n, 65536)),
                        subscribe=["src"])
    b.start()
    _wait(lambda: dev.counters()["connected"], 10)
    a.start()
    _wait(lambda: ep.counters()["connected"], 10)
    t0 = time.perf_counter()
    _pump(a, n, value, lambda: sink.count)
    _wait(lambda: sink.count >= n)
    elapsed = time.perf_counter() - t0
    _stop(a, b)
    assert sink.count == n and ep.stats.dropped == 0
    return elapsed


def run_longpoll(n: int, value: Any) -> float:
    a, b = Pipeline(overflow="block", block_timeout=60), Pipeline()
    lp = a.add_endpoint(LongPollEndpoint("lp", port=0, buffer=4 * AHEAD), subscribe=["src"])
    a.start()
    b.add_device(RemoteDevice("hostA", url=lp.url, batch=1000, wait=5))
    sink = _sink(b, "hostA", n)
    b.start()
    t0 = time.perf_counter()
    _pump(a, n, value, lambda: sink.count)
    _wait(lambda: sink.count >= n)
    elapsed = time.perf_counter() - t0
    _stop(b, a)
    assert sink.count == n and lp.lost == 0
    return elapsed


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False)
    b.start()
    yield b
    b.stop()


def _report(benchmark: Any, n: int, value: Any, elapsed: float, **extra: Any) -> None:
    benchmark.extra_info.update(messages=n, messages_per_s=round(n / elapsed),
                                mb_per_s=round(n * _bytes(value) / elapsed / 1e6, 2), **extra)


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_in_process(benchmark: Any, payload: str) -> None:
    n = scaled(200_000 if payload == "scalar" else 50_000)
    value = PAYLOADS[payload]
    elapsed = benchmark.pedantic(run_in_process, args=(n, value),
                                 rounds=1 if benchutil.QUICK else 3,
                                 iterations=1)
    _report(benchmark, n, value, elapsed, boundary="in-process", payload=payload)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_mqtt(benchmark: Any, broker: Mosquitto, payload: str, qos: int) -> None:
    n = scaled(50_000 if payload == "scalar" else 20_000)
    value = PAYLOADS[payload]
    elapsed = benchmark.pedantic(run_mqtt, args=(n, value, qos, broker.port),
                                 rounds=1 if benchutil.QUICK else 3, iterations=1)
    _report(benchmark, n, value, elapsed, boundary="mqtt", payload=payload, qos=qos)


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_longpoll(benchmark: Any, payload: str) -> None:
    n = scaled(100_000 if payload == "scalar" else 20_000)
    value = PAYLOADS[payload]
    elapsed = benchmark.pedantic(run_longpoll, args=(n, value), rounds=1 if benchutil.QUICK else 3,
                                 iterations=1)
    _report(benchmark, n, value, elapsed, boundary="longpoll", payload=payload)


def run_pool(n: int, workers: int, mode: str) -> float:
    rng = np.random.default_rng(1)
    packets = [(rng.normal(size=16384) + 1j * rng.normal(size=16384)).astype(np.complex64)
               for _ in range(8)]
    p = Pipeline(overflow="block", block_timeout=60)
    pool = p.add_endpoint(EndpointPool("fft", endpoint="fft", workers=workers,
                                       worker_mode=mode, chunk=4, full_scale=1.0),
                          subscribe=["wsa1.iq"])
    sink = p.add_endpoint(NullEndpoint("sink", check_order=True), subscribe=["wsa1.spectrum"])
    p.start()
    out = p.outlet("wsa1")
    t0 = time.perf_counter()
    for i in range(n):
        while i - sink.count > 256:
            time.sleep(0.0002)
        out.push(Measurement("wsa1", "wsa1.iq", packets[i % len(packets)]))
    _wait(lambda: sink.count >= n)
    elapsed = time.perf_counter() - t0
    p.stop(10)
    assert sink.count == n and sink.out_of_order == 0 and pool.crashes == 0
    return elapsed


@pytest.mark.parametrize("workers,mode", [(1, "process"), (2, "process"), (2, "thread")])
def test_pool_scaling_fft(benchmark: Any, workers: int, mode: str) -> None:
    n = scaled(4000, minimum=40)
    elapsed = benchmark.pedantic(run_pool, args=(n, workers, mode),
                                 rounds=1 if benchutil.QUICK else 3,
                                 iterations=1)
    benchmark.extra_info.update(packets=n, fft_size=16384, workers=workers, mode=mode,
                                spectra_per_s=round(n / elapsed))
