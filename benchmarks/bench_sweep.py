"""A synthetic scalar stream swept from 1,000/s to saturation, plus overload memory.

Run: ``python -m pytest benchmarks/bench_sweep.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import time

import pytest

from benchmarks import benchutil
from benchmarks.workload import measure
from radlogger.device import DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

RATES = [1_000, 10_000, 100_000, 300_000, 0]  # 0 = as fast as the device can push


def _sweep_point(rate: int, seconds: float) -> dict:
    n = int(rate * seconds) if rate else int(1_000_000 * seconds)
    p = Pipeline(queue_size=65536, overflow="drop_newest")
    dev = p.add_device(SyntheticDevice("syn", rate=rate, count=n, pattern="counter",
                                       chunk=256 if rate else 1024))
    sink = p.add_endpoint(NullEndpoint("sink", latency=True, check_order=False),
                          subscribe=["syn"])
    res = measure(p, lambda: dev.state is DeviceState.FINISHED and p.quiescent(), ["sink"])
    assert res["produced"] == n
    assert res["sink_handled"] + res["sink_drops"] + res["queue_drops"] == n
    assert sink.count == res["sink_handled"]
    res["offered_per_s"] = rate or res["produced"] / res["seconds"]
    return res


@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{r}/s" if r else "saturation")
def test_scalar_sweep(benchmark, rate: int) -> None:  # type: ignore[no-untyped-def]
    seconds = 0.05 if benchutil.QUICK else (2.0 if rate else 1.5)
    if benchutil.QUICK and rate == 1_000:
        seconds = 0.2
    res = benchmark.pedantic(_sweep_point, args=(rate, seconds), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


class _Slow(NullEndpoint):
    def handle_batch(self, batch: list[Measurement]) -> None:
        time.sleep(20e-6 * len(batch))  # 20 us of simulated work each: 50,000/s at most
        super().handle_batch(batch)


def _overload(n: int) -> dict:
    qsize = 256 if benchutil.QUICK else 16384
    p = Pipeline(queue_size=qsize, overflow="drop_newest")
    dev = p.add_device(SyntheticDevice("syn", rate=0, count=n, pattern="constant",
                                       array_size=256, chunk=512, on_full="drop"))
    p.add_endpoint(_Slow("sink", inbox_size=64 if benchutil.QUICK else 4096, check_order=False),
                   subscribe=["syn"])
    res = measure(p, lambda: dev.state is DeviceState.FINISHED and p.quiescent(), ["sink"])
    assert res["sink_drops"] + res["queue_drops"] > 0, "not overloaded"
    assert res["queue_high_water"] <= qsize + 1
    res["rss_growth_mb"] = res["rss_peak_mb"] - res["rss_start_mb"]
    return res


def test_overload_memory_stays_bounded(benchmark) -> None:  # type: ignore[no-untyped-def]
    """1 KiB arrays pushed as fast as possible into a slow endpoint: drops, not memory growth."""
    n = 2_000 if benchutil.QUICK else 400_000
    res = benchmark.pedantic(_overload, args=(n,), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


def _thread_cpu_s() -> dict[str, tuple[float, int]]:
    """CPU seconds and times scheduled in so far of every live Python thread, by thread name,
    and the whole process's CPU (``_process``).  From ``/proc/.../schedstat`` (run time in ns,
    the clock ``time.process_time`` sums, and the count of times the thread got a CPU: a wake-up
    each at these rates) rather than ``stat``'s utime + stime, which are sampled at 100 Hz and
    undercount short wake-ups."""
    import threading
    out: dict[str, tuple[float, int]] = {"_process": (time.process_time(), 0)}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/schedstat") as f:
                run_ns, _, slices = f.read().split()[:3]
        except OSError:
            continue
        out[t.name] = (int(run_ns) / 1e9, int(slices))
    return out


def _low_rate(linger: float, rate: int, seconds: float, inline_budget: float | None = None) -> dict:
    n = int(rate * seconds)
    p = Pipeline(queue_size=65536, overflow="drop_newest")
    p.broker.linger = linger
    dev = p.add_device(SyntheticDevice("syn", rate=rate, count=n, pattern="counter", chunk=256))
    extra = {} if inline_budget is None else {"inline_budget": inline_budget}
    sink = p.add_endpoint(NullEndpoint("sink", latency=True, check_order=False, **extra),
                          subscribe=["syn"])
    start: dict[str, tuple[float, int]] = {}
    figures: dict[str, float] = {}

    def done() -> bool:
        if dev.state is DeviceState.RUNNING and sink.count >= n // 10 and not start:
            start.update(_thread_cpu_s())
            start["_count"] = (0.0, sink.count)
        if sink.count >= n * 9 // 10 and not figures and start:
            end = _thread_cpu_s()
            per = max(1, sink.count - start["_count"][1])
            wakes = 0
            for name in ("broker", "endpoint:sink", "device:syn", "MainThread", "_process"):
                if name in end and name in start:
                    key = name.split(":")[0].lower().strip("_")
                    figures["us_" + key] = (end[name][0] - start[name][0]) / per * 1e6
                    if name != "_process":
                        figures["wakeups_" + key] = (end[name][1] - start[name][1]) / per
                        wakes += end[name][1] - start[name][1]
            figures["wakeups_per_measurement"] = wakes / per
        return dev.state is DeviceState.FINISHED and p.quiescent()

    # the main thread (this harness) checks ``done`` every 0.1 s: at 100 Hz it alone cost
    # 11-15 us per measurement, which is the harness, not the pipeline
    res = measure(p, done, ["sink"], poll=0.1)
    assert res["produced"] == n and res["sink_handled"] == n, res
    assert res["sink_drops"] == 0 and res["queue_drops"] == 0
    res.update(figures)
    if "us_broker" in res and "us_endpoint" in res:
        res["broker_endpoint_us_per_measurement"] = res["us_broker"] + res["us_endpoint"]
    runner = sink._runner
    res.update(linger_ms=linger * 1e3, offered_per_s=rate, batches=p.broker.batches,
               inline_batches=getattr(runner, "inline_batches", 0))
    return res


@pytest.mark.parametrize("linger", [0.0, 0.0005, 0.001, 0.0015, 0.002],
                         ids=lambda v: f"linger={v * 1e3:g}ms")
def test_low_rate_linger(benchmark, linger: float) -> None:  # type: ignore[no-untyped-def]
    """1,000 scalars/s into one endpoint: CPU per measurement (whole process, and the broker's
    and endpoint's own threads from /proc) and latency, for several broker lingers."""
    seconds = 0.2 if benchutil.QUICK else 5.0
    res = benchmark.pedantic(_low_rate, args=(linger, 1_000, seconds), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


@pytest.mark.parametrize("inline_budget", [0.0, None],
                         ids=lambda v: "inline_budget=0" if v == 0.0 else "inline_budget=default")
def test_low_rate_inline(benchmark, inline_budget: float | None) -> None:  # type: ignore[no-untyped-def]
    """1,000 scalars/s at the default linger, the endpoint's small batches on its own thread
    (``inline_budget = 0``) or on the broker's (the default): CPU, wake-ups and latency."""
    from radlogger.broker import DEFAULT_LINGER
    seconds = 0.2 if benchutil.QUICK else 5.0
    res = benchmark.pedantic(_low_rate, args=(DEFAULT_LINGER, 1_000, seconds, inline_budget),
                             rounds=1, iterations=1)
    if inline_budget == 0.0:
        assert res["inline_batches"] == 0
    benchmark.extra_info.update(res)
