"""Shared workload runner: a pipeline at a set rate, measured from push to endpoint.

Reports what the issue asks of every workload: delivered rate, drops, latency percentiles,
CPU per measurement and peak RSS, and asserts the workload was actually processed (every
measurement delivered or counted as dropped), so a broken pipeline cannot post a fast number.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from radlogger.pipeline import Pipeline


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("workload did not finish in time")
        time.sleep(0.002)


def measure(pipeline: Pipeline, done: Callable[[], bool], sink_names: list[str],
            timeout: float = 300.0, poll: float = 0.01) -> dict[str, Any]:
    """Start ``pipeline``, wait for ``done``, stop it, check the accounting, return figures.

    ``poll``: how often this (main) thread checks ``done``; its CPU counts in ``cpu_s``, so a
    low-rate workload polls less often (each check costs a wake-up, ~15-20 us on a VM)."""
    rss0 = rss_mb()
    peak = rss0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    pipeline.start()
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pipeline.stop(5)
            raise AssertionError("workload did not finish in time")
        peak = max(peak, rss_mb())
        time.sleep(poll)
    elapsed = time.perf_counter() - t0
    assert pipeline.stop(30), "pipeline did not drain before the deadline"
    cpu = time.process_time() - cpu0
    snap = pipeline.snapshot()
    produced = sum(p["produced"] for p in snap["producers"].values())
    dropped_q = sum(p["dropped"] for p in snap["producers"].values())
    for p in snap["producers"].values():
        assert p["produced"] == p["published"] + p["dropped"], p
    out: dict[str, Any] = {"seconds": elapsed, "produced": produced, "queue_drops": dropped_q,
                           "cpu_s": cpu, "rss_start_mb": rss0, "rss_peak_mb": peak,
                           "queue_high_water": snap["queue"]["high_water"]}
    for name in sink_names:
        e = snap["endpoints"][name]
        assert e["received"] == e["handled"] + e["dropped"], e
        out[f"{name}_handled"] = e["handled"]
        out[f"{name}_drops"] = e["dropped"]
        ep = pipeline.endpoints[name]
        lat = getattr(ep, "latencies_ns", None)
        if lat:
            a = np.asarray(lat, dtype=np.float64) / 1e3
            out.update(p50_us=float(np.percentile(a, 50)), p99_us=float(np.percentile(a, 99)),
                       max_us=float(a.max()))
    handled = out[f"{sink_names[0]}_handled"]
    out["delivered_per_s"] = handled / elapsed
    out["cpu_us_per_measurement"] = cpu / max(1, produced) * 1e6
    return out
