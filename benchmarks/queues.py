"""Queue contenders for the one-producer / one-consumer benchmark, each used idiomatically.

Every contender moves ``n`` integers from a producer thread to a consumer thread and returns
what the consumer received, so the benchmark can check the workload was really processed.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable

from radlogger.queue import LocklessQueue

CAPACITY = 65536
_DONE = object()


def _run(producer: Callable[[], None], consumer: Callable[[], None]) -> None:
    c = threading.Thread(target=consumer)
    c.start()
    producer()
    c.join()


def _drain_until_done(q: LocklessQueue[object]) -> Callable[[], int]:
    """The broker's way of consuming: sleep until woken, take whole batches."""
    got = 0

    def consumer() -> None:
        nonlocal got
        get = q.get_batch
        while True:
            batch = get(8192, None)
            if batch and batch[-1] is _DONE:
                got += len(batch) - 1
                return
            got += len(batch)

    consumer.result = lambda: got  # type: ignore[attr-defined]
    return consumer


def ours(n: int) -> int:
    q: LocklessQueue[object] = LocklessQueue(CAPACITY, "block", block_timeout=60)
    consumer = _drain_until_done(q)

    def producer() -> None:
        put = q.put
        for i in range(n):
            put(i)
        put(_DONE)

    _run(producer, consumer)
    return int(consumer.result())  # type: ignore[attr-defined]


def ours_put_many(n: int, chunk: int = 64) -> int:
    q: LocklessQueue[object] = LocklessQueue(CAPACITY, "block", block_timeout=60)
    consumer = _drain_until_done(q)

    def producer() -> None:
        put_many = q.put_many
        items = list(range(chunk))
        for _ in range(n // chunk):
            put_many(items)
        q.put(_DONE)

    _run(producer, consumer)
    return int(consumer.result())  # type: ignore[attr-defined]


def _one_by_one(q: queue.Queue[object] | queue.SimpleQueue[object], n: int) -> int:
    """The standard library queues have no batch get: one ``get`` per item."""
    got = 0

    def consumer() -> None:
        nonlocal got
        get = q.get
        while get() is not _DONE:
            got += 1

    def producer() -> None:
        put = q.put
        for i in range(n):
            put(i)
        put(_DONE)

    _run(producer, consumer)
    return got


def queue_queue(n: int) -> int:
    return _one_by_one(queue.Queue(CAPACITY), n)


def simple_queue(n: int) -> int:
    return _one_by_one(queue.SimpleQueue(), n)  # unbounded: no backpressure at all


def deque_condition(n: int) -> int:
    """The textbook bounded buffer: a lock and two conditions, notify on every put."""
    dq: deque[object] = deque()
    lock = threading.Lock()
    not_empty = threading.Condition(lock)
    not_full = threading.Condition(lock)
    got = 0

    def consumer() -> None:
        nonlocal got
        while True:
            with not_empty:
                while not dq:
                    not_empty.wait()
                batch = list(dq)
                dq.clear()
                not_full.notify_all()
            if batch[-1] is _DONE:
                got += len(batch) - 1
                return
            got += len(batch)

    def producer() -> None:
        for i in [*range(n), _DONE]:
            with not_full:
                while len(dq) >= CAPACITY:
                    not_full.wait()
                dq.append(i)
                not_empty.notify()

    _run(producer, consumer)
    return got


def atomic_queue_contender() -> Callable[[int], int] | None:
    """atomic-queue (a busy-spinning Disruptor port), when it can be installed (Python <= 3.10)."""
    try:
        import atomic_queue  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return None

    def run(n: int) -> int:  # pragma: no cover - only where the package builds
        import atomic_queue as aq  # type: ignore[import-not-found]

        q = aq.AtomicQueue(CAPACITY) if hasattr(aq, "AtomicQueue") else aq.Queue(CAPACITY)
        got = 0

        def consumer() -> None:
            nonlocal got
            while True:
                item = q.pop()
                if item is _DONE:
                    return
                got += 1

        def producer() -> None:
            for i in range(n):
                q.push(i)
            q.push(_DONE)

        _run(producer, consumer)
        return got

    return run


CONTENDERS: dict[str, Callable[[int], int]] = {
    "radlogger LocklessQueue.put": ours,
    "radlogger LocklessQueue.put_many(64)": ours_put_many,
    "queue.Queue(maxsize)": queue_queue,
    "queue.SimpleQueue (unbounded)": simple_queue,
    "deque + Condition": deque_condition,
}
_aq = atomic_queue_contender()
if _aq is not None:
    CONTENDERS["atomic-queue"] = _aq
