"""The endpoint base: the hooks a storage, processing or forwarding plugin implements.

An endpoint receives batches through its :class:`~radlogger.inbox.Inbox` (bounded, woken
through a condition, overflow counted), run by a :mod:`runner <radlogger.runners>` (its own
thread, ``mode = thread``, or the pipeline's shared pool, ``mode = shared``).  A plugin
implements the hooks: :meth:`open`, :meth:`handle` or :meth:`handle_batch`, :meth:`flush`,
:meth:`close`, :meth:`counters`, and where it waits on something outside the pipeline
(a network broker), :meth:`deadline` and :meth:`stalled`.  Endpoints that publish derived
measurements derive from :class:`radlogger.processing.PublishingEndpoint`.

Error isolation: an exception from ``handle`` is counted against the measurement (dropped,
reason ``endpoint_failed``) and the :class:`~radlogger.errorpolicy.ErrorPolicy` decides, after
``max_errors`` in a row: ``continue``, ``restart`` (close + open), or ``fail`` (the endpoint
stops; whatever reaches it is counted as dropped).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .errorpolicy import ErrorPolicy
from .inbox import Inbox
from .measurement import Measurement
from .options import Configurable, Option
from .queue import DropReason
from .runners import Runner, SharedRunner, ThreadRunner

__all__ = ["Endpoint", "EndpointState"]

log = logging.getLogger(__name__)


class EndpointState(str, enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


_INLINE_HELP = ("mode = thread at low rates: small batches may run on the broker's thread (one "
                "thread wake-up less per batch) while each takes at most this many seconds; one "
                "over it sends the endpoint back to its own thread (0 = never)")
#: ``inline_budget`` of a plugin that waits on the outside (a network, a remote peer): its
#: batches never run on the broker's (or a device's) thread, whatever its record
#: (radlogger.runners, "Inline batches"); a plugin puts it in its ``options``
NEVER_INLINE = Option("inline_budget", float, 0.0, _INLINE_HELP + "; 0 here: this endpoint "
                      "waits on a network or another process", min=0, max=0.1)


class Endpoint(Configurable):
    """Base class of endpoints (log, storage, processing, forwarding)."""

    #: topic templates this endpoint publishes, e.g. ``("{device}.spectrum",)``; for the graph
    produces: tuple[str, ...] = ()

    base_options = (
        Option("subscribe", list, [], "topic patterns: exact topic, subtree prefix, or glob "
               "(* ? [..]); comma separated"),
        Option("mode", str, "thread", "run on a dedicated thread, or on the pipeline's shared "
               "thread pool ('pool' is the old spelling of 'shared')",
               choices=("thread", "shared", "pool")),
        Option("inbox_size", int, 65536, "measurements the inbox holds before dropping", min=1),
        Option("inbox_policy", str, "drop_newest", "what a full inbox drops",
               choices=("drop_newest", "drop_oldest")),
        Option("batch_max", int, 4096, "largest batch handed to the endpoint at once", min=1),
        Option("on_error", str, "restart", "after max_errors consecutive errors",
               choices=("continue", "restart", "fail")),
        Option("max_errors", int, 10, "consecutive errors that trigger on_error", min=1),
        Option("full_timeout", float, 10.0, "with backpressure (queue_policy = block, or a "
               "finite source) the broker waits this long for room in a full inbox; then the "
               "endpoint counts as stalled and what does not fit is dropped (endpoint_stalled) "
               "until it takes again", min=0.001, max=3600),
        Option("inline_budget", float, 0.0005, _INLINE_HELP, min=0, max=0.1),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        from .stats import EndpointStats  # local: stats is a leaf module, no cycle

        self.stats = EndpointStats(name)
        self.mode: str = s.mode
        if self.mode == "pool":
            log.warning("endpoint %s: mode = pool is now spelled mode = shared (the shared "
                        "thread pool; type = pool is the process pool)", name)
            self.mode = "shared"
        self.inbox_size: int = s.inbox_size
        self.batch_max: int = s.batch_max
        self.full_timeout: float = s.full_timeout
        self.inline_budget: float = s.inline_budget
        self.inbox = Inbox(s.inbox_size, self.stats, s.inbox_policy == "drop_oldest")
        self.policy = ErrorPolicy(name, self.kind, s.on_error, s.max_errors)
        self._work = threading.Lock()  # one batch (or flush) at a time, whoever runs it
        self._flushing = False
        self._last_batch: list[Measurement] | None = None
        self._runner: Runner | None = None
        self._executor: Executor | None = None
        self._state = EndpointState.STOPPED
        self._batch_failures = 0
        #: the last error in words, and its wall-clock time (ns); for status
        self.last_error = ""
        self.last_error_ns = 0

    # ---------------------------------------------------------------- the plugin's hooks
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

    def deadline(self, at: float | None) -> None:
        """The pipeline flushes or stops this endpoint by ``at`` (``time.monotonic()``): an
        endpoint that waits on something outside (a network broker) gives up a little before,
        leaving time to count what it could not send.  ``None``: the flush is over and the
        endpoint goes on (a reload)."""

    def stalled(self) -> bool:
        """True while only waiting on something outside that draining cannot help (a broker
        that is down): the pipeline's stop then goes on and :meth:`stop` counts the rest."""
        return False

    def attach_outlet(self, outlet: Any, has_subscribers: Callable[[str], bool]) -> None:
        """Where derived measurements go: used by publishing endpoints, ignored here."""

    # ---------------------------------------------------------------- the pipeline's side
    def bind(self, outlet: Any, has_subscribers: Callable[[str], bool],
             executor: Executor | None) -> None:
        """Attach to a pipeline (called by the pipeline, before :meth:`start`): the outlet and
        demand question of publishing endpoints, the executor of ``mode = shared``."""
        self.attach_outlet(outlet, has_subscribers)
        self._executor = executor

    def offer(self, batch: list[Measurement], wait: bool = False) -> None:
        """Called by the broker thread (through PyPubSub) with one topic's batch; with
        ``wait`` a full inbox makes the broker wait for room, up to ``full_timeout``."""
        if batch is self._last_batch:
            return  # the same publish reached us again through a parent topic
        self._last_batch = batch
        self.stats.received += len(batch)
        if self._state is EndpointState.FAILED:
            self.stats.drop(DropReason.ENDPOINT_FAILED, len(batch))
            return
        self.inbox.put(batch, time.monotonic() + self.full_timeout if wait else None)

    def start(self) -> None:
        self.inbox.reset()
        self.policy.reset()
        self.open()
        self._set_state(EndpointState.RUNNING)
        if self.mode == "shared" and self._executor is not None:
            self._runner = SharedRunner(self.name, self.inbox, self.batch_max, self._process,
                                        self._finish_late, self._executor)
        else:
            self._runner = ThreadRunner(self.name, self.inbox, self.batch_max, self._process,
                                        self._finish_late, self.inline_budget)
        self._runner.start()

    def _set_state(self, state: EndpointState) -> None:
        self._state = state
        self.stats.state = state.value

    @property
    def state(self) -> EndpointState:
        return self._state

    @property
    def inbox_depth(self) -> int:
        return len(self.inbox)

    # ---------------------------------------------------------------- batches and accounting
    def _finish_late(self) -> None:
        """The runner outlived a missed stop deadline: it flushes and closes the endpoint."""
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
            self.inbox.done()
            return
        self._batch_failures = 0
        try:
            self.handle_batch(batch)
        except Exception as exc:  # noqa: BLE001 - the endpoint's bug must not kill the runner
            self.count_dropped(DropReason.ENDPOINT_FAILED, n - self._batch_failures)
            self.stats.failed_batches += 1
            self._on_error(exc, f"batch of {n} on {batch[0].topic}" if batch else "batch")
        else:
            if self._batch_failures == 0:
                self.policy.reset()
        # under the lock: a stop() that misses its deadline writes off the rest of this batch
        # atomically with respect to this accounting (exactly one of the two counts it)
        inbox = self.inbox
        with inbox.cond:
            if not inbox.abandoned:
                self.stats.handled += n - self._batch_failures
            inbox.in_flight = 0

    def process_batch(self, batch: list[Measurement]) -> None:
        """Handle ``batch`` with the base's error isolation and accounting.

        Public for runners other than the endpoint's own: a worker child process, a pool.
        """
        self._process(batch)

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """From ``handle_batch``: ``n`` measurements of this batch were dropped for ``reason``
        without being an endpoint error (no error policy, no restart), e.g. a child process
        that could not take them.  They are not counted as handled."""
        with self.inbox.cond:
            if self.inbox.abandoned:
                return  # the rest of this batch was written off at the stop deadline
            self._batch_failures += n
            self.stats.drop(reason, n)

    def count_lost(self, reason: str, n: int) -> None:
        """``n`` measurements counted as handled earlier were lost afterwards (a store that
        buffered them until a flush that failed for good, a child process that died): move
        them from handled to dropped.  Any thread: the runner adds to ``handled`` under the
        same lock (never call it while holding ``inbox.cond``)."""
        if n > 0:
            with self.inbox.cond:
                self.stats.handled -= n
                self.stats.drop(reason, n)

    def item_failed(self, m: Measurement, exc: BaseException) -> None:
        """Count one measurement the endpoint could not handle (called from handle_batch)."""
        self.count_dropped(DropReason.ENDPOINT_FAILED)
        self._on_error(exc, f"{m.topic} seq={m.seq}")

    def _note_error(self, text: str) -> None:
        self.stats.errors += 1
        self.last_error = text[:300]
        self.last_error_ns = time.time_ns()

    def _on_error(self, exc: BaseException, context: str) -> None:
        self._note_error(f"{context}: {type(exc).__name__}: {exc}")
        action = self.policy.failed(exc, context, self.stats.errors, self.inbox.stopping)
        if action == ErrorPolicy.RESTART:
            self._restart()
        elif action == ErrorPolicy.FAIL:
            log.error("endpoint %s: %d consecutive errors, marked failed", self.name,
                      self.policy.consecutive)
            self._set_state(EndpointState.FAILED)
            self._safe(self.close, "close")
        if action is not None:
            self.policy.reset()

    def _restart(self) -> None:
        self._set_state(EndpointState.RESTARTING)
        self.stats.restarts += 1
        log.warning("endpoint %s: restarting after %d consecutive errors", self.name,
                    self.policy.consecutive)
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
            self._note_error(f"{what}: {type(exc).__name__}: {exc}")
            log.error("endpoint %s: %s failed: %s: %s", self.name, what, type(exc).__name__, exc)
            return False

    # ---------------------------------------------------------------- stop
    def flush_for_stop(self, deadline: float) -> bool:
        """Flush while the pipeline drains (called from the stopping thread when the endpoint
        is idle); never concurrently with a batch (both hold ``_work``).  False if a batch
        still running kept it from flushing before ``deadline``."""
        if self._state is EndpointState.FAILED:
            return True
        self.deadline(deadline)
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
            self.deadline(None)

    @property
    def idle(self) -> bool:
        """Nothing in the inbox and nothing being handled (or only waiting on the outside)."""
        return (self.inbox.idle and not self._flushing) or self.stalled()

    @property
    def pending(self) -> int:
        if self.inbox.abandoned:
            return 0  # written off as shutdown drops already
        return len(self.inbox) + self.inbox.in_flight

    def stop(self, deadline: float) -> None:
        """Drain the inbox, flush and close, giving up at ``deadline`` (time.monotonic()).

        Whatever is still pending at the deadline is counted as dropped (reason shutdown).
        """
        self.deadline(deadline)
        if self._state is not EndpointState.FAILED:
            self._set_state(EndpointState.STOPPING)
        self.inbox.request_stop()
        runner = self._runner
        finished = runner is None or runner.join(max(0.0, deadline - time.monotonic()))
        if not finished:
            left, busy = self.inbox.write_off(self._batch_failures)
            if left:
                self.stats.drop(DropReason.SHUTDOWN, left)
                log.error("endpoint %s: shutdown deadline missed, %d measurements dropped",
                          self.name, left)
            if busy:
                self.stats.inbox_depth = 0
                return  # its runner is inside handle(): it flushes and closes when it returns
        if self._state is not EndpointState.FAILED:
            self._safe(self.flush, "flush")
            self._safe(self.close, "close")
        self._set_state(EndpointState.STOPPED)
        self.stats.inbox_depth = 0
