"""The bounded, lock-free, multi-producer / single-consumer queue between devices and the broker.

Why not ``queue.Queue``: it takes a mutex and notifies a condition on every put and get, which
costs about 1 us per item in CPython.  Here the hot path of ``put`` is a length check, one
``deque.append`` (atomic under the GIL) and one attribute read; no lock is taken per item.

Why not busy-spinning (atomic-queue, the LMAX Disruptor ports): an empty queue must cost no CPU
on a 2-core box.  The consumer sleeps on an ``Event``; producers wake it only on the
empty -> non-empty transition *and* only when it is actually asleep.  Calling ``Event.set()``
on every put while the consumer is still waking for the GIL makes a producer about 5x slower.

The no-lost-wakeup argument (everything below runs under the GIL, so each line is atomic):

* consumer: ``clear(); sleeping = True; if not deque: wait(); sleeping = False``
* producer: ``append(x); if sleeping and not is_set(): set()``

If the producer appends before the consumer's emptiness check, the consumer sees the item; if
after, the producer sees ``sleeping`` and sets the event.

The capacity is a soft bound: with P producers racing past the length check at once, the queue
may briefly hold ``capacity + P - 1`` items.  Memory stays bounded; counts stay exact.

Overflow policies (explicit, per queue, every drop counted through ``on_drop``):

* ``drop_newest``: the item being put is refused.
* ``drop_oldest``: the oldest queued item is evicted to make room.
* ``block``: the producer waits for room up to ``block_timeout`` seconds, then the item is
  refused.  Waiting producers park on a condition (cold path only).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Generic, TypeVar

__all__ = ["Overflow", "LocklessQueue", "DropReason", "yield_gil"]

T = TypeVar("T")


class Overflow(str, enum.Enum):
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class DropReason(str, enum.Enum):
    """Why a measurement was not delivered.  The values appear in stats and logs."""

    QUEUE_FULL = "queue_full"
    INBOX_FULL = "inbox_full"
    #: backpressure: the broker waited its timeout for room in a stuck endpoint's inbox
    ENDPOINT_STALLED = "endpoint_stalled"
    ENDPOINT_FAILED = "endpoint_failed"
    SHUTDOWN = "shutdown"


def _ignore_drop(item: object, reason: DropReason) -> None:
    return None


def yield_gil() -> None:
    """After a drop on a full queue or inbox: let the consumer run.

    A producer that outruns its consumer otherwise keeps the interpreter and starves the very
    thread that makes room.  Measured (bench_sweep saturation, drop_newest): 0.16-0.43 M/s
    delivered with most measurements dropped at the queue, against 1.25 M/s and almost no
    queue drops when the producer yields.  Costs a few microseconds, only on the full path.
    """
    time.sleep(0)


class LocklessQueue(Generic[T]):
    """Bounded MPSC queue: lock-free puts, a consumer that sleeps when idle, batch drains.

    ``on_drop(item, reason)`` is called for every item that is refused or evicted, from the
    thread that dropped it, so the owner can charge the drop to the item's source.
    """

    def __init__(
        self,
        capacity: int = 65536,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        block_timeout: float = 1.0,
        on_drop: Callable[[T, DropReason], None] = _ignore_drop,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.size = capacity  # the configured bound; capacity drops to 0 once closed
        self.overflow = Overflow(overflow)
        self.block_timeout = block_timeout
        self._on_drop = on_drop
        self._dq: deque[T] = deque()
        self._ready = threading.Event()
        self._sleeping = False
        self._interrupted = False
        self._closed = False
        # Cold path: producers blocked on a full queue, and exact drop bookkeeping.
        self._room = threading.Condition(threading.Lock())
        self._blocked = 0
        self.dropped = 0  # written only under self._room's lock
        self.high_water = 0  # sampled by the consumer at each drain
        self.overshoot_high_water = 0  # most items put_derived held past the bound

    # ------------------------------------------------------------------ producer side
    def put(self, item: T) -> bool:
        """Enqueue ``item``; return False if the overflow policy refused it (counted)."""
        dq = self._dq
        if len(dq) >= self.capacity:
            return self._put_full(item)
        dq.append(item)
        if self._sleeping:
            self._wake()
        return True

    def put_many(self, items: Iterable[T]) -> int:
        """Enqueue several items with one wake-up check; return how many were accepted."""
        dq = self._dq
        accepted = 0
        room = self.capacity - len(dq)
        items = list(items)
        if len(items) <= room:
            dq.extend(items)
            accepted = len(items)
        else:
            for item in items:
                accepted += self.put(item)
        if self._sleeping:
            self._wake()
        return accepted

    def put_wait(self, item: T, timeout: float | None = None,
                 abort: Callable[[], bool] | None = None) -> bool:
        """Enqueue ``item``, waiting for room whatever the overflow policy (a finite source:
        throttled, never dropped).  Gives up, counted, only when the queue is closed, ``abort()``
        says so (the device is being stopped: ``shutdown``) or ``timeout`` passes."""
        dq = self._dq
        if len(dq) >= self.capacity:
            return self._wait_then_put(item, timeout, abort)
        dq.append(item)
        if self._sleeping:
            self._wake()
        return True

    def _wait_then_put(self, item: T, timeout: float | None,
                       abort: Callable[[], bool] | None) -> bool:
        dq = self._dq
        end = None if timeout is None else time.monotonic() + timeout
        aborted = False
        with self._room:
            self._blocked += 1
            try:
                while len(dq) >= self.capacity and not self._closed:
                    if abort is not None and abort():
                        aborted = True
                        break
                    left = 0.1 if end is None else min(0.1, end - time.monotonic())
                    if left <= 0:
                        break
                    self._room.wait(left)  # sliced: abort() is polled, nobody notifies it
            finally:
                self._blocked -= 1
        if self._closed or aborted or len(dq) >= self.capacity:
            full = not (self._closed or aborted)
            self._drop(item, DropReason.QUEUE_FULL if full else DropReason.SHUTDOWN)
            return False
        dq.append(item)
        if self._sleeping:
            self._wake()
        return True

    def put_many_wait(self, items: Iterable[T], timeout: float | None = None,
                      abort: Callable[[], bool] | None = None) -> int:
        """:meth:`put_wait` for a chunk: fills the room there is, waits for more."""
        dq = self._dq
        items = list(items)
        i = 0
        while i < len(items):
            room = self.capacity - len(dq)
            if room > 0:
                dq.extend(items[i:i + room])
                i += room
                if self._sleeping:
                    self._wake()
                continue
            if not self._wait_then_put(items[i], timeout, abort):
                full = not self._closed and not (abort is not None and abort())
                for item in items[i + 1:]:
                    self._drop(item, DropReason.QUEUE_FULL if full else DropReason.SHUTDOWN)
                return i
            i += 1
        return len(items)

    def put_derived(self, items: Iterable[T]) -> int:
        """Enqueue a processing endpoint's output past the bound; return how many were taken.

        Why past the bound: in ``block`` mode the broker waits for room in a full endpoint
        inbox.  If a processing endpoint in turn waited for room in the queue (which only the
        broker empties), the two would wait on each other.  Derived output therefore never
        waits: the wait graph is broker -> endpoint only, with no cycle.  Memory stays bounded
        because a processing endpoint publishes a bounded amount per input and its input is
        bounded by its inbox; ``overshoot_high_water`` shows how far past the bound it went.
        After :meth:`close` items are refused and counted (``shutdown``) as everywhere else.
        """
        dq = self._dq
        items = list(items)
        if self._closed:
            for item in items:
                self._drop(item, DropReason.SHUTDOWN)
            return 0
        dq.extend(items)
        over = len(dq) - self.size
        if over > self.overshoot_high_water:
            self.overshoot_high_water = over
        if self._sleeping:
            self._wake()
        return len(items)

    def put_derived_one(self, item: T) -> bool:
        """:meth:`put_derived` for one item (a processing endpoint's ``publish``)."""
        if self._closed:
            self._drop(item, DropReason.SHUTDOWN)
            return False
        dq = self._dq
        dq.append(item)
        over = len(dq) - self.size
        if over > self.overshoot_high_water:
            self.overshoot_high_water = over
        if self._sleeping:
            self._wake()
        return True

    def _wake(self) -> None:
        ready = self._ready
        if not ready.is_set():
            ready.set()

    def _put_full(self, item: T) -> bool:
        if self._closed:
            self._drop(item, DropReason.SHUTDOWN)
            return False
        policy = self.overflow
        dq = self._dq
        if policy is Overflow.DROP_OLDEST:
            try:
                victim = dq.popleft()
            except IndexError:  # the consumer emptied it meanwhile: room after all
                pass
            else:
                self._drop(victim, DropReason.QUEUE_FULL)
                yield_gil()
            dq.append(item)
            if self._sleeping:
                self._wake()
            return True
        if policy is Overflow.BLOCK and self.block_timeout > 0:
            with self._room:
                self._blocked += 1
                try:
                    self._room.wait_for(
                        lambda: len(dq) < self.capacity or self._closed, self.block_timeout
                    )
                finally:
                    self._blocked -= 1
            if len(dq) < self.capacity and not self._closed:
                dq.append(item)
                if self._sleeping:
                    self._wake()
                return True
        self._drop(item, DropReason.QUEUE_FULL)
        yield_gil()
        return False

    def _drop(self, item: T, reason: DropReason) -> None:
        with self._room:
            self.dropped += 1
        self._on_drop(item, reason)

    # ------------------------------------------------------------------ consumer side
    def drain(self, max_items: int = 4096) -> list[T]:
        """Take up to ``max_items`` queued items without waiting (single consumer only)."""
        pop = self._dq.popleft
        depth = len(self._dq)
        if depth > self.high_water:
            self.high_water = depth
        n = max_items if depth > max_items else depth
        if self.overflow is not Overflow.DROP_OLDEST:
            # Only this consumer removes items, so n pops cannot fail: use the fast path.
            out = [pop() for _ in repeat(None, n)]
        else:
            # A drop_oldest producer may evict under us; never lose a popped item.
            out = []
            append = out.append
            try:
                for _ in repeat(None, n):
                    append(pop())
            except IndexError:
                pass
        if self._blocked:
            with self._room:
                self._room.notify_all()
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until items are available, :meth:`interrupt` or ``timeout``; True if items.

        Separate from :meth:`drain` so a consumer can mark itself busy before any item
        leaves the queue (the pipeline's idle check must never see neither).
        """
        if not self._dq:
            ready = self._ready
            ready.clear()
            self._sleeping = True
            if not self._dq and not self._interrupted:
                ready.wait(timeout)
            self._sleeping = False
        self._interrupted = False
        return bool(self._dq)

    def get_batch(self, max_items: int = 4096, timeout: float | None = None) -> list[T]:
        """Wait until items are available (or ``timeout``), then drain up to ``max_items``.

        Returns an empty list on timeout or after :meth:`interrupt`.
        """
        self.wait(timeout)
        return self.drain(max_items)

    def interrupt(self) -> None:
        """Wake the consumer without enqueuing anything (used to stop it).

        Sticky: if the consumer is not waiting yet, its next ``get_batch`` returns at once.
        """
        self._interrupted = True
        self._ready.set()

    def close(self) -> None:
        """Refuse further puts (counted as shutdown drops) and release blocked producers."""
        self._closed = True
        self.capacity = 0  # every later put takes the cold path and is counted as a shutdown drop
        with self._room:
            self._room.notify_all()
        self._ready.set()

    def __len__(self) -> int:
        return len(self._dq)

    @property
    def waiting_producers(self) -> int:
        """Producers waiting for room (block policy, or a finite source throttled)."""
        return self._blocked

    @property
    def closed(self) -> bool:
        return self._closed
