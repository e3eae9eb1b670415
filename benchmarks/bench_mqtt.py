"""The ``mqtt`` endpoint against a real Mosquitto on 127.0.0.1: plain messages/s, batched
measurements/s, arrays in MB/s.

The workload is handed to the endpoint's inbox up front; the clock runs until the broker has
taken every message (QoS 1: every PUBACK; QoS 0: written to the socket).  Each run asserts the
whole workload was handled and nothing dropped.  ``bench_boundaries.test_mqtt`` measures the
same path end to end, through the ``mqtt`` device on the receiving side.

Run: ``python -m pytest benchmarks/bench_mqtt.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mosquitto import MOSQUITTO, Mosquitto  # noqa: E402

ARRAY = np.ones(4096, dtype=np.float32)  # 16 KiB
CASES: dict[str, tuple[dict[str, Any], Any, int]] = {
    # name: (endpoint options, value, measurements)
    "plain-qos0": ({"qos": 0}, 1.5, 100_000),
    "plain-qos1": ({"qos": 1}, 1.5, 50_000),
    "batch100-binary-qos1": ({"qos": 1, "batch": 100}, 1.5, 1_000_000),
    "batch100-json-qos1": ({"qos": 1, "batch": 100, "payload": "json"}, 1.5, 500_000),
    "array16k-binary-qos1": ({"qos": 1}, ARRAY, 20_000),
    "array16k-json-qos1": ({"qos": 1, "payload": "json"}, ARRAY, 2_000),
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    b = Mosquitto(tmp_path_factory.mktemp("mqtt-bench"), persistence=False)
    b.start()
    yield b
    b.stop()


def run(port: int, options: dict[str, Any], value: Any, n: int) -> tuple[float, MQTTEndpoint]:
    p = Pipeline(overflow="block", block_timeout=60)
    ep = p.add_endpoint(MQTTEndpoint("mq", port=port, inbox_size=n, window=1000, status=False,
                                     **options), subscribe=["src"])
    p.start()
    deadline = time.monotonic() + 30
    while not ep.counters()["connected"]:
        assert time.monotonic() < deadline, "endpoint never connected"
        time.sleep(0.001)
    batch = [Measurement("src", "src.v", value) for _ in range(n)]
    t0 = time.perf_counter()
    p.outlet("src").push_many(batch)
    deadline = time.monotonic() + 300
    while ep.confirmed < n and ep.stats.dropped == 0:
        assert time.monotonic() < deadline, "benchmark workload did not finish"
        time.sleep(0.0005)
    elapsed = time.perf_counter() - t0
    assert p.stop(10)
    assert ep.stats.received == n and ep.stats.handled == n and ep.stats.dropped == 0
    return elapsed, ep


@pytest.mark.parametrize("case", list(CASES))
def test_mqtt_endpoint(benchmark: Any, broker: Mosquitto, case: str) -> None:
    options, value, n = CASES[case]
    n = scaled(n)
    results: list[tuple[float, MQTTEndpoint]] = []

    def once() -> float:
        results.append(run(broker.port, options, value, n))
        return results[-1][0]

    benchmark.pedantic(once, rounds=1 if benchutil.QUICK else 3, iterations=1)
    elapsed, ep = min(results, key=lambda r: r[0])
    nbytes = int(getattr(value, "nbytes", 8))
    benchmark.extra_info.update(
        measurements=n, measurements_per_s=round(n / elapsed),
        mqtt_messages_per_s=round(ep.messages / elapsed),
        mb_per_s=round(n * nbytes / elapsed / 1e6, 2),
        wire_mb_per_s=round(ep.bytes_sent / elapsed / 1e6, 2), drops=ep.stats.dropped)
