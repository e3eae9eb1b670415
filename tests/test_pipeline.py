"""The dataflow engine end to end with real threads: conservation, order, isolation, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_for
from radlogger.device import DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoint import Endpoint, EndpointState
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.processing import PublishingEndpoint


class SlowEndpoint(NullEndpoint):
    """Consumes slower than the device produces, to force overflow."""

    kind = "slow"

    def handle_batch(self, batch: list[Measurement]) -> None:
        time.sleep(0.0005 * len(batch) / 16)  # simulated work of the endpoint, not a wait
        super().handle_batch(batch)


class FlakyEndpoint(Endpoint):
    """Raises on every measurement whose value is divisible by 7."""

    kind = "flaky"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.seen: list[int] = []

    def handle(self, m: Measurement) -> None:
        if m.value % 7 == 0:
            raise ValueError(f"cannot take {m.value}")
        self.seen.append(m.value)


class Doubler(PublishingEndpoint):
    """A processing endpoint: publishes value*2 on <topic>_x2 when someone listens."""

    kind = "doubler"
    produces = ("{topic}_x2",)

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.computed = 0

    def handle(self, m: Measurement) -> None:
        out = m.topic + "_x2"
        if not self.has_subscribers(out):
            return
        self.computed += 1
        self.publish(m.derive(self.name, out, m.value * 2))


def run_to_end(p: Pipeline, *devices: SyntheticDevice, timeout: float = 30.0) -> None:
    p.start()
    wait_for(lambda: all(d.state is DeviceState.FINISHED for d in devices), timeout,
             message="devices finished")
    assert p.stop(timeout)


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "block"])
def test_conservation_under_overload(policy: str) -> None:
    p = Pipeline(queue_size=256, overflow=policy, block_timeout=0.0005)
    n = 30000
    # on_full = drop: a counted run would otherwise wait for room (lossless by default)
    dev = p.add_device(SyntheticDevice("fast", rate=0, count=n, pattern="counter", chunk=500,
                                       on_full="drop"))
    slow = p.add_endpoint(SlowEndpoint("slow", inbox_size=128, inbox_policy=(
        "drop_oldest" if policy == "drop_oldest" else "drop_newest"), batch_max=16),
        subscribe=["fast"])
    fast = p.add_endpoint(NullEndpoint("fast_sink"), subscribe=["fast.value"])
    run_to_end(p, dev)
    snap = p.snapshot()
    prod = snap["producers"]["fast"]
    assert prod["produced"] == n
    assert prod["produced"] == prod["published"] + prod["dropped"]
    for ep in (slow, fast):
        s = snap["endpoints"][ep.name]
        assert s["received"] == prod["published"]
        assert s["received"] == s["handled"] + s["dropped"], s
    if policy == "block":
        # backpressure end to end: the broker waits for room in the slow inbox, so the loss
        # (block_timeout is tiny) is at the queue, charged to the device, never at the inbox
        assert snap["endpoints"]["slow"]["dropped"] == 0
        assert prod["dropped_by_reason"].get("queue_full", 0) > 0, "the workload did not overload"
    else:
        assert snap["endpoints"]["slow"]["dropped"] > 0, "endpoint not overloaded"
    assert slow.count == snap["endpoints"]["slow"]["handled"]
    assert slow.out_of_order == 0 and fast.out_of_order == 0
    assert p.balanced()


def test_order_per_device_across_topics_and_subtree() -> None:
    p = Pipeline()
    a = p.add_device(SyntheticDevice("a", rate=0, count=5000, pattern="counter", quantity="x"))
    b = p.add_device(SyntheticDevice("b", rate=0, count=5000, pattern="counter", quantity="y"))
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["a", "*.y", "b.y"])
    run_to_end(p, a, b)
    assert sink.count == 10000  # b.y matched twice by patterns but delivered once
    assert sink.out_of_order == 0
    assert sink.last_seq == {"a": 4999, "b": 4999}


def test_failing_endpoint_is_isolated_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=700, pattern="counter", chunk=50))
    flaky = p.add_endpoint(FlakyEndpoint("flaky", on_error="continue"), subscribe=["d"])
    good = p.add_endpoint(NullEndpoint("good"), subscribe=["d"])
    run_to_end(p, dev)
    s = p.snapshot()["endpoints"]
    assert good.count == 700
    assert s["flaky"]["errors"] == 100
    assert s["flaky"]["dropped_by_reason"] == {"endpoint_failed": 100}
    assert s["flaky"]["handled"] == 600 == len(flaky.seen)
    assert "flaky" in caplog.text and "d.value seq=0" in caplog.text


def test_endpoint_fail_policy_marks_failed_and_counts_rest() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=1000, pattern="constant",
                                       amplitude=7, chunk=10))
    flaky = p.add_endpoint(FlakyEndpoint("flaky", on_error="fail", max_errors=3, batch_max=10),
                           subscribe=["d"])
    good = p.add_endpoint(NullEndpoint("good"), subscribe=["d"])
    run_to_end(p, dev)
    s = p.snapshot()["endpoints"]["flaky"]
    assert flaky.state is EndpointState.STOPPED or s["state"] in ("failed", "stopped")
    assert s["received"] == 1000 and s["handled"] == 0
    assert s["dropped_by_reason"]["endpoint_failed"] == 1000
    assert good.count == 1000


def test_unreachable_device_backs_off_while_sibling_runs() -> None:
    p = Pipeline()
    bad = p.add_device(SyntheticDevice("bad", fail_connects=-1, backoff_initial=0.01,
                                       backoff_max=0.05))
    ok = p.add_device(SyntheticDevice("ok", rate=0, count=2000, pattern="counter"))
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["*"])
    p.start()
    wait_for(lambda: bad.connects >= 4, message="retries")
    wait_for(lambda: ok.state is DeviceState.FINISHED)
    assert bad.state in (DeviceState.BACKOFF, DeviceState.CONNECTING)
    assert p.stop(5)
    assert sink.count == 2000
    assert p.snapshot()["producers"]["bad"]["errors"] >= 4


def test_device_gives_up_after_max_retries_then_recovers_when_reachable() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", fail_connects=2, max_retries=5, backoff_initial=0.001,
                                       rate=0, count=10))
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["d"])
    run_to_end(p, dev)
    assert dev.connects == 3 and sink.count == 10
    p2 = Pipeline()
    dead = p2.add_device(SyntheticDevice("dead", fail_connects=-1, max_retries=3,
                                         backoff_initial=0.001))
    p2.start()
    wait_for(lambda: dead.state is DeviceState.FAILED)
    assert dead.connects == 4
    p2.stop(2)


def test_pool_mode_delivers_everything_in_order() -> None:
    p = Pipeline(pool_workers=2)
    devs = [p.add_device(SyntheticDevice(f"d{i}", rate=0, count=3000, pattern="counter"))
            for i in range(3)]
    sinks = [p.add_endpoint(NullEndpoint(f"s{i}", mode="shared", batch_max=64), subscribe=["*"])
             for i in range(3)]
    run_to_end(p, *devs)
    for s in sinks:
        assert s.count == 9000 and s.out_of_order == 0
    assert p.balanced()


def test_processing_endpoint_publishes_back_and_is_lazy() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=100, pattern="counter"))
    lazy = p.add_endpoint(Doubler("lazy"), subscribe=["d.value"])
    run_to_end(p, dev)
    assert lazy.computed == 0  # nobody listens to d.value_x2

    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=100, pattern="counter"))
    doubler = p.add_endpoint(Doubler("doubler"), subscribe=["d.value"])
    out = p.add_endpoint(NullEndpoint("out"), subscribe=["d.value_x2"])
    got: list[int] = []
    orig = out.handle_batch
    out.handle_batch = lambda b: (got.extend(m.value for m in b), orig(b))  # type: ignore
    run_to_end(p, dev)  # stop() must drain the chain: the derived items arrive too
    assert doubler.computed == 100
    assert got == [2 * i for i in range(100)]
    snap = p.snapshot()
    assert snap["producers"]["doubler"]["produced"] == 100
    assert p.balanced()


def test_shutdown_deadline_counts_what_is_left() -> None:
    release = threading.Event()

    class Stuck(NullEndpoint):
        def handle_batch(self, batch: list[Measurement]) -> None:
            release.wait(10)
            super().handle_batch(batch)

    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=500, pattern="counter", chunk=500))
    stuck = p.add_endpoint(Stuck("stuck", batch_max=10), subscribe=["d"])
    p.start()
    wait_for(lambda: dev.state is DeviceState.FINISHED)
    wait_for(lambda: stuck.stats.received == 500)
    assert not p.stop(0.2)
    release.set()
    s = p.snapshot()["endpoints"]["stuck"]
    assert s["dropped_by_reason"].get("shutdown", 0) == 500 - s["handled"]
    assert s["received"] == s["handled"] + s["dropped"]


def test_invalid_topic_is_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    p = Pipeline()
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["*"])
    p.start()
    out = p.outlet("tester")
    out.push(Measurement("tester", "bad topic!", 1))
    out.push(Measurement("tester", "good.topic", 2))
    wait_for(lambda: sink.count == 1)
    assert p.stop(2)
    s = p.snapshot()["producers"]["tester"]
    assert s["dropped_by_reason"] == {"invalid_topic": 1} and s["published"] == 1
    assert "invalid topic" in caplog.text


def test_unrouted_measurements_are_counted() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=50))
    run_to_end(p, dev)
    s = p.snapshot()["producers"]["d"]
    assert s["published"] == 50 and s["unrouted"] == 50


def test_endpoints_added_and_removed_while_running() -> None:
    """What a configuration reload does: the removed endpoint stops receiving, nothing is lost."""
    p = Pipeline()
    first = p.add_endpoint(NullEndpoint("first"), subscribe=["d", "*.value"])
    p.start()
    out = p.outlet("d")
    for i in range(100):
        out.push(Measurement("d", "d.value", i))
    wait_for(lambda: first.count == 100)
    p.remove_endpoint("first", time.monotonic() + 5)
    second = p.add_endpoint(NullEndpoint("second"), subscribe=["*.value"])
    for i in range(100, 150):
        out.push(Measurement("d", "d.value", i))
    wait_for(lambda: second.count == 50)
    assert p.stop(5)
    assert first.count == 100 and first.stats.received == 100
    assert not p.broker.has_subscribers("d.other")


class LazyDoubler(Doubler):
    """Declares demand only when its own output is used (the optional wants() capability)."""

    def wants(self, topic: str) -> bool:
        return self.has_subscribers(topic + "_x2")


def test_laziness_is_transitive_through_a_chain() -> None:
    p = Pipeline()
    first = p.add_endpoint(LazyDoubler("first"), subscribe=["d.value"])
    second = p.add_endpoint(LazyDoubler("second"), subscribe=["d.value_x2"])
    assert not first.has_subscribers("d.value_x2")  # second listens, but nobody listens to it
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["d.value_x2_x2"])
    assert first.has_subscribers("d.value_x2") and second.has_subscribers("d.value_x2_x2")
    dev = p.add_device(SyntheticDevice("d", rate=0, count=10, pattern="counter"))
    run_to_end(p, dev)
    assert first.computed == second.computed == sink.count == 10
    p.remove_endpoint("sink", time.monotonic() + 1)
    assert not first.has_subscribers("d.value_x2")


def test_subscription_cycles_count_as_demand() -> None:
    p = Pipeline()
    a = p.add_endpoint(LazyDoubler("a"), subscribe=["x.v"])
    p.add_endpoint(LazyDoubler("b"), subscribe=["x"])  # b consumes its own output, forever
    assert a.has_subscribers("x.v_x2")  # terminates, conservatively demanded


class Summer(PublishingEndpoint):
    """Holds a running sum and publishes it only when flushed (like a partial integration)."""

    kind = "summer"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.total = 0

    def handle(self, m: Measurement) -> None:
        self.total += m.value

    def flush(self) -> None:
        if self.total:
            self.publish(Measurement(self.name, "sum.total", self.total))
            self.total = 0


def test_stop_flushes_processing_endpoints_down_their_chain() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=100, pattern="counter"))
    p.add_endpoint(Summer("summer"), subscribe=["d"])
    p.add_endpoint(Doubler("doubler"), subscribe=["sum.total"])
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["sum.total_x2"])
    got: list[int] = []
    orig = sink.handle_batch
    sink.handle_batch = lambda b: (got.extend(m.value for m in b), orig(b))  # type: ignore
    run_to_end(p, dev)
    assert got == [2 * sum(range(100))]
    assert p.balanced()


# ---------------------------------------------------------------- regressions from the review
def test_broker_missing_the_deadline_stays_the_only_consumer_and_counts() -> None:
    p = Pipeline(queue_size=400_000)
    sink = p.add_endpoint(NullEndpoint("sink", inbox_size=1_000_000, check_order=False), ["d"])
    out = p.outlet("d")
    for i in range(300_000):
        out.push(Measurement("d", "d.v", i))
    p.start()
    assert not p.stop(0.001)  # far too short to publish 300,000 measurements
    s = p.snapshot()["producers"]["d"]
    assert s["produced"] == 300_000 == s["published"] + s["dropped"]
    assert s["dropped"] == s["dropped_by_reason"].get("shutdown", 0) > 0
    assert sink.stats.received == s["published"] and p.balanced()


def test_topic_parts_pubsub_refuses_are_counted_not_fatal_for_the_batch() -> None:
    p = Pipeline()
    sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["*"])
    p.start()
    a, b = p.outlet("a"), p.outlet("b")
    a.push(Measurement("a", "a._raw", 1))
    b.push(Measurement("b", "b.ok", 2))
    wait_for(lambda: sink.count == 1)
    assert p.stop(2)
    snap = p.snapshot()["producers"]
    assert snap["a"]["dropped_by_reason"] == {"invalid_topic": 1}
    assert snap["b"]["published"] == 1 and p.balanced()


def test_a_worker_outliving_the_deadline_counts_each_measurement_once() -> None:
    release = threading.Event()
    closes: list[str] = []

    class SlowFailing(Endpoint):
        kind = "slowfailing"

        def handle(self, m: Measurement) -> None:
            release.wait(10)
            raise ValueError("bad")

        def close(self) -> None:
            closes.append(self.state.value)

    p = Pipeline()
    ep = p.add_endpoint(SlowFailing("e", batch_max=10, max_errors=1, on_error="restart"), ["d"])
    p.start()
    out = p.outlet("d")
    for i in range(20):
        out.push(Measurement("d", "d.v", i))
    wait_for(lambda: ep.stats.received == 20 and ep.inbox.in_flight)
    assert not p.stop(0.05)
    release.set()
    wait_for(lambda: ep.state is EndpointState.STOPPED, message="worker finished late")
    s = ep.stats.snapshot()
    assert s["received"] == 20 == s["handled"] + s["dropped"], s
    assert ep.stats.restarts == 0 and len(closes) == 1  # no reopen after stop, one close


def test_fail_policy_mid_batch_drops_the_rest_of_the_batch() -> None:
    calls: list[int] = []

    class Breaks(Endpoint):
        kind = "breaks"

        def handle(self, m: Measurement) -> None:
            calls.append(m.value)
            raise ValueError("broken")

    p = Pipeline()
    ep = p.add_endpoint(Breaks("e", on_error="fail", max_errors=2, batch_max=100), ["d"])
    out = p.outlet("d")
    for i in range(10):
        out.push(Measurement("d", "d.v", i))
    p.start()
    wait_for(lambda: ep.stats.received == 10 and ep.idle)
    assert p.stop(2)
    assert calls == [0, 1]  # nothing handled after the endpoint failed
    assert ep.stats.handled == 0
    assert ep.stats.snapshot()["dropped_by_reason"] == {"endpoint_failed": 10}


def test_processing_endpoint_never_reprocesses_its_own_output() -> None:
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("d", rate=0, count=5, pattern="counter"))
    p.add_endpoint(NullEndpoint("sink"), subscribe=["d"])

    from radlogger.processing import ProcessingEndpoint

    class Echo(ProcessingEndpoint):
        kind = "echo"
        output_default = "{quantity}_e"

        def handle_batch(self, batch: list[Measurement]) -> None:
            for m in self.demanded(batch):
                self.publish(m.derive(self.name, self.out_topic(m.topic), m.value))

    echo = p.add_endpoint(Echo("echo"), subscribe=["d"])  # its output d.value_e is under d
    run_to_end(p, dev)
    assert p.snapshot()["producers"]["echo"]["produced"] == 5
    assert echo.own_outputs_ignored == 5


def test_a_restarted_device_gets_its_retries_again() -> None:
    dev = SyntheticDevice("d", fail_connects=-1, max_retries=2, backoff_initial=0.001)
    p = Pipeline()
    p.add_device(dev)
    p.start()
    wait_for(lambda: dev.state is DeviceState.FAILED)
    first = dev.connects
    dev.start()
    wait_for(lambda: dev.state is DeviceState.FAILED and dev.connects == 2 * first)
    p.stop(2)
