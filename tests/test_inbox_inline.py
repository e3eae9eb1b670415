"""Inline batches (radlogger.runners): a dedicated runner with a record of fast batches lets the
broker run small batches on its own thread; over the budget it goes back to its thread; a stop
or a batch larger than ``batch_max`` never loses or reorders anything."""
from __future__ import annotations

import threading
from collections.abc import Callable

from conftest import wait_for
from radlogger.device import DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoints.null import NullEndpoint
from radlogger.inbox import Inbox
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.runners import INLINE_TRIAL, ThreadRunner
from radlogger.stats import EndpointStats


def _batch(n: int, start: int = 0) -> list[Measurement]:
    return [Measurement("d", "d.v", i, seq=i) for i in range(start, start + n)]


class _Harness:
    """An inbox, a runner with an inline budget, and a stand-in for the broker's run_later."""

    def __init__(self, budget: float = 10.0, batch_max: int = 100) -> None:
        self.inbox = Inbox(10_000, EndpointStats("e"))
        self.got: list[int] = []
        self.threads: list[str] = []
        self.later: list[Callable[[], None]] = []
        self.accept = True
        self.inbox.run_later = self._run_later

        def process(batch: list[Measurement]) -> None:
            self.got.extend(m.value for m in batch)
            self.threads.append(threading.current_thread().name)
            self.inbox.done()

        self.runner = ThreadRunner("e", self.inbox, batch_max, process, lambda: None, budget)
        self.runner.start()

    def _run_later(self, run: Callable[[], None]) -> bool:
        if self.accept:
            self.later.append(run)
        return self.accept

    def qualify(self) -> None:
        """Batches on the runner's own thread until it may run inline."""
        k = 0
        while self.inbox.run_inline is None:
            assert k < 10 * INLINE_TRIAL, "never qualified"
            self.inbox.put(_batch(1, len(self.got)))
            k += 1
            wait_for(lambda k=k: len(self.got) == k and self.inbox.idle and self.inbox.waiting)

    def run_later(self) -> None:
        for run in self.later:
            run()
        self.later.clear()

    def stop(self) -> None:
        self.inbox.request_stop()
        assert self.runner.join(5)


def test_a_fast_endpoint_runs_small_batches_on_the_calling_thread() -> None:
    h = _Harness()
    h.qualify()
    assert set(h.threads) == {"endpoint:e"}
    n = len(h.got)
    h.inbox.put(_batch(3, n))
    assert h.later and h.inbox.waiting  # not rung: the broker runs it
    h.run_later()
    assert h.got == list(range(n + 3))
    assert h.threads[-1] == threading.current_thread().name
    assert h.runner.inline_batches == 1 and h.inbox.idle
    h.stop()


def test_no_inline_when_the_broker_declines() -> None:
    h = _Harness()
    h.qualify()
    h.accept = False
    n = len(h.got)
    h.inbox.put(_batch(2, n))
    wait_for(lambda: len(h.got) == n + 2)
    assert h.threads[-1] == "endpoint:e" and h.runner.inline_batches == 0
    h.stop()


def test_over_budget_goes_back_to_the_own_thread_and_needs_a_longer_record() -> None:
    h = _Harness()
    h.qualify()
    h.runner.inline_budget = 1e-12  # every batch is over it from now on
    n = len(h.got)
    h.inbox.put(_batch(1, n))
    h.run_later()
    assert h.runner.inline_over_budget == 1 and h.inbox.run_inline is None
    h.inbox.put(_batch(1, n + 1))  # rings the own thread again
    assert not h.later
    wait_for(lambda: len(h.got) == n + 2)
    assert h.threads[-1] == "endpoint:e"
    assert h.got == list(range(n + 2))
    h.stop()


def test_more_than_batch_max_inline_leaves_the_rest_to_the_own_thread() -> None:
    h = _Harness(batch_max=4)
    h.qualify()
    n = len(h.got)
    h.inbox.put(_batch(10, n))
    h.run_later()
    wait_for(lambda: len(h.got) == n + 10 and h.inbox.idle)
    assert h.got == list(range(n + 10))
    h.stop()


