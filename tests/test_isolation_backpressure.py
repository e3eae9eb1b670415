"""An isolated chain slower than its input: the runner waits for room in the child's datagram
queue (``net.unix.max_dgram_qlen``) instead of dropping ``would_block``; the endpoint's inbox
fills and its policy applies: backpressure (nothing lost) or ``inbox_full`` drops.

The slow stage is loaded by the child through its dotted path (``test_isolation_backpressure
:Slow``).  Its delay simulates a costly computation inside the child; the tests themselves
only wait on conditions.
"""

from __future__ import annotations

import time

from conftest import Collector, wait_for
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoints.lag.isolated import IsolatedEndpoint
from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.pipeline import Pipeline
from radlogger.processing import PublishingEndpoint


class Slow(PublishingEndpoint):
    """Publishes each measurement on ``<topic>_out`` after ``delay`` seconds of 'work'."""

    kind = "test_slow"
    produces = ("{topic}_out",)
    options = (Option("delay", float, 0.0002, "seconds per measurement", min=0),)

    def handle_batch(self, batch: list[Measurement]) -> None:
        for m in batch:
            time.sleep(self.settings.delay)  # the child's computation
            self.publish(m.derive(self.name, f"{m.topic}_out", m.value))


def _slow_chain(inbox_size: int, delay: float = 0.0002) -> IsolatedEndpoint:
    return IsolatedEndpoint("iso", stages=["test_isolation_backpressure:Slow"],
                            stage_options=[f"Slow.delay={delay}"], heartbeat=0.05,
                            hang_timeout=10, inbox_size=inbox_size)


def test_block_mode_with_a_finite_source_waits_and_delivers_everything() -> None:
    p = Pipeline(queue_size=256, overflow="block")
    try:
        iso = p.add_endpoint(_slow_chain(64), subscribe=["syn.value"])
        sink = p.add_endpoint(Collector("sink"), subscribe=["syn.value_out"])
        dev = p.add_device(SyntheticDevice("syn", rate=0, count=3000, chunk=200))
        assert dev.waits_for_room and isinstance(iso, IsolatedEndpoint)
        assert isinstance(sink, Collector)
        p.start()
        wait_for(lambda: len(sink.items) == 3000, 60, message="everything delivered")
        assert p.stop(10) and p.balanced()
    finally:
        if p.running:
            p.stop(5)
    stats = iso.stats
    assert stats.received == stats.handled == 3000 and stats.dropped == 0
    counters = iso.counters()
    assert counters["would_block"] == 0 and counters["undelivered"] == 0
    assert counters["full_waits"] > 0  # the child's queue was full: the runner waited
    assert stats.inbox_high_water == 64  # so the inbox filled and the broker waited
    assert counters["lost"] == 0 and counters["sent"] == 3000
    assert [m.value for m in sink.items] == [m.value for m in sorted(
        sink.items, key=lambda m: m.seq)]


def test_drop_newest_drops_only_when_the_inbox_is_full(pipeline: Pipeline) -> None:
    # 2 ms per item: this loop outpaces the child on a loaded machine too, and fills a
    # datagram queue of any length (10 here, 512 on a stock kernel) in well under a second
    iso = pipeline.add_endpoint(_slow_chain(100, delay=0.002), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["src.v_out"])
    assert isinstance(iso, IsolatedEndpoint) and isinstance(sink, Collector)
    pipeline.start()
    assert iso.process is not None
    feeder = iso.process.feeder
    out = pipeline.outlet("src")  # a live source: it never waits
    n = 0
    # Faster than the chain, but the inbox stays nearly empty: the child's queue fills (the
    # runner waits for room); before, this is where would_block drops began.
    while feeder.full_waits == 0:
        wait_for(lambda: len(pipeline.queue) == 0 and len(iso.inbox) < 20,
                 message="inbox nearly empty")
        for i in range(n, n + 10):
            assert out.push(Measurement("src", "src.v", i))
        n += 10
        assert n < 20_000, "the child's queue never filled"
    assert iso.stats.dropped == 0
    for i in range(n, n + 2000):  # a burst: now the inbox fills and drops what does not fit
        assert out.push(Measurement("src", "src.v", i))
    n += 2000
    wait_for(lambda: iso.stats.received == n and iso.idle
             and len(sink.items) == iso.stats.handled, 60, message="all accounted")
    stats = iso.stats
    reasons = stats.reasons()
    assert set(reasons) == {"inbox_full"}, reasons  # never would_block
    assert stats.inbox_high_water == 100  # dropped only once the inbox was full
    assert stats.received == stats.handled + stats.dropped
    counters = iso.counters()
    assert counters["would_block"] == 0 and counters["full_waits"] > 0
    assert counters["sent"] == stats.handled
    values = [m.value for m in sink.items]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert pipeline.stop(10) and pipeline.balanced()
