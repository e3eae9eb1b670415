"""The endpoint base: a bounded inbox, woken through a condition, handled in batches.

The broker thread calls :meth:`Endpoint.offer` with a batch; it appends to the inbox under the
inbox's condition and notifies only if the worker is waiting.  The worker (a dedicated thread,
or a task on the pipeline's shared thread pool in ``mode = pool``) takes everything available
and handles it as one batch.  The broker never waits for an endpoint: a full inbox drops
(``drop_newest`` or ``drop_oldest``) and counts.

Error isolation: an exception from ``handle`` is counted against the measurement (dropped,
reason ``endpoint_failed``), logged with context (rate-limited), and after ``max_errors``
consecutive errors the ``on_error`` policy applies: ``continue``, ``restart`` (close + open),
or ``fail`` (the endpoint stops; whatever reaches it is counted as dropped).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .measurement import Measurement
from .options import Configurable, Option
from .queue import DropReason, yield_gil

__all__ = ["Endpoint", "EndpointState"]

log = logging.getLogger(__name__)


class EndpointState(str, enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


class Endpoint(Configurable):
    """Base class of endpoints (log, storage, processing, forwarding)."""

    #: topic templates this endpoint publishes, e.g. ``("{topic}_spectrum",)``; for the graph
    produces: tuple[str, ...] = ()

    base_options = (
        Option("subscribe", list, [], "topic patterns: exact topic, subtree prefix, or glob "
               "(* ? [..]); comma separated"),
        Option("mode", str, "thread", "run on a dedicated thread, or on the shared thread pool",
               choices=("thread", "pool")),
        Option("inbox_size", int, 65536, "measurements the inbox holds before dropping", min=1),
        Option("inbox_policy", str, "drop_newest", "what a full inbox drops",
               choices=("drop_newest", "drop_oldest")),
        Option("batch_max", int, 4096, "largest batch handed to the endpoint at once", min=1),
        Option("on_error", str, "restart", "after max_errors consecutive errors",
               choices=("continue", "restart", "fail")),
        Option("max_errors", int, 10, "consecutive errors that trigger on_error", min=1),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        from .stats import EndpointStats  # local: stats is a leaf module, no cycle

        self.stats = EndpointStats(name)
        self.inbox_size: int = s.inbox_size
        self.batch_max: int = s.batch_max
        self._drop_oldest = s.inbox_policy == "drop_oldest"
        self._inbox: deque[Measurement] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._stopping = False
        self._in_flight = 0
        self._abandoned = False
        self._flushing = False
        self._work = threading.Lock()  # one batch (or flush) at a time, whoever runs it
        self._last_batch: list[Measurement] | None = None
        self._thread: threading.Thread | None = None
        self._executor: Executor | None = None
        self._scheduled = False
        self._state = EndpointState.STOPPED
        self._consecutive_errors = 0
        self._batch_failures = 0
        self._log_gate = _LogGate()
        self._outlet: Any = None
        self._has_subscribers: Callable[[str], bool] = lambda topic: False

    # ---------------------------------------------------------------- template methods
    def open(self) -> None:
        """Acquire resources (files, connections). Called before the first batch."""

    def handle(self, m: Measurement) -> None:
        """Handle one measurement (used by the default :meth:`handle_batch`)."""
        raise NotImplementedError

    def handle_batch(self, batch: list[Measurement]) -> None:
        """Handle a batch; override for batched math.  If it raises, the whole batch
        (less items already reported through :meth:`item_failed`) counts as failed."""
        handle = self.handle
        for i, m in enumerate(batch):
            try:
                handle(m)
            except Exception as exc:  # noqa: BLE001 - isolate one bad measurement
                self.item_failed(m, exc)
                if self._state is EndpointState.FAILED:  # on_error = fail: the rest too
                    if len(batch) > i + 1:
                        self.count_dropped(DropReason.ENDPOINT_FAILED, len(batch) - i - 1)
                    return

    def flush(self) -> None:
        """Push buffered output to its destination (called at stop and by flush policies)."""

    def close(self) -> None:
        """Release resources. Called once after the last batch, also after a failure."""

    # ---------------------------------------------------------------- publishing back
    def publish(self, m: Measurement) -> bool:
        """Put a derived measurement back into the pipeline (processing endpoints)."""
        if self._outlet is None:
            raise RuntimeError(f"endpoint {self.name} is not attached to a pipeline")
        return bool(self._outlet.push(m))

    def has_subscribers(self, topic: str) -> bool:
        """Whether anything will use ``topic``: processing endpoints skip work when not.

        Transitive: a subscriber that is itself a lazy processing endpoint (it implements
        ``wants(topic)``) counts only if something consumes its own output.
        """
        return self._has_subscribers(topic)

    def bind(self, outlet: Any, has_subscribers: Callable[[str], bool],
             executor: Executor | None) -> None:
        """Attach to a pipeline (called by the pipeline, before :meth:`start`)."""
        self._outlet = outlet
        self._has_subscribers = has_subscribers
        self._executor = executor

    # ---------------------------------------------------------------- broker side
    def offer(self, batch: list[Measurement]) -> None:
        """Called by the broker thread (through PyPubSub) with one topic's batch."""
        if batch is self._last_batch:
            return  # the same publish reached us again through a parent topic
        self._last_batch = batch
        stats = self.stats
        n = len(batch)
        stats.received += n
        if self._state is EndpointState.FAILED:
            stats.drop(DropReason.ENDPOINT_FAILED, n)
            return
        inbox = self._inbox
        with self._cond:
            room = self.inbox_size - len(inbox)
            if n <= room:
                inbox.extend(batch)
            elif self._drop_oldest:
                evict = min(n - room, len(inbox))
                for _ in range(evict):
                    inbox.popleft()
                if evict:
                    stats.drop(DropReason.INBOX_FULL, evict)
                keep = batch[-self.inbox_size:]
                if len(keep) < n:
                    stats.drop(DropReason.INBOX_FULL, n - len(keep))
                inbox.extend(keep)
            else:
                if room > 0:
                    inbox.extend(batch[:room])
                stats.drop(DropReason.INBOX_FULL, n - max(room, 0))
            overflowed = n > room
            depth = len(inbox)
            if depth > stats.inbox_high_water:
                stats.inbox_high_water = depth
            if self._waiting:
                self._cond.notify()
            elif self._executor is not None and not self._scheduled and depth:
                self._scheduled = True
                self._executor.submit(self._pool_task)
        if overflowed:
            yield_gil()  # let the endpoint's worker take the GIL and catch up

    # ---------------------------------------------------------------- worker side
    def start(self) -> None:
        self._stopping = False
        self._abandoned = False
        self._consecutive_errors = 0
        self.open()
        self._set_state(EndpointState.RUNNING)
        if self.settings.mode == "thread" or self._executor is None:
            self._executor = None
            self._thread = threading.Thread(target=self._thread_main,
                                            name=f"endpoint:{self.name}", daemon=True)
            self._thread.start()

    def _set_state(self, state: EndpointState) -> None:
        self._state = state
        self.stats.state = state.value

    @property
    def state(self) -> EndpointState:
        return self._state

    def _take(self) -> list[Measurement]:
        """Under the condition: everything available up to ``batch_max``."""
        inbox = self._inbox
        n = len(inbox)
        take = n if n <= self.batch_max else self.batch_max
        self._in_flight = take  # first: the pipeline's idle check must never see neither
        if take == n:
            batch = list(inbox)
            inbox.clear()
        else:
            pop = inbox.popleft
            batch = [pop() for _ in range(take)]
        return batch

    def _thread_main(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._inbox and not self._stopping:
                    self._waiting = True
                    cond.wait()
                    self._waiting = False
                if not self._inbox:
                    break  # stopping and drained
                batch = self._take()
            self._process(batch)
        if self._abandoned:
            self._finish_late()

    def _pool_task(self) -> None:
        while True:
            with self._cond:
                if not self._inbox:
                    self._scheduled = False
                    self._cond.notify_all()  # wake a stop() waiting for the pool to go idle
                    late = self._abandoned
                    break
                batch = self._take()
            self._process(batch)
        if late:
            self._finish_late()

    def _finish_late(self) -> None:
        """The worker outlived a missed stop deadline: it flushes and closes itself."""
        if self._state is not EndpointState.FAILED:
            self._safe(self.flush, "flush")
            self._safe(self.close, "close")
        self._set_state(EndpointState.STOPPED)
        log.warning("endpoint %s: finished its last batch after the stop deadline", self.name)

    def _process(self, batch: list[Measurement]) -> None:
        with self._work:
            self._process_locked(batch)

    def _process_locked(self, batch: list[Measurement]) -> None:
        n = len(batch)
        if self._state is EndpointState.FAILED:
            self.count_dropped(DropReason.ENDPOINT_FAILED, n)
            with self._cond:
                self._in_flight = 0
            return
        self._batch_failures = 0
        try:
            self.handle_batch(batch)
        except Exception as exc:  # noqa: BLE001 - the endpoint's bug must not kill the worker
            self.count_dropped(DropReason.ENDPOINT_FAILED, n - self._batch_failures)
            self.stats.failed_batches += 1
            self._on_error(exc, f"batch of {n} on {batch[0].topic}" if batch else "batch")
        else:
            if self._batch_failures == 0:
                self._consecutive_errors = 0
        # under the lock: a stop() that misses its deadline writes off the rest of this batch
        # atomically with respect to this accounting (exactly one of the two counts it)
        with self._cond:
            if not self._abandoned:
                self.stats.handled += n - self._batch_failures
            self._in_flight = 0

    def process_batch(self, batch: list[Measurement]) -> None:
        """Handle ``batch`` with the base's error isolation and accounting.

        Public for runners other than the endpoint's own worker: a pipeline child process,
        a worker pool.
        """
        self._process(batch)

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """From ``handle_batch``: ``n`` measurements of this batch were dropped for ``reason``
        without being an endpoint error (no error policy, no restart), e.g. a child process
        that could not take them.  They are not counted as handled."""
        with self._cond:
            if self._abandoned:
                return  # the rest of this batch was written off at the stop deadline
            self._batch_failures += n
            self.stats.drop(reason, n)

    def count_lost(self, reason: str, n: int) -> None:
        """``n`` measurements counted as handled earlier were lost afterwards (a store that
        buffered them until a flush that failed for good): move them from handled to dropped.
        Call from the endpoint's own worker or stop path (``handled`` has a single writer)."""
        if n > 0:
            self.stats.handled -= n
            self.stats.drop(reason, n)

    def item_failed(self, m: Measurement, exc: BaseException) -> None:
        """Count one measurement the endpoint could not handle (called from handle_batch)."""
        self.count_dropped(DropReason.ENDPOINT_FAILED)
        self._on_error(exc, f"{m.topic} seq={m.seq}")

    def _on_error(self, exc: BaseException, context: str) -> None:
        self.stats.errors += 1
        self._consecutive_errors += 1
        if self._log_gate.allow():
            suppressed = self._log_gate.take_suppressed()
            log.error("endpoint %s (%s) failed on %s: %s: %s%s", self.name, self.kind, context,
                      type(exc).__name__, exc,
                      f" ({suppressed} similar errors suppressed)" if suppressed else "",
                      exc_info=self.stats.errors == 1)
        if self._consecutive_errors < self.settings.max_errors or self._stopping:
            return  # no restart once stopping: stop() owns closing
        policy = self.settings.on_error
        if policy == "restart":
            self._restart()
        elif policy == "fail":
            log.error("endpoint %s: %d consecutive errors, marked failed", self.name,
                      self._consecutive_errors)
            self._set_state(EndpointState.FAILED)
            self._safe(self.close, "close")
        self._consecutive_errors = 0

    def _restart(self) -> None:
        self._set_state(EndpointState.RESTARTING)
        self.stats.restarts += 1
        log.warning("endpoint %s: restarting after %d consecutive errors", self.name,
                    self._consecutive_errors)
        self._safe(self.close, "close")
        try:
            self.open()
        except Exception as exc:  # noqa: BLE001
            log.error("endpoint %s: reopen failed (%s), marked failed", self.name, exc)
            self._set_state(EndpointState.FAILED)
            return
        self._set_state(EndpointState.RUNNING)

    def _safe(self, fn: Callable[[], None], what: str) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # noqa: BLE001
            self.stats.errors += 1
            log.error("endpoint %s: %s failed: %s: %s", self.name, what, type(exc).__name__, exc)
            return False

    # ---------------------------------------------------------------- stop
    def flush_for_stop(self, deadline: float) -> bool:
        """Flush while the pipeline drains (called from the stopping thread when the endpoint
        is idle); never concurrently with a batch (both hold ``_work``).  False if a batch
        still running kept it from flushing before ``deadline``."""
        if self._state is EndpointState.FAILED:
            return True
        self._flushing = True  # the pipeline must not call this endpoint idle meanwhile
        try:
            if not self._work.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
            try:
                self._safe(self.flush, "flush")
            finally:
                self._work.release()
            return True
        finally:
            self._flushing = False

    @property
    def idle(self) -> bool:
        """Nothing in the inbox and nothing being handled."""
        return not (self._inbox or self._in_flight or self._scheduled or self._flushing)

    @property
    def pending(self) -> int:
        if self._abandoned:
            return 0  # written off as shutdown drops already
        return len(self._inbox) + self._in_flight

    def stop(self, deadline: float) -> None:
        """Drain the inbox, flush and close, giving up at ``deadline`` (time.monotonic()).

        Whatever is still pending at the deadline is counted as dropped (reason shutdown).
        """
        with self._cond:
            self._stopping = True
            if self._state is not EndpointState.FAILED:
                self._set_state(EndpointState.STOPPING)
            self._cond.notify_all()
        remaining = max(0.0, deadline - time.monotonic())
        if self._thread is not None:
            self._thread.join(remaining)
            finished = not self._thread.is_alive()
        else:
            with self._cond:
                finished = self._cond.wait_for(lambda: not self._scheduled, remaining)
        if not finished:
            with self._cond:
                # the inbox, and what the running batch has not accounted for yet
                left = len(self._inbox) + max(0, self._in_flight - self._batch_failures)
                self._inbox.clear()
                self._abandoned = True
                busy = bool(self._in_flight)
            if left:
                self.stats.drop(DropReason.SHUTDOWN, left)
                log.error("endpoint %s: shutdown deadline missed, %d measurements dropped",
                          self.name, left)
            if busy:
                self.stats.inbox_depth = 0
                return  # its worker is inside handle(): it flushes and closes when it returns
        if self._state is not EndpointState.FAILED:
            self._safe(self.flush, "flush")
            self._safe(self.close, "close")
        self._set_state(EndpointState.STOPPED)
        self.stats.inbox_depth = 0


class _LogGate:
    """At most one error log line per second per endpoint; counts what it suppressed."""

    __slots__ = ("_next", "_suppressed")

    def __init__(self) -> None:
        self._next = 0.0
        self._suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 1.0
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self._suppressed = self._suppressed, 0
        return n
