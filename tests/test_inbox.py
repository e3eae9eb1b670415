"""The endpoint's parts on their own: the inbox (bounded, counted, waiting for room when asked)
and the runners (own thread, shared pool), and the old ``mode = pool`` spelling."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import wait_for
from radlogger.endpoints.null import NullEndpoint
from radlogger.inbox import Inbox
from radlogger.measurement import Measurement
from radlogger.runners import SharedRunner, ThreadRunner
from radlogger.stats import EndpointStats


def _batch(n: int, start: int = 0) -> list[Measurement]:
    return [Measurement("d", "d.v", i, seq=i) for i in range(start, start + n)]


def test_full_inbox_drops_newest_and_counts() -> None:
    stats = EndpointStats("e")
    inbox = Inbox(4, stats)
    assert not inbox.put(_batch(3))
    assert inbox.put(_batch(3, 3))
    assert [m.value for m in inbox.items] == [0, 1, 2, 3]
    assert stats.snapshot()["dropped_by_reason"] == {"inbox_full": 2}


def test_full_inbox_drops_oldest_and_counts() -> None:
    stats = EndpointStats("e")
    inbox = Inbox(4, stats, drop_oldest=True)
    inbox.put(_batch(3))
    inbox.put(_batch(3, 3))
    assert [m.value for m in inbox.items] == [2, 3, 4, 5]
    assert stats.snapshot()["dropped_by_reason"] == {"inbox_full": 2}


def test_put_waits_for_room_until_the_runner_takes() -> None:
    stats = EndpointStats("e")
    inbox = Inbox(4, stats)
    inbox.put(_batch(4))
    done = threading.Event()

    def broker() -> None:
        inbox.put(_batch(4, 4), wait_until=time.monotonic() + 30)
        done.set()

    t = threading.Thread(target=broker)
    t.start()
    wait_for(lambda: inbox.full_waiters == 1, message="the broker waits for room")
    assert not done.is_set()
    with inbox.cond:
        first = inbox.take(10)
    inbox.done()
    t.join(10)
    assert done.is_set()
    assert [m.value for m in first] == [0, 1, 2, 3]
    assert [m.value for m in inbox.items] == [4, 5, 6, 7]
    assert stats.snapshot()["dropped_by_reason"] == {}


def test_put_that_waits_in_vain_drops_at_its_deadline() -> None:
    stats = EndpointStats("e")
    inbox = Inbox(2, stats)
    inbox.put(_batch(2))
    t0 = time.monotonic()
    assert inbox.put(_batch(3, 2), wait_until=t0 + 0.2)
    assert time.monotonic() - t0 >= 0.2
    assert stats.snapshot()["dropped_by_reason"] == {"endpoint_stalled": 3}
    assert inbox.waited_s >= 0.2 and inbox.stalled
    # stalled: the next put does not wait again (a stuck endpoint must not stall the broker
    # for every batch), until the runner takes something
    t1 = time.monotonic()
    inbox.put(_batch(1, 5), wait_until=t1 + 30)
    assert time.monotonic() - t1 < 5
    assert stats.snapshot()["dropped_by_reason"] == {"endpoint_stalled": 4}
    with inbox.cond:
        inbox.take(10)
    assert not inbox.stalled


def test_a_batch_larger_than_the_inbox_is_handed_over_in_parts() -> None:
    stats = EndpointStats("e")
    inbox = Inbox(3, stats)
    got: list[int] = []
    stop = threading.Event()

    def runner() -> None:
        while not stop.is_set() or inbox.items:
            batch = inbox.next_batch(2)
            if batch is None:
                return
            got.extend(m.value for m in batch)
            inbox.done()

    t = threading.Thread(target=runner)
    t.start()
    assert not inbox.put(_batch(50), wait_until=time.monotonic() + 30)
    wait_for(lambda: len(got) == 50)
    stop.set()
    inbox.request_stop()
    t.join(10)
    assert got == list(range(50)) and stats.snapshot()["dropped_by_reason"] == {}


def test_put_stops_waiting_when_the_endpoint_stops() -> None:
    inbox = Inbox(1, EndpointStats("e"))
    inbox.put(_batch(1))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(
        inbox.put(_batch(1, 1), wait_until=time.monotonic() + 60)))
    t.start()
    wait_for(lambda: inbox.full_waiters == 1)
    inbox.request_stop()
    t.join(10)
    assert result == [True]


def _run(runner_cls: type, **extra: object) -> list[int]:
    got: list[int] = []
    inbox = Inbox(1000, EndpointStats("e"))

    def process(batch: list[Measurement]) -> None:
        got.extend(m.value for m in batch)
        inbox.done()

    runner = runner_cls("e", inbox, 7, process, lambda: None, **extra)
    runner.start()
    for k in range(10):
        inbox.put(_batch(10, 10 * k))
    wait_for(lambda: len(got) == 100 and inbox.idle)
    inbox.request_stop()
    assert runner.join(5)
    return got


def test_thread_runner_takes_everything_in_order() -> None:
    assert _run(ThreadRunner) == list(range(100))


def test_shared_runner_takes_everything_in_order() -> None:
    with ThreadPoolExecutor(2) as pool:
        assert _run(SharedRunner, executor=pool) == list(range(100))


def test_mode_pool_is_the_old_spelling_of_shared(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="radlogger.endpoint"):
        e = NullEndpoint("old", mode="pool")
    assert e.mode == "shared"
    assert "mode = pool is now spelled mode = shared" in caplog.text
    assert NullEndpoint("new", mode="shared").mode == "shared"
