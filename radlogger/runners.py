"""What runs an endpoint's batches: its own thread (``mode = thread``), or a task on the
pipeline's shared thread pool (``mode = shared``).

A runner takes batches from an :class:`~radlogger.inbox.Inbox` and calls ``process(batch)``
(the endpoint's error isolation and accounting), one batch at a time.  It knows nothing of
what the endpoint does; the endpoint knows nothing of how it is scheduled.  This is the split
python-can makes between a ``Listener`` and the ``Notifier`` that runs it.

Why a shared pool at all: an embedded box runs many slow endpoints; a thread each costs memory
and wake-ups.  A shared runner is scheduled only when its inbox goes from empty to non-empty
while no task is scheduled, and its task runs until the inbox is empty.

Inline batches (a deviation from "every endpoint on its own thread", argued here): at low rates
the endpoint's wake-up is most of what a measurement costs (a futex wake is 16-24 us of CPU on
the 2-core VM, the endpoint's work a few us).  A :class:`ThreadRunner` with an ``inline_budget``
therefore lets the broker run a small batch itself, right after the publish, while its own
thread stays asleep: one thread wake-up per batch instead of two (bench_sweep
``test_low_rate_linger``).  Guarded so that no endpoint can take the others down:

* only a batch the broker drained at low rate (at most ``INLINE_ITEMS``, 8) and only while the
  endpoint's thread sleeps with an empty inbox (order is kept: nothing else holds its items);
* only after a track record: ``INLINE_TRIAL`` consecutive batches on its own thread each within
  the budget (an endpoint that blocks from the start never runs on the broker's thread);
* an inline batch over the budget sends the endpoint back to its own thread, and the record it
  needs to come back doubles (up to ``INLINE_TRIAL_MAX``): a flaky endpoint settles on its thread.

What it cannot prevent: an endpoint that was fast for its record and then blocks in one batch
holds the broker for that batch (once).  ``inline_budget = 0`` turns it off for an endpoint;
plugins that wait on the outside default to it (``NEVER_INLINE``: mqtt, longpoll).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

from .inbox import Inbox
from .measurement import Measurement

__all__ = ["Runner", "ThreadRunner", "SharedRunner", "INLINE_TRIAL"]

log = logging.getLogger(__name__)

#: consecutive batches within the budget on the endpoint's own thread before it may run inline
INLINE_TRIAL = 32
#: the longest record asked of an endpoint that went over its budget inline (it doubles each time)
INLINE_TRIAL_MAX = 1024

Process = Callable[[list[Measurement]], None]


class Runner:
    """Base: ``start``, ``join(timeout) -> finished``; ``on_late`` runs if the runner finishes
    its last batch after a missed stop deadline (it flushes and closes the endpoint itself)."""

    def __init__(self, name: str, inbox: Inbox, batch_max: int, process: Process,
                 on_late: Callable[[], None]) -> None:
        self.name = name
        self.inbox = inbox
        self.batch_max = batch_max
        self.process = process
        self.on_late = on_late

    def start(self) -> None:
        raise NotImplementedError

    def join(self, timeout: float) -> bool:
        raise NotImplementedError


class ThreadRunner(Runner):
    """A dedicated thread that sleeps on the inbox's bell; with ``inline_budget`` (seconds per
    batch, 0 = never) small batches may run on the broker's thread instead (module docstring)."""

    _thread: threading.Thread | None = None

    def __init__(self, name: str, inbox: Inbox, batch_max: int, process: Process,
                 on_late: Callable[[], None], inline_budget: float = 0.0) -> None:
        super().__init__(name, inbox, batch_max, process, on_late)
        self.inline_budget = inline_budget
        #: batches in a row within the budget on the own thread, and how many it takes to qualify
        self._record = 0
        self._trial = INLINE_TRIAL
        self._inline_busy = False  # under inbox.cond: a batch runs on the broker's thread
        self._exited = False  # under inbox.cond: the own thread has ended
        self.inline_batches = 0
        self.inline_over_budget = 0

    def start(self) -> None:
        self._exited = False
        self.inbox.run_inline = None  # a restarted endpoint earns its record again
        self._thread = threading.Thread(target=self._main, name=f"endpoint:{self.name}",
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        inbox, batch_max, process = self.inbox, self.batch_max, self.process
        budget = self.inline_budget
        clock = time.perf_counter
        while (batch := inbox.next_batch(batch_max)) is not None:
            if not budget or inbox.run_inline is not None:
                process(batch)
                continue
            t0 = clock()
            process(batch)
            if clock() - t0 > budget:
                self._record = 0
            else:
                self._record += 1
                if self._record >= self._trial:
                    inbox.run_inline = self._inline  # an attribute write: atomic
        with inbox.cond:
            self._exited = True
            late = inbox.abandoned and not self._inline_busy
        if late:
            self.on_late()

    def _inline(self) -> None:
        """On the broker's thread, after its publish: the batch the broker left in the inbox."""
        inbox = self.inbox
        with inbox.cond:
            if not inbox.waiting or not inbox.items:
                return  # the own thread was woken meanwhile (a stop) and takes them
            batch = inbox.take(self.batch_max)
            self._inline_busy = True
        t0 = time.perf_counter()
        try:
            self.process(batch)
        finally:
            took = time.perf_counter() - t0
            self.inline_batches += 1
            with inbox.cond:
                self._inline_busy = False
                if took > self.inline_budget:
                    self._over_budget(took)
                inbox.ring_if_items()  # more than batch_max was waiting: the own thread goes on
                late = inbox.abandoned and self._exited
                inbox.cond.notify_all()  # a join() waiting for this batch
            if late:
                self.on_late()

    def _over_budget(self, took: float) -> None:
        """Under ``inbox.cond``: back to the own thread until a longer record is earned."""
        self.inline_over_budget += 1
        self.inbox.run_inline = None
        self._record = 0
        self._trial = min(self._trial * 2, INLINE_TRIAL_MAX)
        log.info("endpoint %s: a batch took %.0f us on the broker's thread (inline_budget "
                 "%.0f us): back on its own thread for at least %d batches", self.name,
                 took * 1e6, self.inline_budget * 1e6, self._trial)

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        end = time.monotonic() + timeout
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        inbox = self.inbox
        with inbox.cond:  # a batch still running on the broker's thread counts as running
            return inbox.cond.wait_for(lambda: not self._inline_busy,
                                       max(0.0, end - time.monotonic()))


class SharedRunner(Runner):
    """A task on a shared executor, scheduled when work arrives, running until the inbox is
    empty."""

    def __init__(self, name: str, inbox: Inbox, batch_max: int, process: Process,
                 on_late: Callable[[], None], executor: Executor) -> None:
        super().__init__(name, inbox, batch_max, process, on_late)
        self.executor = executor

    def start(self) -> None:
        self.inbox.schedule = self._schedule
        with self.inbox.cond:
            if self.inbox.items and not self.inbox.scheduled:
                self.inbox.scheduled = True
                self._schedule()

    def _schedule(self) -> None:
        self.executor.submit(self._task)

    def _task(self) -> None:
        inbox = self.inbox
        while True:
            with inbox.cond:
                if not inbox.items:
                    inbox.scheduled = False
                    inbox.cond.notify_all()  # wake a stop() waiting for the pool to go idle
                    late = inbox.abandoned
                    break
                batch = inbox.take(self.batch_max)
            self.process(batch)
        if late:
            self.on_late()

    def join(self, timeout: float) -> bool:
        inbox = self.inbox
        with inbox.cond:
            return inbox.cond.wait_for(lambda: not inbox.scheduled, timeout)
