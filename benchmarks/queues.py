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
    """atomic-queue (a busy-spinning LMAX Disruptor port), where it can be installed.

    It does not build on Python 3.11+ (its atomic-sequence extension includes a header removed
    in 3.11); on Python 3.10: ``pip install wheel && pip install --no-build-isolation
    atomic-queue``, then run ``python benchmarks/queues.py`` with that interpreter.
    """
    try:
        from atomicqueue.queue import AtomicQueue  # type: ignore[import-not-found]
    except ImportError:
        return None

    def run(n: int) -> int:  # pragma: no cover - only where the package builds
        done = threading.Event()

        class Counter:
            got = 0

            def handle(self, event: object) -> None:
                if event is _DONE:
                    done.set()
                elif event is not None:  # None: the wake-up sent at stop
                    self.got += 1

        counter = Counter()
        q = AtomicQueue(CAPACITY)
        q.handle_events_with(counter)
        q.start()
        publish = q.publish_event
        for i in range(n):
            publish(i)
        publish(_DONE)
        done.wait()
        for group in q.event_handler_groups:  # its processors spin until an event arrives:
            for p in group.get_processors():  # stop them, then feed one event to wake them
                p.stop_thread = True
        publish(None)
        for group in q.event_handler_groups:
            for p in group.get_processors():
                p.join()
        return counter.got

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


def main() -> None:
    """Run every contender once outside pytest (e.g. under Python 3.10 for atomic-queue)."""
    import json
    import sys
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n -= n % 64  # put_many moves whole chunks
    out = {}
    for name, run in CONTENDERS.items():
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            got = run(n)
            dt = time.perf_counter() - t0
            assert got == n, (name, got)
            best = max(best, n / dt)
        out[name] = best
        print(f"{name:40s} {best / 1e6:6.2f} M items/s", flush=True)
    print(json.dumps({"python": sys.version.split()[0], "items": n, "items_per_s": out}))


if __name__ == "__main__":
    main()