def test_a_stop_before_the_inline_batch_runs_leaves_it_to_the_own_thread() -> None:
    h = _Harness()
    h.qualify()
    n = len(h.got)
    h.inbox.put(_batch(5, n))
    h.inbox.request_stop()  # rings the bell: the own thread takes the batch and ends
    assert h.runner.join(5)
    h.run_later()  # finds nothing to do
    assert h.got == list(range(n + 5)) and h.runner.inline_batches == 0


def test_low_rate_pipeline_runs_inline_and_accounts_exactly() -> None:
    """1,000/s through a pipeline: every measurement handled once, in order, and the sink's
    batches (after its record) run on the broker's thread."""
    n = 300
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("syn", rate=1000, count=n, pattern="counter"))
    sink = p.add_endpoint(NullEndpoint("sink", inline_budget=0.1), subscribe=["syn"])
    p.start()
    wait_for(lambda: dev.state is DeviceState.FINISHED and p.quiescent(), 30)
    assert p.stop(10)
    snap = p.snapshot()
    assert snap["producers"]["syn"]["produced"] == n
    assert sink.count == n and sink.out_of_order == 0
    assert snap["endpoints"]["sink"]["handled"] == n
    assert snap["endpoints"]["sink"]["dropped"] == 0


def test_inline_budget_zero_never_runs_inline() -> None:
    h = _Harness(budget=0.0)
    for k in range(INLINE_TRIAL + 5):
        h.inbox.put(_batch(1, k))
        wait_for(lambda k=k: len(h.got) == k + 1)
    assert h.inbox.run_inline is None and not h.later
    assert set(h.threads) == {"endpoint:e"}
    h.stop()


def test_network_endpoints_never_run_inline_by_default() -> None:
    """Plugins that wait on a network or on worker processes default to ``inline_budget = 0``
    (a slow peer must not hold the broker's or a device's thread); the others keep the base
    default; a user's setting still wins."""
    from radlogger.endpoint import Endpoint
    from radlogger.endpoints.longpoll import LongPollEndpoint
    from radlogger.endpoints.mqtt import MQTTEndpoint

    base = {o.name: o.default for o in Endpoint.declared_options()}["inline_budget"]
    assert base > 0
    from radlogger.endpoints.lag.isolated import IsolatedEndpoint
    from radlogger.workers.pool import EndpointPool

    for cls in (MQTTEndpoint, LongPollEndpoint, IsolatedEndpoint, EndpointPool):
        assert {o.name: o.default for o in cls.declared_options()}["inline_budget"] == 0.0, cls
    assert {o.name: o.default for o in NullEndpoint.declared_options()}["inline_budget"] == base
    assert MQTTEndpoint("mq", inline_budget=0.001).inline_budget == 0.001
    assert MQTTEndpoint("mq").inline_budget == 0.0
    assert LongPollEndpoint("lp", port=0).inline_budget == 0.0


def test_only_tiny_drains_run_inline() -> None:
    """A qualified endpoint's batch runs on the broker's thread only when the broker's drain is
    at most ``INLINE_ITEMS``: a drain of more (a busier stream, e.g. WIDAR's lag sets at line
    rate) stays on the endpoint's own thread, whatever its record."""
    from radlogger.broker import INLINE_ITEMS

    assert 40 > INLINE_ITEMS
    p = Pipeline()
    dev = p.add_device(SyntheticDevice("syn", rate=1000, count=2 * INLINE_TRIAL + 20,
                                       pattern="counter"))
    sink = p.add_endpoint(NullEndpoint("sink", inline_budget=0.1), subscribe=["syn", "burst"])
    p.start()
    runner = sink._runner
    assert isinstance(runner, ThreadRunner)
    wait_for(lambda: dev.state is DeviceState.FINISHED and p.quiescent(), 30)
    assert runner.inline_batches > 0 and sink.inbox.run_inline is not None
    wait_for(lambda: sink.inbox.waiting)  # its thread asleep: it would run inline if allowed
    before = runner.inline_batches
    out = p.outlet("burst")
    with p.broker.paused():  # the burst waits in the queue: one drain of 40
        for i in range(40):
            out.push(Measurement("burst", "burst", i))
    wait_for(p.quiescent, 10)
    assert runner.inline_batches == before
    assert p.stop(10)
    snap = p.snapshot()
    assert snap["endpoints"]["sink"]["handled"] == 2 * INLINE_TRIAL + 20 + 40
    assert snap["producers"]["burst"]["produced"] == 40 and p.balanced()
