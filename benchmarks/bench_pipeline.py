"""End to end: synthetic device -> queue -> broker -> counting endpoint.

* throughput at saturation (device pushing as fast as it can), dedicated thread vs pool mode;
* latency (push to endpoint) p50/p99/max at a steady 10,000 measurements/s;
* broker dispatch: one PyPubSub message per measurement vs one per batch.

Run: ``python -m pytest benchmarks/bench_pipeline.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.device import DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


def _wait(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("benchmark workload did not finish")
        time.sleep(0.001)


def run_saturation(n: int, mode: str) -> tuple[int, float]:
    """The device pushes as fast as it can; the queue blocks it rather than dropping, and the
    inbox is large enough that the endpoint's rate, not a drop, limits delivery."""
    p = Pipeline(queue_size=65536, overflow="block", block_timeout=60)
    dev = p.add_device(SyntheticDevice("syn", rate=0, count=n, pattern="counter", chunk=1024))
    sink = p.add_endpoint(NullEndpoint("sink", mode=mode, check_order=False, batch_max=8192,
                                       inbox_size=n + 1), subscribe=["syn"])
    t0 = time.perf_counter()
    p.start()
    _wait(lambda: sink.count >= n or dev.state is DeviceState.FAILED)
    elapsed = time.perf_counter() - t0
    p.stop(10)
    assert sink.count == n, f"delivered {sink.count} of {n}"
    assert p.balanced()
    return sink.count, elapsed


@pytest.mark.parametrize("mode", ["thread", "shared"])
def test_end_to_end_saturation(benchmark, mode: str) -> None:  # type: ignore[no-untyped-def]
    n = scaled(1_000_000)
    result = benchmark.pedantic(run_saturation, args=(n, mode), rounds=1 if benchutil.QUICK else 3,
                                iterations=1)
    count, elapsed = result
    benchmark.extra_info.update(measurements=count, per_s=count / elapsed, mode=mode)


def run_latency(rate: float, seconds: float) -> dict[str, float]:
    p = Pipeline()
    n = int(rate * seconds)
    p.add_device(SyntheticDevice("syn", rate=rate, count=n, pattern="counter", chunk=64))
    sink = p.add_endpoint(NullEndpoint("sink", latency=True), subscribe=["syn"])
    p.start()
    _wait(lambda: sink.count >= n)
    p.stop(10)
    assert sink.count == n and p.balanced()
    lat = np.asarray(sink.latencies_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
            "max_us": float(lat.max()), "n": n}


def test_latency_at_10k_per_s(benchmark) -> None:  # type: ignore[no-untyped-def]
    seconds = 0.3 if benchutil.QUICK else 3.0
    stats = benchmark.pedantic(run_latency, args=(10_000.0, seconds), rounds=1, iterations=1)
    benchmark.extra_info.update(stats)


def run_policy(policy: str, n: int, rate: float) -> dict[str, float]:
    """One workload under two queue policies: a live source (``on_full = drop``, so the policy
    applies) into one counting endpoint.  ``block`` adds backpressure end to end (the broker
    waits for room in the inbox); ``drop_newest`` never waits.  At ``rate = 0`` it measures
    saturation throughput, at a steady rate the push->endpoint latency."""
    p = Pipeline(queue_size=65536, overflow=policy, block_timeout=1.0)
    dev = p.add_device(SyntheticDevice("syn", rate=rate, count=n, pattern="counter", chunk=64,
                                       on_full="drop"))
    sink = p.add_endpoint(NullEndpoint("sink", check_order=False, latency=True, batch_max=8192),
                          subscribe=["syn"])
    t0 = time.perf_counter()
    p.start()
    _wait(lambda: dev.state is DeviceState.FINISHED and p.quiescent())
    elapsed = time.perf_counter() - t0
    p.stop(10)
    snap = p.snapshot()
    assert snap["producers"]["syn"]["produced"] == n and p.balanced()
    lat = np.asarray(sink.latencies_ns, dtype=np.float64) / 1e3
    return {"delivered_per_s": sink.count / elapsed, "delivered": sink.count,
            "queue_drops": snap["producers"]["syn"]["dropped"],
            "sink_drops": snap["endpoints"]["sink"]["dropped"],
            "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99))}


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_policy_saturation(benchmark, policy: str) -> None:  # type: ignore[no-untyped-def]
    """Block mode's cost at saturation: throughput within 10% of drop_newest is the target."""
    n = scaled(1_000_000)
    res = benchmark.pedantic(run_policy, args=(policy, n, 0.0), rounds=1 if benchutil.QUICK
                             else 3, iterations=1)
    if policy == "block":
        assert res["sink_drops"] == 0  # backpressure: the inbox never drops in block mode
    benchmark.extra_info.update(res, policy=policy)


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_policy_latency_at_10k_per_s(benchmark, policy: str) -> None:  # type: ignore[no-untyped-def]
    seconds = 0.3 if benchutil.QUICK else 3.0
    res = benchmark.pedantic(run_policy, args=(policy, int(10_000 * seconds), 10_000.0),
                             rounds=1, iterations=1)
    assert res["delivered"] == int(10_000 * seconds)
    benchmark.extra_info.update(res, policy=policy)


def _batch(n: int, topics: int) -> list[Measurement]:
    return [Measurement(f"d{i % topics}", f"d{i % topics}.v", i) for i in range(n)]


@pytest.mark.parametrize("dispatch", ["per_measurement", "batched"])
def test_broker_dispatch(benchmark, dispatch: str) -> None:  # type: ignore[no-untyped-def]
    """PyPubSub costs microseconds per sendMessage: publishing runs of a batch amortises it."""
    n = scaled(200_000)
    batch = sorted(_batch(n, 4), key=lambda m: m.topic)
    p = Pipeline()
    sink = p.add_endpoint(NullEndpoint("sink", check_order=False, inbox_size=10 * n), ["*"])
    send = p.broker.publisher.sendMessage
    p.broker.publish(_batch(4, 4))  # create the four topics once (glob subscriptions resolve)

    def per_measurement() -> int:
        for m in batch:
            send(m.topic, batch=[m])
        return n

    def batched() -> int:
        p.broker.publish(batch)
        return n

    fn = per_measurement if dispatch == "per_measurement" else batched
    before = sink.stats.received
    benchmark.pedantic(fn, rounds=1 if benchutil.QUICK else 5, iterations=1)
    assert sink.stats.received - before >= n
    benchmark.extra_info["measurements"] = n
