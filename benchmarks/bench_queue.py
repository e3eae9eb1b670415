"""The queue alone, one producer / one consumer thread: items/s of each contender.

Run: ``python -m pytest benchmarks/bench_queue.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import pytest

from benchmarks.benchutil import scaled
from benchmarks.queues import CONTENDERS


@pytest.mark.parametrize("name", list(CONTENDERS))
def test_queue_1p1c(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    n = scaled(1_000_000 if "Queue(" not in name and "Simple" not in name else 300_000)
    if "put_many" in name:
        n -= n % 64
    run = CONTENDERS[name]
    got = benchmark.pedantic(run, args=(n,), rounds=5 if n > 10_000 else 1, iterations=1,
                             warmup_rounds=0)
    assert got == n, f"{name} moved {got} of {n} items"
    benchmark.extra_info["items"] = n
    benchmark.extra_info["items_per_s"] = n / benchmark.stats.stats.min if benchmark.stats else None
