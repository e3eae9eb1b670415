"""New-topic cost: a peer (or a big instrument) publishing many distinct topics under one device.

PyPubSub checks each new child topic against a list of its siblings; radlogger.broker skips
that check (it cannot fail), so the cost of a new topic stays flat.  Measured: new topics per
second while the first 1,000 are created, and after 20,000 siblings exist.

Run: ``python -m pytest benchmarks/bench_topics.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import pytest

from benchmarks.benchutil import scaled
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


@pytest.mark.parametrize("existing", [0, 20_000])
def test_new_topic_cost(benchmark, existing: int) -> None:  # type: ignore[no-untyped-def]
    existing = scaled(existing)
    p = Pipeline(max_topics=10**7)
    p.add_endpoint(NullEndpoint("all", check_order=False, inbox_size=10**7), subscribe=["*"])
    p.add_endpoint(NullEndpoint("dev", check_order=False, inbox_size=10**7), subscribe=["dev"])
    for k in range(0, existing, 1000):
        p.broker.publish([Measurement("dev", f"dev.old{k + i}", i) for i in range(1000)])
    rounds = iter(range(10**6))

    def new_topics() -> int:
        r = next(rounds)
        p.broker.publish([Measurement("dev", f"dev.new{r}_{i}", i) for i in range(1000)])
        return 1000

    benchmark.pedantic(new_topics, rounds=5, iterations=1)
    assert len(p.broker.known_topics()) >= existing + 1000
    benchmark.extra_info.update(existing=existing, items=1000)
