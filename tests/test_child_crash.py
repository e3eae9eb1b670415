"""A worker process killed in the middle of a batch: what it held is dropped as
``child_crashed``, never counted as handled, and every measurement counted handled came out.

The stage below is loaded by the worker processes through its dotted path
(``test_child_crash:Gate``): the child imports this module, nothing is pickled.  It blocks for
good on one value (after writing a marker file naming its process), so the kill lands while
the child holds a known set of measurements.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from conftest import Collector, wait_for
from radlogger.endpoints.lag.isolated import IsolatedEndpoint
from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.pipeline import Pipeline
from radlogger.processing import PublishingEndpoint
from radlogger.workers.pool import EndpointPool


class Gate(PublishingEndpoint):
    """Publishes each value on ``<topic>_out``; blocks for good on ``block_on``."""

    kind = "test_gate"
    produces = ("{topic}_out",)
    options = (
        Option("block_on", int, -1, "value on which the stage blocks until it is killed"),
        Option("marker_dir", str, "", "where to write blocked-<pid> when it blocks"),
    )

    def handle_batch(self, batch: list[Measurement]) -> None:
        for m in batch:
            if int(m.value) == self.settings.block_on:
                Path(self.settings.marker_dir, f"blocked-{os.getpid()}").touch()
                threading.Event().wait()  # until the test kills this process
            self.publish(m.derive(self.name, f"{m.topic}_out", m.value))


def _push(p: Pipeline, values: range) -> None:
    out = p.outlet("src")
    for i in values:
        assert out.push(Measurement("src", "src.v", i))


def _blocked_pid(where: Path) -> int:
    found = wait_for(lambda: list(where.glob("blocked-*")), 20, message="the stage blocked")
    assert isinstance(found, list) and len(found) == 1
    return int(found[0].name.split("-")[1])


def test_pool_worker_killed_mid_batch_drops_what_it_held(pipeline: Pipeline,
                                                         tmp_path: Path) -> None:
    pool = pipeline.add_endpoint(EndpointPool(
        "gate", endpoint="test_child_crash:Gate", workers=2, worker_mode="process",
        ordered=False, chunk=4, depth=2, hang_timeout=60, block_on=42,
        marker_dir=str(tmp_path)), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["src.v_out"])
    pipeline.start()
    assert isinstance(pool, EndpointPool) and isinstance(sink, Collector)
    _push(pipeline, range(100))
    pid = _blocked_pid(tmp_path)
    (victim,) = [w for w in pool.workers if w.pid == pid]

    def settled() -> bool:  # everything else came out or waits in the inbox
        held = sum(victim.outstanding.values())
        return len(sink.items) + held + len(pool.inbox) == 100

    wait_for(settled, 20, message="all but the blocked worker's items done")
    held = sum(victim.outstanding.values())
    assert held >= 4  # at least the work item with the poison value
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(sink.items) + pool.stats.dropped == 100 and pool.idle, 20,
             message="the rest accounted")
    wait_for(lambda: all(w.alive for w in pool.workers), 20, message="restarted")
    stats = pool.stats
    assert stats.received == 100 == stats.handled + stats.dropped
    assert stats.reasons() == {"child_crashed": held}
    assert stats.handled == len(sink.items)  # every measurement counted handled came out
    values = sorted(m.value for m in sink.items)
    assert len(set(values)) == len(values) and 42 not in values
    # the process's own ``lost`` counts what had reached its socket when it died; an item the
    # pool still held in the feeder is not in it (the pool's stats above count both, exactly)
    wait_for(lambda: pool.counters()["lost"] >= 1, 10, message="the worker's lost count")
    counters = pool.counters()
    assert 1 <= counters["lost"] <= held and counters["crashes"] == 1
    assert counters["hangs"] == 0 and counters["would_block"] == 0
    assert counters["restarts"] >= 1
    assert pipeline.stop(10) and pipeline.balanced()
    assert pool.counters()["lost"] == counters["lost"]  # closed workers' counts are kept


def test_isolated_child_killed_mid_batch_drops_what_it_held(pipeline: Pipeline,
                                                            tmp_path: Path) -> None:
    iso = pipeline.add_endpoint(IsolatedEndpoint(
        "iso", stages=["test_child_crash:Gate"],
        stage_options=["Gate.block_on=42", f"Gate.marker_dir={tmp_path}"],
        heartbeat=0.05, hang_timeout=60), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Collector("sink"), subscribe=["src.v_out"])
    pipeline.start()
    assert isinstance(iso, IsolatedEndpoint) and isinstance(sink, Collector)
    proc = iso.process
    assert proc is not None
    _push(pipeline, range(42))
    wait_for(lambda: len(sink.items) == 42 and proc.confirmed == 42, message="first 42")
    _push(pipeline, range(42, 50))  # fits the child's queue: all handed over
    pid = _blocked_pid(tmp_path)
    wait_for(lambda: proc.sent == 50, message="all handed over")
    assert proc.in_flight == 8  # the child holds 42 (blocked) and the 7 after it
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: proc.crashes == 1 and proc.state == "running" and proc.pid != pid, 30,
             message="crash detected and restarted")
    _push(pipeline, range(50, 100))
    wait_for(lambda: len(sink.items) == 92, 20, message="the rest delivered")
    assert pipeline.stop(10) and pipeline.balanced()
    stats = iso.stats
    assert stats.received == 100 == stats.handled + stats.dropped
    assert stats.reasons() == {"child_crashed": 8}  # never counted as handled
    assert stats.handled == len(sink.items) == 92  # all that counted handled came out
    assert sorted(m.value for m in sink.items) == [*range(42), *range(50, 100)]
    counters = iso.counters()
    assert counters["lost"] == 8 and counters["crashes"] == 1 and counters["restarts"] == 1
    assert counters["hangs"] == 0 and counters["would_block"] == 0
