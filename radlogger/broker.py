"""The broker: one thread that drains the queue in batches and publishes through PyPubSub.

PyPubSub's ``sendMessage`` costs several microseconds, so the broker never publishes single
measurements: it drains up to ``batch_max`` items, cuts them into runs of consecutive items
with the same topic (``itertools.groupby``: C speed, and the original order is kept, so a
subtree subscriber sees one device's measurements in the order they were produced), and sends
one message per run with the run as the message's ``batch``, to the callables PyPubSub
resolves for the topic, cached (``radlogger.topictree``: why, and what it saved).

Topics are dotted, ``<device>.<quantity>``.  A subscription pattern is one of:

* an exact topic or a prefix: ``wsa1.iq``, ``wsa1`` (PyPubSub delivers a subtopic's messages to
  the listeners of its parents, so a prefix is a subtree subscription);
* a glob (``*.pulses``, ``pico?.*``, ``*``): PyPubSub has no wildcards, so the broker subscribes
  the listener to each matching topic the first time that topic is published.

Linger (``[daemon] linger``, like Kafka's ``linger.ms``): at low rates every measurement would
otherwise wake the broker and then the endpoint, and on a VM a bare thread wake-up costs 15-30 us
of CPU.  With ``linger > 0`` the broker, once woken, waits ``linger`` before it drains, and while
measurements keep trickling in (fewer than ``LINGER_ITEMS`` per drain) it keeps draining on a
tick of ``linger`` without being woken at all (a broker that is not asleep costs producers
nothing).  An empty tick puts it back to sleep on the queue; a drain of ``LINGER_ITEMS`` or more
means batches form by themselves, so no linger is added.  The price is up to ``linger`` of
latency.  The default, 1.5 ms, is the longest linger whose p99 stayed under 2 ms at 1,000
measurements/s (bench_sweep ``test_low_rate_linger``, 2-core VM): broker + endpoint threads
82 -> 33 us of CPU per measurement, the whole process 159 -> 78 us, p99 245 us -> 1.6 ms; with
the cheaper sleeps of issue 18 (a lock acquire with a timeout here and in ``Device.wait``, the
inbox runner's bell) the whole process 62-68 us, p99 1.6 ms (2 ms: p99 2.1-2.2 ms, too long).
A tick aligned to the producer's period (batches of 2 instead of 1.6 at 1,000/s) was tried and
not kept: fewer batches, but no CPU gain measurable above this VM's noise.  Small batches of a
qualified endpoint run on this thread after the publish (``run_later``; radlogger.runners,
"Inline batches"): 2.5 -> 1.6 thread wake-ups per measurement, p99 still 1.65-1.7 ms at
1.5 ms (2 ms: 2.17 ms), so the default stays 1.5 ms.  Tried, not kept: a producer putting into
a sleeping broker's queue publishing itself (1.0 wake-ups per measurement, p99 0.1 ms): batches
of one cost more CPU (69-110 us per measurement) than the wake-ups save (56-84 us, same runs); a
producer-side linger (2131df5: device threads publish due batches of 2, the broker watches):
1.2 wake-ups per measurement, p99 1.1-1.6 ms, but 43-111 us against 55-99 us interleaved.

Each pipeline owns its own PyPubSub ``Publisher`` so several pipelines (tests, benchmarks)
can live in one process.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import groupby
from operator import attrgetter
from typing import Any

from pubsub.core.publisher import Publisher

from .errorpolicy import LogGate
from .errors import ProtocolError
from .measurement import Measurement
from .options import Configurable
from .queue import LocklessQueue
from .topics import TOPIC_RE, is_glob, pattern_matches, validate_pattern
from .topictree import _flat_add_child, listeners_of  # noqa: F401 - tests check the patch

# the topic grammar is radlogger.topics; its names stay importable here for modules that have
# not moved to it yet (processing.py, isolation/child.py)
__all__ = ["Broker", "pattern_matches", "is_glob", "validate_pattern", "TOPIC_RE"]

log = logging.getLogger(__name__)

#: default broker linger in seconds (chosen from benchmarks/bench_sweep.py, see the docstring)
DEFAULT_LINGER = 0.0015
#: no linger once this many measurements are waiting: a batch has formed already
LINGER_ITEMS = 64
INLINE_ITEMS = 8  # the largest drain whose endpoint batches may run here (runners.py)

_topic_of = attrgetter("topic")
_source_of = attrgetter("source")


class TopicRefused(ProtocolError, ValueError):
    """A measurement's topic cannot be published: ``reason`` is the drop reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason





