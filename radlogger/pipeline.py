"""The pipeline: devices -> queue -> broker -> endpoints, and its ordered lifecycle.

Start order is endpoints, broker, devices (nothing produced before someone can take it).
Stop order is the reverse with draining in between: devices stop; the broker and the endpoints
run until the queue, every inbox and every in-flight batch are empty (processing endpoints may
publish more while that happens, so quiescence is checked as a whole); then the queue is closed,
endpoints flush and close.  Everything is bounded by one deadline; what misses it is counted as
dropped with reason ``shutdown``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .broker import Broker
from .device import Device, Outlet
from .endpoint import Endpoint
from .losses import LossReport
from .measurement import Measurement
from .options import Configurable
from .queue import DropReason, LocklessQueue, Overflow
from .registries import Registries
from .stats import EndpointStats, ProducerStats

__all__ = ["Pipeline", "own_counters", "tune_gc"]

log = logging.getLogger(__name__)


def tune_gc(threshold0: int = 50_000) -> None:
    """Make the cyclic garbage collector fit a high allocation rate.

    Every measurement is a new object; at a million per second CPython's default gen-0
    threshold (700 allocations) runs ~1,400 collections/s, and the older generations rescan
    every measurement waiting in the queue and inboxes.  Raising the threshold and freezing the
    objects created at start-up (modules, plugins, configuration) removed about a third of the
    per-measurement cost in ``benchmarks/bench_pipeline.py``.  Measurements form no reference
    cycles, so collection is rarely needed at all; memory stays bounded by the queue and inboxes.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(threshold0, max(g1, 20), max(g2, 100))


def own_counters(component: Configurable) -> dict[str, Any]:
    """A plugin's own per-reason counters (``counters()``); a plugin's bug there must not
    break stats or status, so it becomes a counter of its own."""
    try:
        return dict(component.counters())
    except Exception as exc:  # noqa: BLE001
        return {"counters_error": f"{type(exc).__name__}: {exc}"[:200]}


