"""What runs an endpoint's batches: its own thread (``mode = thread``), or a task on the
pipeline's shared thread pool (``mode = shared``).

A runner takes batches from an :class:`~radlogger.inbox.Inbox` and calls ``process(batch)``
(the endpoint's error isolation and accounting), one batch at a time.  It knows nothing of
what the endpoint does; the endpoint knows nothing of how it is scheduled.  This is the split
python-can makes between a ``Listener`` and the ``Notifier`` that runs it.

Why a shared pool at all: an embedded box runs many slow endpoints; a thread each costs memory
and wake-ups.  A shared runner is scheduled only when its inbox goes from empty to non-empty
while no task is scheduled, and its task runs until the inbox is empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor

from .inbox import Inbox
from .measurement import Measurement

__all__ = ["Runner", "ThreadRunner", "SharedRunner"]

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
    """A dedicated thread that sleeps on the inbox's condition."""

    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"endpoint:{self.name}",
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        inbox, batch_max, process = self.inbox, self.batch_max, self.process
        while (batch := inbox.next_batch(batch_max)) is not None:
            process(batch)
        if inbox.abandoned:
            self.on_late()

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


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
