"""The lockless queue: bounds, every overflow policy, exact drop counts, wake-ups, batching."""

from __future__ import annotations

import threading

import pytest

from conftest import wait_for
from radlogger.queue import DropReason, LocklessQueue, Overflow


def test_fifo_and_batch_drain() -> None:
    q: LocklessQueue[int] = LocklessQueue(100)
    for i in range(10):
        assert q.put(i)
    assert q.drain(4) == [0, 1, 2, 3]
    assert q.get_batch(100, timeout=0) == [4, 5, 6, 7, 8, 9]
    assert q.get_batch(100, timeout=0.01) == []


def test_drop_newest_counts_refused_items() -> None:
    dropped: list[tuple[int, DropReason]] = []
    q: LocklessQueue[int] = LocklessQueue(3, Overflow.DROP_NEWEST,
                                          on_drop=lambda i, r: dropped.append((i, r)))
    results = [q.put(i) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert q.drain() == [0, 1, 2]
    assert dropped == [(3, DropReason.QUEUE_FULL), (4, DropReason.QUEUE_FULL)]
    assert q.dropped == 2


def test_drop_oldest_evicts_and_counts() -> None:
    dropped: list[int] = []
    q: LocklessQueue[int] = LocklessQueue(3, "drop_oldest", on_drop=lambda i, r: dropped.append(i))
    assert all(q.put(i) for i in range(5))
    assert q.drain() == [2, 3, 4]
    assert dropped == [0, 1]


def test_block_waits_for_room_then_times_out() -> None:
    dropped: list[int] = []
    q: LocklessQueue[int] = LocklessQueue(2, "block", block_timeout=5.0,
                                          on_drop=lambda i, r: dropped.append(i))
    q.put(0)
    q.put(1)
    done = threading.Event()

    def producer() -> None:
        assert q.put(2)  # blocks until the consumer makes room
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    wait_for(lambda: q._blocked == 1, message="producer blocked")
    assert not done.is_set()
    assert q.drain(1) == [0]
    assert done.wait(5)
    t.join()
    assert q.drain() == [1, 2]
    q2: LocklessQueue[int] = LocklessQueue(1, "block", block_timeout=0.05,
                                           on_drop=lambda i, r: dropped.append(i))
    q2.put(0)
    assert not q2.put(1)  # nobody drains: times out and counts
    assert dropped == [1]


def test_consumer_sleeps_and_is_woken_by_first_put() -> None:
    q: LocklessQueue[int] = LocklessQueue(10)
    got: list[list[int]] = []

    def consumer() -> None:
        got.append(q.get_batch(10, timeout=10))

    t = threading.Thread(target=consumer)
    t.start()
    wait_for(lambda: q._sleeping, message="consumer asleep")
    q.put(42)
    t.join(5)
    assert got == [[42]]


def test_interrupt_is_sticky_and_close_counts_late_puts() -> None:
    reasons: list[DropReason] = []
    q: LocklessQueue[int] = LocklessQueue(10, on_drop=lambda i, r: reasons.append(r))
    q.interrupt()  # before the consumer waits: its next get_batch must not block
    assert q.get_batch(10, timeout=None) == []
    q.close()
    assert not q.put(1)
    assert reasons == [DropReason.SHUTDOWN]
    assert q.size == 10


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "block"])
def test_many_producers_conservation(policy: str) -> None:
    """4 producers, 1 slow consumer: every item is either drained or counted as dropped."""
    lock = threading.Lock()
    dropped: list[int] = []

    def on_drop(item: int, reason: DropReason) -> None:
        with lock:
            dropped.append(item)

    q: LocklessQueue[int] = LocklessQueue(64, policy, block_timeout=0.001, on_drop=on_drop)
    per = 20000
    received: list[int] = []
    stop = threading.Event()

    def consumer() -> None:
        while not (stop.is_set() and not len(q)):
            received.extend(q.get_batch(16, timeout=0.01))

    def producer(base: int) -> None:
        for i in range(per):
            q.put(base + i)

    c = threading.Thread(target=consumer)
    c.start()
    producers = [threading.Thread(target=producer, args=(k * per,)) for k in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    stop.set()
    c.join(10)
    assert len(received) + len(dropped) == 4 * per
    assert sorted(received + dropped) == list(range(4 * per))
    assert q.dropped == len(dropped)
    # per-producer order is preserved among delivered items
    for k in range(4):
        mine = [x for x in received if k * per <= x < (k + 1) * per]
        assert mine == sorted(mine)


def test_put_derived_never_waits_and_is_refused_after_close() -> None:
    """A processing endpoint's output goes past the bound instead of waiting for the broker
    (which may itself be waiting for that endpoint's inbox in block mode)."""
    dropped: list[tuple[int, DropReason]] = []
    q: LocklessQueue[int] = LocklessQueue(4, "block", block_timeout=30.0,
                                          on_drop=lambda item, r: dropped.append((item, r)))
    assert q.put_many(range(4)) == 4
    assert q.put_derived([10, 11, 12]) == 3  # full, block policy, yet no wait
    assert len(q) == 7 and q.overshoot_high_water == 3
    assert q.drain(100) == [0, 1, 2, 3, 10, 11, 12]
    q.close()
    assert q.put_derived([20, 21]) == 0
    assert dropped == [(20, DropReason.SHUTDOWN), (21, DropReason.SHUTDOWN)]


def test_put_wait_throttles_instead_of_dropping() -> None:
    """A finite source waits for room even under a dropping policy; nothing is lost."""
    q: LocklessQueue[int] = LocklessQueue(8, "drop_newest")
    n = 5000
    got: list[int] = []

    def producer() -> None:
        for i in range(0, n, 7):
            q.put_many_wait(range(i, min(i + 7, n)))

    t = threading.Thread(target=producer)
    t.start()
    while len(got) < n:
        got.extend(q.get_batch(3, timeout=5.0))
    t.join(5.0)
    assert got == list(range(n)) and q.dropped == 0


def test_put_wait_gives_up_counted_at_close() -> None:
    dropped: list[DropReason] = []
    q: LocklessQueue[int] = LocklessQueue(1, on_drop=lambda item, r: dropped.append(r))
    assert q.put_wait(1)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(q.put_many_wait([2, 3])))
    t.start()
    wait_for(lambda: q.waiting_producers == 1)
    q.close()
    t.join(5.0)
    assert result == [0] and dropped == [DropReason.SHUTDOWN, DropReason.SHUTDOWN]
