"""The two kinds of pool worker: a thread, or a worker process; both run a one-stage chain.

:class:`ThreadWorker` runs its :class:`.chain.Chain` on a thread of this process (cheap, shares
the GIL); :class:`ProcessWorker` hands work items to a :class:`.supervisor.WorkerProcess`
(measurements, then the control event ``item SEQ``; the acknowledgement follows the item's
results).  Both report each work item through ``post(worker, seq, outputs, failed, error,
crashed, recreated)``, and a dead worker as ``seq == -1``; the pool (:mod:`.pool`) dispatches,
reorders and counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..backoff import Backoff
from ..measurement import Measurement
from .chain import Chain, StageSpec
from .supervisor import WorkerProcess

__all__ = ["ThreadWorker", "ProcessWorker", "Post"]

log = logging.getLogger("radlogger.workers.pool")

Post = Callable[[Any, int, list[Measurement], int, str | None, str | None, int], None]


def _error(failed: int, crash: str) -> str | None:
    return None if crash or not failed else f"{failed} item(s) failed (see the worker's log)"


class ThreadWorker:
    """A worker thread with its own chain (one stage instance)."""

    mode = "thread"

    def __init__(self, index: int, name: str, spec: StageSpec, routes: Callable[[str], bool],
                 post: Post, publish: Callable[[Measurement], Any]) -> None:
        self.index = index
        self.name = name
        self._spec = spec
        self._routes = routes
        self._post = post
        self._publish = publish
        self._outputs: list[Measurement] = []
        self.chain: Chain | None = None
        self._work: deque[tuple[int, list[Measurement]] | None] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self.outstanding: dict[int, int] = {}  # guarded by the pool's lock
        self.chunks = self.crashes = 0  # counted by the pool
        self.alive = False
        self.stopping = False
        self.pid = None
        self.restarts = 0  # a revived thread is counted by the pool itself
        self.backoff = Backoff(0.05, 5.0)
        self.restart_at = 0.0
        self.failures = 0  # deaths and failed restarts since the last good work item

    def _emit(self, items: list[Measurement]) -> None:
        self._outputs.extend(items)

    def start(self) -> None:
        chain = Chain([self._spec], ["last"], self._emit, self._routes)
        chain.open()
        self.chain = chain
        self.alive = True
        self.stopping = False
        self._work.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pool:{self.name}#{self.index}")
        self._thread.start()

    def submit(self, seq: int, items: list[Measurement]) -> None:
        with self._cv:
            self._work.append((seq, items))
            self._cv.notify()

    def _run(self) -> None:
        chain = self.chain
        assert chain is not None
        while True:
            with self._cv:
                while not self._work:
                    self._cv.wait()
                job = self._work.popleft()
            if job is None:
                return
            seq, items = job
            self._outputs = []
            try:
                chain.run(items)
            except Exception as exc:  # noqa: BLE001 - re-creating the stage failed
                log.error("pool %s#%d: cannot re-create the endpoint: %s", self.name,
                          self.index, exc)
                self.alive = False
                self._post(self, -1, [], 0, None, f"re-create failed: {exc}", 0)
                return
            failed, crash, recreated = chain.take_result()
            self._post(self, seq, self._outputs, failed, _error(failed, crash), crash or None,
                       recreated)

    def flush(self, timeout: float = 10.0) -> bool:
        """Between batches (the pool is idle): flush the stage, publish what that gave."""
        if self.chain is not None and self.alive:
            self._outputs = []
            self.chain.control("flush")
            for m in self._outputs:
                self._publish(m)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        with self._cv:
            self._work.append(None)
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        chain, self.chain = self.chain, None
        if chain is not None:
            chain.finish()
        self.alive = False


class ProcessWorker:
    """A worker process (:class:`WorkerProcess`) with a one-stage chain, fed work items."""

    mode = "process"

    def __init__(self, index: int, name: str, spec: StageSpec, post: Post,
                 publish: Callable[[Measurement], Any], settings: Any) -> None:
        self.index = index
        self._post = post
        self._publish = publish
        self._outputs: list[Measurement] = []  # results of the item being done
        self._unsent: dict[int, tuple[int, str]] = {}
        self.outstanding: dict[int, int] = {}  # guarded by the pool's lock
        self.chunks = self.crashes = 0  # counted by the pool
        self.failures = 0  # deaths since the last good work item (counted by the pool)
        self._broken = -1
        self.process = WorkerProcess(
            f"{name}#{index}", [spec], ["last"], self._outputs.append, on_ack=self._ack,
            on_death=self._death, hang_timeout=settings.hang_timeout,
            start_timeout=settings.startup_timeout, backoff=Backoff(0.05, 5.0))

    @property
    def alive(self) -> bool:
        """Running, and not the incarnation a hand-over just failed on (until the supervisor
        notices that it died, no more work is given to it)."""
        return self.process.state == "running" and self._broken != self.process.incarnation

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def restarts(self) -> int:
        return self.process.restarts

    def start(self) -> None:
        self.process.start()

    def restarting_soon(self) -> bool:
        """Starting, or due to restart now: worth waiting for rather than dispatching past."""
        p = self.process
        return p.state == "starting" or (p.state == "restarting"
                                         and p.restart_at <= time.monotonic() + 0.25)

    def submit(self, seq: int, items: list[Measurement]) -> None:
        # A full queue is waited out while this incarnation runs (a hang is killed by the
        # supervisor, which ends the wait): the pool's inbox fills meanwhile, not the drops.
        unsent = self.process.send_batch(items, lambda: self.alive)
        why = ", ".join(f"{n} {r}" for r, n in unsent.items())
        if unsent:  # before the item's end is sent: its acknowledgement may come at once
            self._unsent[seq] = (sum(unsent.values()), f"not handed to the worker: {why}")
        if not self.process.control("item", seq):
            # A worker that cannot take a work item is broken (like the old stream worker
            # that could not be written to): end it; its death fails what it held, this too
            # (picked while running, so a death now or just before is reported after it).
            self._unsent.pop(seq, None)
            state = self.process.state
            if state == "running":
                self._broken = self.process.incarnation
                log.error("worker %s: cannot hand it work item %d (%s): killed",
                          self.process.name, seq, why or "control")
                self.process.kill()
            elif state in ("stopping", "stopped", "failed"):  # no death will be reported
                self._post(self, seq, [], len(items), None,
                           f"work item not handed to the worker ({why or 'control'})", 0)

    def _ack(self, body: str) -> None:
        """Supervisor thread: a control event was done; the first results in ``_outputs``
        (as many as the acknowledgement says it sent since the last one) are its."""
        parts = body.split(" ", 5)
        name, count = parts[0], int(parts[2]) if len(parts) > 2 else 0
        outputs = self._outputs[:count]
        del self._outputs[:count]
        if name != "item":  # flush (or a broadcast event): results belong to no work item
            for m in outputs:
                self._publish(m)
            return
        seq, failed, recreated = int(parts[1]), int(parts[3]), int(parts[4])
        crash = parts[5] if len(parts) > 5 else ""
        unsent, why = self._unsent.pop(seq, (0, ""))
        failed += unsent
        crash = crash or why
        self._post(self, seq, outputs, failed, _error(failed, crash), crash or None, recreated)

    def _death(self, why: str) -> None:
        self._outputs.clear()
        self._unsent.clear()
        self._post(self, -1, [], 0, None, f"worker process died: {why}", 0)

    def flush(self, timeout: float = 10.0) -> bool:
        return not self.alive or self.process.control_and_wait("flush", timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.process.stop(timeout)