class Pipeline:
    """One dataflow graph.  The daemon owns one; tests and benchmarks build their own."""

    def __init__(self, queue_size: int = 65536, overflow: Overflow | str = Overflow.DROP_NEWEST,
                 block_timeout: float = 1.0, batch_max: int = 8192, pool_workers: int = 2,
                 max_topics: int = 10_000) -> None:
        self.queue: LocklessQueue[Measurement] = LocklessQueue(
            queue_size, overflow, block_timeout, on_drop=self._on_queue_drop)
        self.broker = Broker(self.queue, batch_max, self._count_published, max_topics)
        self.producers: dict[str, ProducerStats] = {}
        self.devices: dict[str, Device] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.pool_workers = pool_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.running = False
        self.losses = LossReport(self._loss_settings)
        #: how running components find each other (see radlogger.registries)
        self.registries = Registries()

    # ---------------------------------------------------------------- accounting
    def _producer(self, name: str) -> ProducerStats:
        with self._lock:
            stats = self.producers.get(name)
            if stats is None:
                stats = self.producers[name] = ProducerStats(name)
                stats.on_first_drop = self.losses.first_drop
            return stats

    def _loss_settings(self, role: str, name: str) -> dict[str, Any]:
        """The settings a loss warning's fix names (queue_size, inbox_size ...)."""
        found: dict[str, Any] = {"queue_size": self.queue.size,
                                 "max_topics": self.broker.max_topics}
        component = self.endpoints.get(name) or self.devices.get(name)
        if component is not None:
            found.update(component.settings)
        return found

    def _on_queue_drop(self, m: Measurement, reason: DropReason) -> None:
        self._producer(m.source).drop(reason)

    def _count_published(self, source: str, n: int, routed: bool,
                         reason: str = "invalid_topic") -> None:
        stats = self.producers.get(source) or self._producer(source)
        if n < 0:  # the broker could not deliver them: invalid topic, failed publish, shutdown
            stats.drop(reason, -n)
            return
        stats.published += n
        if not routed:
            stats.unrouted += n

    def outlet(self, name: str) -> Outlet:
        """A push handle for a producer named ``name`` (live devices, tests): the queue's
        overflow policy applies."""
        return Outlet(self.queue.put, self._producer(name), self.queue.put_many)

    def waiting_outlet(self, device: Device) -> Outlet:
        """For a source that waits for room instead of losing data (a finite one): it is
        throttled to the pipeline's pace and gives up, counted, only when it is stopped."""
        q = self.queue

        def stopping() -> bool:
            return device.stopping
        return Outlet(lambda m: q.put_wait(m, None, stopping), self._producer(device.name),
                      lambda ms: q.put_many_wait(ms, None, stopping))

    def derived_outlet(self, name: str) -> Outlet:
        """For a processing endpoint: its output goes past the queue's bound and never waits,
        so in block mode the broker (waiting on the endpoint's inbox) and the endpoint (which
        would wait on the queue only the broker empties) cannot wait on each other."""
        return Outlet(self.queue.put_derived_one, self._producer(name), self.queue.put_derived)

    def _update_backpressure(self) -> None:
        """The broker waits for room in endpoint inboxes when the queue policy is block or a
        source that waits for room is attached: else a throttled source would only move the
        loss from the queue to the inboxes."""
        self.broker.wait_for_room = (self.queue.overflow is Overflow.BLOCK or any(
            d.waits_for_room for d in self.devices.values()))

    # ---------------------------------------------------------------- composition
    def add_device(self, device: Device) -> Device:
        if device.name in self.devices or device.name in self.endpoints:
            raise ValueError(f"duplicate name {device.name!r}")
        device.outlet = (self.waiting_outlet(device) if device.waits_for_room
                         else self.outlet(device.name))
        self.devices[device.name] = device
        self._update_backpressure()
        if self.running:
            self.attach(device)
            device.start()
        return device

    def add_endpoint(self, endpoint: Endpoint, subscribe: list[str] | None = None) -> Endpoint:
        if endpoint.name in self.endpoints or endpoint.name in self.devices:
            raise ValueError(f"duplicate name {endpoint.name!r}")
        patterns = list(subscribe if subscribe is not None else endpoint.settings.subscribe)
        if endpoint.mode == "shared" and self._pool is None:
            self._pool = ThreadPoolExecutor(self.pool_workers, thread_name_prefix="endpoint-pool")
        endpoint.inbox.cancel = self.broker.abandoned
        endpoint.inbox.run_later = self.broker.run_later
        endpoint.bind(self.derived_outlet(endpoint.name), self.broker.has_demand,
                      self._pool if endpoint.mode == "shared" else None)
        endpoint.stats.on_first_drop = self.losses.first_drop
        self._producer(endpoint.name).role = "output of endpoint"
        self.endpoints[endpoint.name] = endpoint
        if self.running:
            self.attach(endpoint)
            endpoint.start()
        for pattern in patterns:
            self.broker.subscribe(endpoint, pattern, endpoint.offer)
        return endpoint

    def remove_device(self, name: str, timeout: float = 5.0) -> None:
        device = self.devices.pop(name)
        device.stop(timeout)
        self.detach(device)
        self._update_backpressure()

    def remove_endpoint(self, name: str, deadline: float) -> None:
        """Unsubscribe (between two broker batches, so no batch is half delivered), drain, close."""
        endpoint = self.endpoints[name]
        with self.broker.paused():
            self.broker.unsubscribe_owner(endpoint)
        endpoint.stop(deadline)
        self.detach(endpoint)
        del self.endpoints[name]

    # ---------------------------------------------------------------- registration
    def attach(self, component: Configurable) -> None:
        """``component`` starts running here: its ``attach`` registers it (never its
        constructor: the loader and a reload build instances that never run)."""
        component.attach(self.registries)

    def detach(self, component: Configurable) -> None:
        """``component`` stopped (or was taken out): undo :meth:`attach`."""
        try:
            component.detach(self.registries)
        except Exception:  # noqa: BLE001 - one plugin's bug must not break a stop
            log.exception("%s: detach failed", component.name)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        for endpoint in self.endpoints.values():
            self.attach(endpoint)
            endpoint.start()
        self.broker.start()
        self.running = True
        for device in self.devices.values():
            self.attach(device)
            device.start()

    def quiescent(self) -> bool:
        return self.broker.idle and all(e.idle for e in self.endpoints.values())

    def wait_quiescent(self, deadline: float) -> bool:
        """Wait until queue, broker and every endpoint are idle (or the deadline)."""
        say_at = time.monotonic() + 1.0
        while not self.quiescent():
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= say_at:  # a stop that takes a while says what it waits for
                say_at = now + 2.0
                self._say_waiting(deadline - now)
            time.sleep(0.002)  # shutdown only: the daemon is not idle while draining
        # A processing endpoint may have published right at the end: check once more.
        return self.quiescent()

    def _say_waiting(self, left: float) -> None:
        if not self.broker.idle:
            log.info("stopping: waiting for the broker: %d queued (%.0f s left)", len(self.queue),
                     left)
        for e in list(self.endpoints.values()):
            if not e.idle:
                log.info("stopping: waiting for %s: %d unsent%s (%.0f s left)", e.name, e.pending,
                         f", {e.last_error}" if e.last_error else "", left)

    def _flush_outputs(self, deadline: float) -> bool:
        """Flush endpoints while the queue is still open, so what a processing endpoint holds
        (a partial integration) is published and travels down its chain, until nothing new
        is produced (a chain of k processors needs k rounds)."""
        for _ in range(8):
            before = sum(s.produced for s in list(self.producers.values()))
            for endpoint in list(self.endpoints.values()):
                if not endpoint.flush_for_stop(deadline):
                    return False
            if not self.wait_quiescent(deadline):
                return False
            if sum(s.produced for s in list(self.producers.values())) == before:
                return True
        return self.quiescent()

    def stop(self, deadline_s: float = 10.0) -> bool:
        """Ordered, idempotent stop; True if everything drained before the deadline."""
        deadline = time.monotonic() + deadline_s
        for device in self.devices.values():
            device.request_stop()  # ask all first so they stop in parallel
        for device in self.devices.values():
            if not device.stop(max(0.0, deadline - time.monotonic())):
                log.error("device %s did not stop before the deadline", device.name)
        drained = self.wait_quiescent(deadline) and self._flush_outputs(deadline)
        self.queue.close()  # late puts are counted as shutdown drops from here on
        if not self.broker.stop(max(0.0, deadline - time.monotonic())):
            drained = False  # the broker counted what it could not publish
        if not self.broker.alive:
            # the broker has ended, so this thread is the only consumer now: a put that
            # passed the capacity check just before close() may have landed after its last
            # drain (a device still running past its deadline)
            for item in self.queue.drain(len(self.queue) + 1024):
                self._producer(item.source).drop(DropReason.SHUTDOWN)
                drained = False
        for endpoint in self.endpoints.values():
            endpoint.stop(deadline)
        for component in [*self.devices.values(), *self.endpoints.values()]:
            self.detach(component)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.running = False
        return drained

    # ---------------------------------------------------------------- stats
    def snapshot(self) -> dict[str, Any]:
        producers = {name: s.snapshot() for name, s in list(self.producers.items())}
        endpoints: dict[str, Any] = {}
        for name, e in list(self.endpoints.items()):
            e.stats.inbox_depth = e.inbox_depth
            endpoints[name] = snap = e.stats.snapshot()
            snap.update(kind=e.kind, own=own_counters(e), last_error=e.last_error,
                        last_error_ns=e.last_error_ns)
        for name, d in list(self.devices.items()):
            if name in producers:
                producers[name].update(kind=d.kind, own=own_counters(d),
                                       last_error=d.last_error, last_error_ns=d.last_error_ns)
        q = self.queue
        return {
            "queue": {"depth": len(q), "capacity": q.size, "overflow": q.overflow.value,
                      "high_water": q.high_water, "dropped": q.dropped,
                      "waiting_producers": q.waiting_producers,
                      "overshoot_high_water": q.overshoot_high_water},
            "broker": {"batches": self.broker.batches, "messages": self.broker.messages},
            "producers": producers,
            "endpoints": endpoints,
        }

    def balanced(self) -> bool:
        """The accounting invariant, exact once stopped (``queued``/``pending`` are zero)."""
        queued = len(self.queue)
        return (all(s.balanced() for s in self.producers.values()) if not queued else False) \
            and all(e.stats.balanced(e.pending) for e in self.endpoints.values())

    def endpoint_stats(self, name: str) -> EndpointStats:
        return self.endpoints[name].stats