class Broker:
    """Queue consumer and PyPubSub publisher."""

    def __init__(self, queue: LocklessQueue[Measurement], batch_max: int = 8192,
                 count_published: Callable[..., None] | None = None,
                 max_topics: int = 10_000, linger: float = DEFAULT_LINGER) -> None:
        self.queue = queue
        self.batch_max = batch_max
        #: seconds the broker waits after waking before it drains (see the module docstring);
        #: 0 drains at once
        self.linger = linger
        #: distinct topics the broker accepts; later new topics are dropped (too_many_topics)
        self.max_topics = max_topics
        self.refused_topics = 0
        self._refusal_log = LogGate()
        self.publisher = Publisher()
        # count(source, n, routed): n published; count(source, -n, False[, reason]): n dropped
        self._count_published = count_published or (lambda *args: None)
        self._patterns: list[tuple[str, Any, Callable[..., None]]] = []  # pattern, owner, fn
        self._globs: list[tuple[str, Callable[..., None]]] = []
        self._known_topics: set[str] = set()
        self._routed: dict[str, bool] = {}
        #: topic -> the listeners PyPubSub resolved for it (see the module docstring)
        self._fanout: dict[str, list[Callable[..., None]]] = {}
        self._demand: dict[str, bool] = {}
        self._resolving: set[str] = set()
        # guards subscription changes; re-entrant because demand resolution recurses through
        # processing endpoints' wants() back into has_demand()
        self._lock = threading.RLock()
        self._gate = threading.Lock()  # held while a batch is published; see paused()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._abandon = False
        #: set once the stop deadline has passed: endpoints stop making the broker wait
        self.abandoned = threading.Event()
        #: backpressure: endpoints make the broker wait for room in a full inbox (block mode,
        #: or a source that waits for room is attached); set by the pipeline
        self.wait_for_room = False
        self.busy = False
        #: endpoint batches to run on this thread after the current publish (run_later)
        self._later: list[Callable[[], None]] = []
        self._inline_ok = False  # set by the broker thread around a low-rate publish
        self.publish_errors = 0
        self.batches = 0
        self.messages = 0

    # ---------------------------------------------------------------- subscriptions
    def subscribe(self, owner: Any, pattern: str, listener: Callable[..., None]) -> None:
        """Route topics matching ``pattern`` to ``listener(batch, wait)``: ``wait`` asks the
        listener to wait for room (backpressure) rather than drop."""
        problem = validate_pattern(pattern)
        if problem:
            raise ValueError(problem)
        with self._lock:
            self._patterns.append((pattern, owner, listener))
            self._routed.clear()
            self._fanout.clear()
            self._demand.clear()
            if is_glob(pattern):
                self._globs.append((pattern, listener))
                for topic in self._known_topics:
                    if fnmatch.fnmatchcase(topic, pattern):
                        self.publisher.subscribe(listener, topic)
            else:
                self.publisher.subscribe(listener, pattern)

    def unsubscribe_owner(self, owner: Any) -> None:
        """Remove every subscription of ``owner`` (an endpoint being removed on reload)."""
        with self._lock:
            gone = [fn for _, o, fn in self._patterns if o is owner]
            self._patterns = [t for t in self._patterns if t[1] is not owner]
            # bound methods compare equal (same object and function), not identical
            self._globs = [g for g in self._globs if g[1] not in gone]
            self._routed.clear()
            self._fanout.clear()
            self._demand.clear()

            def mine(listener: Any) -> bool:
                return listener.getCallable() in gone

            self.publisher.unsubAll(listenerFilter=mine)

    def has_subscribers(self, topic: str) -> bool:
        try:
            return self._routed[topic]
        except KeyError:
            pass
        with self._lock:
            routed = any(pattern_matches(p, topic) for p, _, _ in self._patterns)
            self._routed[topic] = routed
        return routed

    def has_demand(self, topic: str) -> bool:
        """Whether some subscriber of ``topic`` will actually use it (transitive laziness).

        A subscriber counts as demand unless its declared ``Configurable.wants(topic)`` says
        no (a subscriber that is no plugin always counts): a processing endpoint answers from the
        demand for its own output, so in ``fft -> calibrate -> sink`` removing the sink idles
        both processors.  A subscription cycle, or a chain deeper than 16, counts as demand.
        """
        try:
            return self._demand[topic]
        except KeyError:
            pass
        with self._lock:
            if topic in self._resolving or len(self._resolving) >= 16:
                return True  # a cycle, or an endless chain of derived topics via a glob
            self._resolving.add(topic)
            try:
                demand = False
                for pattern, owner, _ in self._patterns:
                    if not pattern_matches(pattern, topic):
                        continue
                    if not isinstance(owner, Configurable) or owner.wants(topic):
                        demand = True
                        break
            finally:
                self._resolving.discard(topic)
            if not self._resolving:  # only cache answers not cut short by a cycle
                self._demand[topic] = demand
        return demand

    def known_topics(self) -> list[str]:
        """Every topic published so far (the graph shows them next to the declared ones)."""
        with self._lock:
            return sorted(self._known_topics)

    def subscriptions(self) -> list[tuple[str, Any]]:
        return [(p, o) for p, o, _ in self._patterns]

    def _new_topic(self, topic: str) -> None:
        if not TOPIC_RE.match(topic):
            raise TopicRefused("invalid_topic", f"invalid topic {topic!r}")
        if len(self._known_topics) >= self.max_topics:
            raise TopicRefused("too_many_topics", f"new topic {topic!r} past max_topics = "
                               f"{self.max_topics}")
        with self._lock:
            self._known_topics.add(topic)
            self._fanout.clear()
            for pattern, listener in self._globs:
                if fnmatch.fnmatchcase(topic, pattern):
                    self.publisher.subscribe(listener, topic)

    # ---------------------------------------------------------------- publishing
    def publish(self, batch: list[Measurement]) -> None:
        """Publish one drained batch (also used directly by benchmarks and tests)."""
        fanout = self._fanout
        known = self._known_topics
        has = self.has_subscribers
        count = self._count_published
        wait = self.wait_for_room
        for topic, run in groupby(batch, _topic_of):
            items = list(run)
            if topic not in known:
                try:
                    self._new_topic(topic)
                except TopicRefused as exc:
                    self.refused_topics += 1
                    if self._refusal_log.allow():  # a hostile peer must not flood the log
                        suppressed = self._refusal_log.take_suppressed()
                        log.error("broker: %s from %s, %d measurements dropped%s", exc,
                                  items[0].source, len(items),
                                  f" ({suppressed} more refused topics not logged)"
                                  if suppressed else "")
                    for source, n in Counter(map(_source_of, items)).items():
                        count(source, -n, False, exc.reason)
                    continue
            routed = has(topic)
            if routed:
                try:
                    try:
                        listeners = fanout[topic]
                    except KeyError:
                        listeners = self._listeners(topic)
                    for listener in listeners:
                        listener(items, wait)
                except Exception as exc:  # noqa: BLE001 - one topic must not sink the batch
                    self.publish_errors += 1
                    log.error("broker: publishing %d measurements on %s failed: %s: %s",
                              len(items), topic, type(exc).__name__, exc)
                    for source, n in Counter(map(_source_of, items)).items():
                        count(source, -n, False, "publish_failed")
                    continue
                self.messages += 1
            source = items[0].source
            if len(items) == 1 or all(m.source == source for m in items):
                count(source, len(items), routed)  # one source: no Counter (a low-rate batch)
            else:
                for source, n in Counter(map(_source_of, items)).items():
                    count(source, n, routed)
        self.batches += 1

    def _listeners(self, topic: str) -> list[Callable[..., None]]:
        with self._lock:
            found = self._fanout[topic] = listeners_of(self.publisher, topic)
            return found

    def _run(self) -> None:
        queue = self.queue
        batch_max = self.batch_max
        # the linger's sleep: an acquire with a timeout of a lock nobody releases, the cheapest
        # timed sleep CPython has (measured on the 2-core VM: 17-21 us of CPU per wake-up,
        # time.sleep 19-29 us)
        nap = threading.Lock()
        nap.acquire()
        sleep = nap.acquire
        ticking = False
        while True:
            linger = self.linger
            if ticking and linger and not self._stop:
                sleep(True, linger)  # a tick: producers do not wake a broker that is not asleep
            else:
                queue.wait(0 if self._stop else None)
                if linger and not self._stop and len(queue) < LINGER_ITEMS:
                    sleep(True, linger)  # let a batch form: one wake-up for several items
            self.busy = True  # before items leave the queue: idle must never see neither
            batch = []
            try:
                batch = queue.drain(batch_max)
                if self._abandon:
                    # past the stop deadline: the broker stays the only consumer and counts
                    # what it can no longer deliver
                    for m in batch:
                        self._count_published(m.source, -1, False, "shutdown")
                elif batch:
                    with self._gate:
                        self._inline_ok = len(batch) <= INLINE_ITEMS
                        try:
                            self.publish(batch)
                        finally:
                            self._inline_ok = False
                            self._run_later()
            except Exception:  # noqa: BLE001 - the broker must survive anything
                log.exception("broker: publishing a batch failed")
            finally:
                self.busy = False
            # measurements trickling in: keep draining on a tick of ``linger``; an empty tick
            # goes back to sleeping on the queue, a big batch means no linger is needed
            ticking = 0 < len(batch) < LINGER_ITEMS
            if self._stop and not len(queue):
                return

    def run_later(self, run: Callable[[], None]) -> bool:
        """An endpoint's inbox asks the broker to run a small batch itself, after the publish
        (``radlogger.runners``, "Inline batches"); True if it will.  Broker thread only."""
        if self._inline_ok:
            self._later.append(run)
            return True
        return False

    def _run_later(self) -> None:
        later = self._later
        for run in later:
            try:
                run()
            except Exception:  # noqa: BLE001 - the broker must survive anything
                log.exception("broker: an endpoint's inline batch failed")
        later.clear()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the broker between two batches (rewiring subscriptions on reload).

        Swapping an endpoint must be atomic with respect to publishing: a batch published
        between unsubscribing the old instance and subscribing the new one would miss it, one
        published while both are subscribed would reach it twice.  Costs the broker one
        uncontended lock per batch; while paused, devices keep pushing into the bounded,
        counted queue.
        """
        with self._gate:
            yield

    def start(self) -> None:
        self._stop = False
        self._abandon = False
        self.abandoned.clear()
        self._thread = threading.Thread(target=self._run, name="broker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None, grace: float = 5.0) -> bool:
        """Publish what is queued, then end the thread; True if everything was published.

        When ``timeout`` passes first, the broker abandons the rest: it drains the queue
        itself, counting each measurement as dropped (``shutdown``), and ends; ``grace`` bounds
        that wait.  Only the broker ever takes items out of the queue.
        """
        self._stop = True
        self.queue.interrupt()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        self._abandon = True
        self.abandoned.set()
        self.queue.interrupt()
        self._thread.join(grace)
        if self._thread.is_alive():
            log.error("broker: stuck in a publish past the deadline; %d measurements left in "
                      "the queue", len(self.queue))
        return False

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def idle(self) -> bool:
        return not self.busy and not len(self.queue)
