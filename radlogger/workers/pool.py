"""Endpoint pools: one endpoint type run by N workers (threads or processes), e.g. FFT on
several cores.

The pool is itself an endpoint: it owns the inbox, and each batch it takes is cut into work
items (``chunk`` measurements) dispatched round-robin or to the least-loaded worker, at most
``depth`` items queued per worker.  Results come back in any order; a sequence-number reorder
buffer publishes them in input order (``ordered = yes``), so per-source order is what it was
at the input.  ``handle_batch`` returns when the whole batch is done, so the base class's
accounting (``received == handled + dropped``), draining and stop deadline apply unchanged,
and a busy pool naturally gets bigger batches (more parallel work) from its inbox.

Each worker runs a one-stage :class:`.chain.Chain`, the runner every worker uses, so the pooled
endpoint meets the endpoint base's error policy exactly as it would in a pipeline process.  A
process worker is a :class:`.supervisor.WorkerProcess` (datagram sockets, shared memory,
heartbeats, restart with backoff); a work item is its measurements followed by the control
event ``item SEQ``, whose acknowledgement comes after the item's results.  Crash isolation: an
exception escaping ``handle_batch`` fails that work item only (counted, ``worker_crashed``) and
the stage is re-created; a worker process that dies (segfault, ``os._exit``, OOM kill) or hangs
fails the items it held -- dropped, ``child_crashed``, never handled: their results that came
back before the death are discarded with them -- and is started again with backoff.  Siblings
keep working.  A worker whose queue is full is waited for (the pool's inbox fills meanwhile).

Pooled endpoints must be stateless per measurement (FFT, calibration): each worker has its own
instance, so state accumulated across measurements (integration) would be split N ways.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ..endpoint import NEVER_INLINE, Endpoint
from ..measurement import Measurement
from ..options import Option
from ..plugins import load_class
from ..processing import PublishingEndpoint
from .chain import StageSpec
from .poolworkers import ProcessWorker, ThreadWorker
from .supervisor import WorkerProcess

__all__ = ["EndpointPool", "ThreadWorker", "ProcessWorker"]

log = logging.getLogger(__name__)

#: outputs, failed, error, crash text, drop reason of the failed ones
_Result = tuple[list[Measurement], int, str | None, str | None, str]


class EndpointPool(PublishingEndpoint):
    kind = "pool"
    summary = "runs an endpoint type on N worker threads or processes (e.g. FFT on all cores)"
    options = (
        NEVER_INLINE,  # it waits for room in its worker processes' queues
        Option("endpoint", str, None, "endpoint type each worker runs: entry-point name (fft) "
               "or module:Class", required=True),
        Option("workers", int, 2, "number of workers", min=1, max=64),
        Option("worker_mode", str, "process", "workers are processes (true parallelism, "
               "isolation) or threads (cheap, shared GIL)", choices=("process", "thread")),
        Option("dispatch", str, "least_loaded", "how work items are given to workers",
               choices=("least_loaded", "round_robin")),
        Option("ordered", bool, True, "publish results in input order (reorder buffer)"),
        Option("chunk", int, 1, "measurements per work item", min=1),
        Option("depth", int, 2, "work items queued per worker", min=1),
        Option("startup_timeout", float, 30.0, "seconds a worker process may take to start",
               min=0.1),
        Option("hang_timeout", float, 60.0, "silence (no heartbeat) after which a worker "
               "process is killed and restarted, seconds", min=0.05),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        given = dict(settings or {})
        given.update(kw)
        own = {o.name for o in self.declared_options()} | {"driver", "type"}
        super().__init__(name, {k: v for k, v in given.items() if k in own})
        self.inner_options = {k: v for k, v in given.items() if k not in own}
        try:
            self.inner_class = load_class(self.settings.endpoint, base=Endpoint)
        except (LookupError, TypeError) as exc:
            raise ValueError(f"endpoint {name}: {exc}") from None
        # Validate the inner options now, with the inner class's own checks and messages
        # (constructing an endpoint opens nothing), and learn what it publishes.
        probe = self.inner_class(name, self.inner_options)
        if self.settings.worker_mode == "process":
            try:
                json.dumps(self.inner_options)
            except TypeError as exc:
                raise ValueError(f"endpoint {name}: options of a process pool must be plain "
                                 f"values (text, numbers, lists): {exc}") from None
        self.produces = tuple(probe.produces)
        self.spec = StageSpec(self.settings.endpoint, name, self.inner_options)
        self.workers: list[Any] = []
        self._cv = threading.Condition(threading.Lock())
        self._done: dict[int, _Result] = {}
        self._rr = 0
        self.crashes = 0
        self._restarts = 0  # stages re-created, threads revived, processes of closed workers
        self.chunks = 0
        self._last_crash_log = 0.0
        self._closed: dict[str, int] = {}  # hangs, lost, would_block of closed workers

    @property
    def restarts(self) -> int:
        return self._restarts + sum(int(w.restarts) for w in self.workers)

    def worker_processes(self) -> list[WorkerProcess]:
        """The live set of this pool's processes (a :class:`.supervisor.WorkerHost`)."""
        return [w.process for w in self.workers if isinstance(w, ProcessWorker)]

    # ---------------------------------------------------------------- workers
    def _new_worker(self, index: int) -> Any:
        if self.settings.worker_mode == "thread":
            return ThreadWorker(index, self.name, self.spec, self.has_subscribers, self._post,
                                self.publish)
        return ProcessWorker(index, self.name, self.spec, self._post, self.publish,
                             self.settings)

    def open(self) -> None:
        self.workers = []
        try:
            for i in range(self.settings.workers):
                w = self._new_worker(i)
                self.workers.append(w)
                w.start()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        for w in self.workers:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - stop the others anyway
                log.exception("pool %s: stopping worker %d failed", self.name, w.index)
            self._restarts += w.restarts
            if isinstance(w, ProcessWorker):
                for key, value in _process_counts(w.process).items():
                    self._closed[key] = self._closed.get(key, 0) + value
        self.workers = []

    def flush(self) -> None:
        for w in self.workers:
            if not w.flush():
                log.warning("pool %s: worker %d did not confirm its flush", self.name, w.index)

    def _post(self, worker: Any, seq: int, outputs: list[Measurement], failed: int,
              error: str | None, crashed: str | None, recreated: int) -> None:
        """From worker threads: a finished work item, or (seq -1) a worker that died."""
        with self._cv:
            if seq == -1:
                # a dead process drops what it held as child_crashed; a worker thread whose
                # stage could not be re-created (no process died), as worker_crashed
                reason = "child_crashed" if isinstance(worker, ProcessWorker) \
                    else "worker_crashed"
                for s, n in worker.outstanding.items():
                    self._done[s] = ([], n, None, crashed, reason)
                worker.outstanding.clear()
                self.crashes += 1
                worker.crashes += 1
                if isinstance(worker, ThreadWorker):
                    # A first death restarts at once; one that keeps dying backs off.
                    delay = worker.backoff.next_delay() if worker.failures else 0.0
                    worker.restart_at = time.monotonic() + delay
                worker.failures += 1
            else:
                n = worker.outstanding.pop(seq, None)
                if n is None:
                    return  # already failed when the worker died
                self._done[seq] = (outputs, failed, error, crashed,
                                   "worker_crashed" if crashed else "endpoint_failed")
                worker.chunks += 1
                self._restarts += recreated
                if recreated:  # the stage raised and was re-created: a crash of the worker
                    self.crashes += 1
                    worker.crashes += 1
                elif not crashed:
                    worker.failures = 0
                    if isinstance(worker, ThreadWorker):
                        worker.backoff.reset()
            self._cv.notify_all()

    def _revive(self) -> None:
        """Restart dead worker threads (processes restart themselves: wait for those due)."""
        now = time.monotonic()
        for w in self.workers:
            if isinstance(w, ProcessWorker):
                deadline = now + self.settings.startup_timeout
                while w.restarting_soon() and time.monotonic() < deadline:
                    with self._cv:
                        self._cv.wait(0.01)
                continue
            if w.alive or w.stopping or now < w.restart_at:
                continue
            try:
                w.stop(1.0)
                w.start()
            except Exception as exc:  # noqa: BLE001 - try again later
                w.failures += 1
                w.restart_at = time.monotonic() + w.backoff.next_delay()
                log.error("pool %s: restarting worker %d failed: %s", self.name, w.index, exc)
                continue
            self._restarts += 1
            log.warning("pool %s: worker %d restarted", self.name, w.index)

    def _hopeless(self) -> bool:
        """No worker alive and each failed to start several times in a row."""
        return not any(w.alive for w in self.workers) and \
            all(w.failures >= 5 for w in self.workers)

    def _pick(self, seq: int, n: int) -> Any:
        """Under the lock: the worker for the next work item (reserved), or None to wait."""
        workers = self.workers
        depth = self.settings.depth
        if self.settings.dispatch == "round_robin":
            for k in range(len(workers)):
                w = workers[(self._rr + k) % len(workers)]
                if w.alive:
                    if len(w.outstanding) >= depth:
                        return None
                    self._rr = (self._rr + k + 1) % len(workers)
                    break
            else:
                return None
        else:
            free = [w for w in workers if w.alive and len(w.outstanding) < depth]
            if not free:
                return None
            w = min(free, key=lambda x: sum(x.outstanding.values()))
        w.outstanding[seq] = n
        return w

    # ---------------------------------------------------------------- the work
    def handle_batch(self, batch: list[Measurement]) -> None:
        size = self.settings.chunk
        chunks = [batch[i:i + size] for i in range(0, len(batch), size)]
        total = len(chunks)
        ordered = self.settings.ordered
        results: dict[int, _Result] = {}
        sent = finished = 0
        while finished < total:
            if not all(w.alive for w in self.workers):
                self._revive()
                if sent < total and self._hopeless():
                    for seq in range(sent, total):
                        results[seq] = ([], len(chunks[seq]), None,
                                        "no worker could be started", "worker_crashed")
                    sent = total
            while sent < total:
                with self._cv:
                    w = self._pick(sent, len(chunks[sent]))
                if w is None:
                    break
                w.submit(sent, chunks[sent])
                sent += 1
            with self._cv:
                if not self._done:
                    self._cv.wait(0.2)
                done, self._done = self._done, {}
            results.update(done)
            if ordered:
                while finished in results:
                    self._finish(results.pop(finished))
                    finished += 1
            else:
                for seq in list(results):
                    self._finish(results.pop(seq))
                    finished += 1
        self.chunks += total

    def _finish(self, result: _Result) -> None:
        outputs, failed, error, crashed, reason = result
        if failed:
            self.count_dropped(reason, failed)
            self.stats.errors += 1
            now = time.monotonic()
            if now - self._last_crash_log >= 1.0:
                self._last_crash_log = now
                log.error("pool %s: %d measurement(s) lost: %s", self.name, failed,
                          crashed or error)
        for m in outputs:
            self.publish(m)

    def counters(self) -> dict[str, int | float]:
        """The pool's own counters, and each worker's as ``worker<i>.<name>``.  ``hangs``,
        ``lost`` (sent to a process that died before confirming them) and ``would_block``
        (not handed to a process whose queue stayed full) add up the worker processes'."""
        totals = dict(self._closed)
        for p in self.worker_processes():
            for key, value in _process_counts(p).items():
                totals[key] = totals.get(key, 0) + value
        out: dict[str, int | float] = {
            **super().counters(), "crashes": self.crashes, "restarts": self.restarts,
            "hangs": totals.get("hangs", 0), "lost": totals.get("lost", 0),
            "would_block": totals.get("would_block", 0),
            "chunks": self.chunks, "workers_alive": sum(bool(w.alive) for w in self.workers)}
        for w in self.workers:
            out.update({f"worker{w.index}.pid": w.pid or 0,
                        f"worker{w.index}.queued": len(w.outstanding),
                        f"worker{w.index}.chunks": w.chunks,
                        f"worker{w.index}.crashes": w.crashes})
        return out


def _process_counts(p: WorkerProcess) -> dict[str, int]:
    return {"hangs": p.hangs, "lost": p.lost, "would_block": p.undelivered["would_block"]}
