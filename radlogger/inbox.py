"""An endpoint's inbox: a bounded deque behind a condition, its overflow policy and its counts.

The broker thread :meth:`Inbox.put`\\ s one topic's batch; a runner (``radlogger.runners``)
takes everything available, up to ``batch_max``, and hands it to the endpoint.  What does not
fit is dropped by the policy (``drop_newest`` keeps what is there, ``drop_oldest`` evicts) and
counted in the endpoint's stats with reason ``inbox_full`` -- unless the put may *wait*: then
the broker waits for room, up to a deadline, before it drops (backpressure, ``queue_policy =
block`` or a finite source).

Why a deque and a condition rather than ``queue.Queue``: the broker appends a whole batch under
one lock acquisition and the runner takes a whole batch the same way; the condition is notified
only when the runner sleeps on it (or a shared-pool task must be scheduled), so a busy endpoint
costs the broker one lock round trip per batch, not per measurement.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .measurement import Measurement
from .queue import DropReason, yield_gil

if TYPE_CHECKING:
    from .stats import EndpointStats

__all__ = ["Inbox"]


class Inbox:
    """Bounded, condition-woken, counted.  One producer (the broker), one runner at a time."""

    def __init__(self, size: int, stats: EndpointStats, drop_oldest: bool = False) -> None:
        self.size = size
        self.stats = stats
        self.drop_oldest = drop_oldest
        self.items: deque[Measurement] = deque()
        self.cond = threading.Condition(threading.Lock())
        #: a dedicated runner sleeps on ``bell`` (held while it sleeps; released once to wake it,
        #: by whoever clears ``waiting`` under ``cond``).  Not ``cond.wait()``: a notify under the
        #: lock wakes the runner only to block again on the lock the broker still holds, and a
        #: Condition wait costs a fresh lock and several lock operations; measured at 1,000
        #: batches/s (bench_sweep low rate) the runner then switched 1.3 times per batch
        self.bell = threading.Lock()
        self.bell.acquire()
        self.waiting = False
        #: a shared-pool task is scheduled or running for this inbox
        self.scheduled = False
        #: set by the shared runner: called under ``cond`` when work arrives and none is scheduled
        self.schedule: Callable[[], None] | None = None
        #: set by a dedicated runner qualified to run small batches on the broker's thread
        #: (radlogger.runners, "Inline batches"): instead of ringing its bell, :meth:`put` hands
        #: this to ``run_later``, which returns True if the broker will call it after its publish
        self.run_inline: Callable[[], None] | None = None
        #: set by the pipeline: the broker's ``run_later``
        self.run_later: Callable[[Callable[[], None]], bool] | None = None
        #: measurements taken by the runner and not yet accounted for
        self.in_flight = 0
        #: the stop deadline was missed: what remained was written off
        self.abandoned = False
        self.stopping = False
        #: the broker waits in put() for room (backpressure)
        self.full_waiters = 0
        self.waited_s = 0.0
        #: a wait for room timed out: later puts do not wait again until the runner takes
        self.stalled = False
        #: set when the pipeline's stop deadline has passed: nobody waits for room any more
        self.cancel: threading.Event | None = None

    def __len__(self) -> int:
        return len(self.items)

    # ---------------------------------------------------------------- broker side
    def put(self, batch: list[Measurement], wait_until: float | None = None) -> bool:
        """Append ``batch``; returns True if anything was dropped.

        With ``wait_until`` (a ``time.monotonic()`` deadline) a full inbox makes the caller wait
        for room until then, handing over what fits as room appears (a batch larger than the
        inbox too); only what is left at the deadline is dropped, and the inbox is marked
        stalled: later puts do not wait again until the runner takes (``endpoint_stalled``).
        """
        stats = self.stats
        items = self.items
        reason = DropReason.INBOX_FULL
        with self.cond:
            room = self.size - len(items)
            if len(batch) > room and wait_until is not None:
                if not self.stalled:
                    batch = self._hand_over(batch, wait_until)
                    room = self.size - len(items)
                    self.stalled = len(batch) > room and not self.stopping \
                        and not self._cancelled()
                if self.stalled:
                    reason = DropReason.ENDPOINT_STALLED
                elif self._cancelled():
                    reason = DropReason.SHUTDOWN  # the stop deadline passed while waiting
            n = len(batch)
            if n <= room:
                items.extend(batch)
            elif self.drop_oldest:
                evict = min(n - room, len(items))
                for _ in range(evict):
                    items.popleft()
                if evict:
                    stats.drop(reason, evict)
                keep = batch[-self.size:]
                if len(keep) < n:
                    stats.drop(reason, n - len(keep))
                items.extend(keep)
            else:
                if room > 0:
                    items.extend(batch[:room])
                stats.drop(reason, n - max(room, 0))
            overflowed = n > room
            depth = len(items)
            if depth > stats.inbox_high_water:
                stats.inbox_high_water = depth
            ring = self.waiting
            if ring:
                inline = self.run_inline
                if inline is not None and self.run_later is not None and self.run_later(inline):
                    ring = False  # the broker runs it; ``waiting`` stays set, the bell unrung
                else:
                    self.waiting = False  # this put rings the bell, after releasing the lock
            else:
                self._wake(depth)
        if ring:
            self.bell.release()
        if overflowed:
            yield_gil()  # let the endpoint's runner take the GIL and catch up
        return overflowed

    def _hand_over(self, batch: list[Measurement], until: float) -> list[Measurement]:
        """Under ``cond``: put what fits, wait for room, repeat; returns what is left when
        the wait ends (the deadline, a stop)."""
        items = self.items
        i, n = 0, len(batch)
        while True:
            fit = min(self.size - len(items), n - i)
            if fit > 0:
                items.extend(batch[i:i + fit])
                i += fit
                depth = len(items)
                if depth > self.stats.inbox_high_water:
                    self.stats.inbox_high_water = depth
            if i >= n or self._wait_for_room(1, until) <= 0:
                return batch[i:]

    def _wait_for_room(self, need: int, until: float) -> int:
        """Under ``cond``: wait until ``need`` fit (or the runner stops, or ``until``)."""
        t0 = time.monotonic()
        self.full_waiters += 1
        try:
            while self.size - len(self.items) < need and not self.stopping \
                    and not self.abandoned and not self._cancelled():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._wake(len(self.items))
                self.cond.wait(min(left, 0.5))
        finally:
            self.full_waiters -= 1
            self.waited_s += time.monotonic() - t0
        return self.size - len(self.items)

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _ring(self) -> None:
        """Under ``cond``: wake a runner sleeping on the bell (once per sleep)."""
        if self.waiting:
            self.waiting = False
            self.bell.release()

    def ring_if_items(self) -> None:
        """Under ``cond``: wake a sleeping runner if anything is left for it."""
        if self.items:
            self._ring()

    def _wake(self, depth: int) -> None:
        """Under ``cond``: make sure someone will take what is there."""
        if self.waiting:
            self._ring()
        elif self.schedule is not None and not self.scheduled and depth:
            self.scheduled = True
            self.schedule()

    # ---------------------------------------------------------------- runner side
    def take(self, batch_max: int) -> list[Measurement]:
        """Under ``cond``: everything available up to ``batch_max``."""
        items = self.items
        n = len(items)
        take = n if n <= batch_max else batch_max
        self.in_flight = take  # first: the pipeline's idle check must never see neither
        self.stalled = False  # it takes again: worth waiting for next time
        if take == n:
            batch = list(items)
            items.clear()
        else:
            pop = items.popleft
            batch = [pop() for _ in range(take)]
        if self.full_waiters:
            self.cond.notify_all()  # room for a broker waiting in put()
        return batch

    def next_batch(self, batch_max: int) -> list[Measurement] | None:
        """For a dedicated runner: wait for work; None once stopping and drained."""
        while True:
            with self.cond:
                if self.items:
                    return self.take(batch_max)
                if self.stopping:
                    return None
                self.waiting = True
            self.bell.acquire()  # released exactly once by whoever clears ``waiting``

    def done(self) -> None:
        """The runner accounted for the batch it took."""
        with self.cond:
            self.in_flight = 0

    def request_stop(self) -> None:
        with self.cond:
            self.stopping = True
            self._ring()
            self.cond.notify_all()

    def write_off(self, accounted: int) -> tuple[int, bool]:
        """At a missed stop deadline: clear the inbox, mark it abandoned.  Returns what is lost
        (the inbox plus what the running batch has not accounted for: ``accounted`` of it
        already were) and whether a batch is still running."""
        with self.cond:
            left = len(self.items) + max(0, self.in_flight - accounted)
            self.items.clear()
            self.abandoned = True
            self._ring()
            self.cond.notify_all()
            return left, bool(self.in_flight)

    def reset(self) -> None:
        """Before a (re)start."""
        with self.cond:
            self.stopping = False
            self.abandoned = False

    @property
    def idle(self) -> bool:
        return not (self.items or self.in_flight or self.scheduled)
