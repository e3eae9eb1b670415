"""The device base: one driver thread per instrument, with a reconnecting lifecycle.

States: stopped -> connecting -> running -> (error -> backoff -> connecting ...) -> stopping
-> stopped; ``finished`` when a finite source (a replay, a counted synthetic run) has no more
data; ``failed`` when ``max_retries`` reconnects were spent.

A driver implements the template methods ``open()``, ``poll()`` and ``close()`` (and
``interrupt()`` when ``poll`` can block for long).  ``poll`` reads a bounded amount and calls
:meth:`emit`/:meth:`push`; every exception it raises is caught, counted and logged here, the
connection is closed and retried with backoff.  A device never blocks on an endpoint: pushing
goes into the bounded queue, whose overflow policy decides.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .backoff import Backoff
from .errors import RadloggerError
from .measurement import Measurement, now_ns
from .options import Configurable, Option
from .stats import ProducerStats

__all__ = ["Device", "DeviceState", "DeviceDone", "Outlet"]

log = logging.getLogger(__name__)


#: declared options that tell which instrument a device is, for its ``connected`` line
_IDENTITY = ("host", "port", "serial", "firmware", "path", "url")


class DeviceState(str, enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    RUNNING = "running"
    ERROR = "error"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"


class DeviceDone(RadloggerError):
    """Raised by ``poll()`` of a finite source when it has no more data (not an error)."""


class Outlet:
    """Where a producer puts measurements: the pipeline's queue plus the producer's stats.

    Stamps each measurement with the producer's sequence number so consumers can check
    order and gaps.  Drops are charged by the queue's ``on_drop`` callback, not here.
    """

    __slots__ = ("stats", "_put", "_put_many")

    def __init__(self, put: Callable[[Measurement], bool], stats: ProducerStats,
                 put_many: Callable[[list[Measurement]], int] | None = None) -> None:
        self._put = put
        self._put_many = put_many
        self.stats = stats

    def push(self, m: Measurement) -> bool:
        stats = self.stats
        m.seq = stats.produced
        stats.produced += 1
        return self._put(m)

    def push_many(self, ms: list[Measurement]) -> int:
        """Push a chunk with one queue operation; returns how many were accepted.

        For producers that read many measurements at once (a synthetic burst, a replay).
        """
        stats = self.stats
        seq = stats.produced
        for m in ms:
            m.seq = seq
            seq += 1
        stats.produced = seq
        if self._put_many is None:
            return sum(map(self._put, ms))
        return int(self._put_many(ms))


class Pushes(Protocol):
    """What a device pushes into: an :class:`Outlet`, or a test's stand-in."""

    def push(self, m: Measurement) -> bool: ...

    def push_many(self, ms: list[Measurement]) -> int: ...


class _Unattached:
    """Placeholder outlet of a device that is not in a pipeline yet."""

    def push(self, m: Measurement) -> bool:
        raise RuntimeError("device is not attached to a pipeline (add it with Pipeline.add_device)")

    def push_many(self, ms: list[Measurement]) -> int:
        raise RuntimeError("device is not attached to a pipeline (add it with Pipeline.add_device)")


class Device(Configurable):
    """Base class of instrument drivers."""

    #: when an instance is a finite source (``finite``), in words for ``radloggerd plugins``
    #: ("always", "with count"); empty: always live
    finite_when: str = ""
    #: quantities this driver publishes; topics are ``<name>.<quantity>``
    quantities: tuple[str, ...] = ()

    base_options = (
        Option("backoff_initial", float, 0.5, "first reconnect delay in seconds", min=0),
        Option("backoff_max", float, 30.0, "longest reconnect delay in seconds", min=0),
        Option("backoff_factor", float, 2.0, "growth of the reconnect delay per attempt", min=1),
        Option("backoff_jitter", float, 0.1, "random spread of each delay, as a fraction",
               min=0, max=0.99),
        Option("max_retries", int, 0, "reconnect attempts before the device is marked failed "
               "(0 = forever)", min=0),
        Option("on_full", str, "auto", "when the queue is full: wait for room (throttle the "
               "source, lose nothing), or drop as queue_policy says; auto waits for a finite "
               "source (a replay, a counted run) and drops for a live one",
               choices=("auto", "wait", "drop")),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.backoff = Backoff(s.backoff_initial, s.backoff_max, s.backoff_factor,
                               s.backoff_jitter, s.max_retries)
        self._outlet: Pushes = _Unattached()
        self._producer: ProducerStats | None = None
        #: the stop flag, and a lock held while the device runs: ``wait`` is one acquire with a
        #: timeout (a ``threading.Event`` wait costs a Condition, a fresh lock and several lock
        #: operations in Python per call; a driver at 1,000 polls/s waits 1,000 times a second)
        self._stopped = False
        self._bell = threading.Lock()
        self._bell.acquire()
        self._thread: threading.Thread | None = None
        self._state = DeviceState.STOPPED
        self._last_error = ""
        #: wall-clock time (ns) of the last error; 0 before the first
        self.last_error_ns = 0

    @property
    def graph_source(self) -> str:
        """Where the data comes from outside the pipeline (``mqtt://host:1883/x/#``), for the
        graph; empty: the instrument itself."""
        return ""

    @property
    def outlet(self) -> Pushes:
        """Where this device pushes (the pipeline sets it; a test may put a stand-in)."""
        return self._outlet

    @outlet.setter
    def outlet(self, outlet: Pushes) -> None:
        self._outlet = outlet
        self._producer = outlet.stats if isinstance(outlet, Outlet) else None

    def count_errors(self, n: int = 1) -> None:
        """Count ``n`` errors (bad lines, bad packets) in the pipeline's stats of this device."""
        if self._producer is not None:
            self._producer.errors += n

    # ---------------------------------------------------------------- template methods
    def open(self) -> None:
        """Connect to the instrument; raise on failure (retried with backoff)."""

    def poll(self) -> None:
        """Read a bounded amount of data and emit it; raise on a lost connection."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; must be safe to call after a failed ``open``."""

    def interrupt(self) -> None:
        """Unblock a ``poll`` that is waiting on I/O (called from another thread at stop)."""

    @property
    def finite(self) -> bool:
        """True when the source can end by itself (raises DeviceDone): replays, counted runs.
        ``radloggerd run --once`` waits for the finite devices and ignores the others."""
        return False

    @property
    def waits_for_room(self) -> bool:
        """Whether this source is throttled by a full queue instead of losing data: a finite
        source by default (it can wait; nothing is gained by dropping its data), a live one
        (UDP frames, a streaming instrument) only if asked to (``on_full = wait``)."""
        choice = self.settings.on_full
        return choice == "wait" or (choice == "auto" and self.finite)

    @classmethod
    def discover(cls) -> list[Any] | None:
        """Hardware this driver finds (``radloggerd ports``): tty paths, or dicts with ``port``
        and ``vid``/``pid``.  None: the driver has no discovery."""
        return None

    def topics(self) -> list[str]:
        """Topics this device publishes (for ``check``/``graph`` and subscription warnings)."""
        return [f"{self.name}.{q}" for q in self.quantities]

    # ---------------------------------------------------------------- helpers for drivers
    def emit(self, quantity: str, value: Any, unit: str = "", device_time: Any = None,
             meta: dict[str, Any] | None = None, t_ns: int | None = None) -> bool:
        """Publish one measurement on ``<name>.<quantity>``; False if the queue refused it."""
        return self.outlet.push(Measurement(self.name, f"{self.name}.{quantity}", value,
                                            now_ns() if t_ns is None else t_ns, unit,
                                            device_time, meta))

    def push(self, m: Measurement) -> bool:
        return self.outlet.push(m)

    def push_many(self, ms: list[Measurement]) -> int:
        """Push a chunk of measurements with one queue operation."""
        return self.outlet.push_many(ms)

    @property
    def stopping(self) -> bool:
        return self._stopped

    def wait(self, seconds: float | None) -> bool:
        """Sleep interruptibly (``None``: until stopped); True if the device is being stopped."""
        if seconds is not None and seconds <= 0:
            return self._stopped
        bell = self._bell
        if bell.acquire(True, -1 if seconds is None else seconds):
            try:
                bell.release()  # freed by a stop: leave it free, later waits return at once
            except RuntimeError:
                pass  # a second stop request released it meanwhile
            return True
        return self._stopped

    def _ring_stop(self) -> None:
        self._stopped = True
        try:
            self._bell.release()
        except RuntimeError:
            pass  # released already (a second stop request)

    # ---------------------------------------------------------------- lifecycle
    @property
    def state(self) -> DeviceState:
        return self._state

    def _set_state(self, state: DeviceState) -> None:
        self._state = state
        if self._producer is not None:
            self._producer.state = state.value

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopped = False
        self._bell.acquire(False)  # held again (it is free after a stop)
        self.backoff.reset()  # a restarted device gets its full max_retries again
        self._thread = threading.Thread(target=self._run, name=f"device:{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the driver thread to stop, without waiting (the pipeline asks every device
        first, so they stop in parallel)."""
        self._ring_stop()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the driver thread to stop and wait up to ``timeout``; True if it stopped."""
        self._ring_stop()
        try:
            self.interrupt()
        except Exception:  # noqa: BLE001 - a driver's interrupt must not break shutdown
            log.exception("device %s: interrupt failed", self.name)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the driver thread to end by itself (a finite source that raised
        DeviceDone, or one that gave up); True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def last_error(self) -> str:
        """The last connection or read error, in words (empty before the first)."""
        return self._last_error

    @last_error.setter
    def last_error(self, text: str) -> None:
        self._last_error = text
        if text:
            self.last_error_ns = time.time_ns()

    @property
    def thread(self) -> threading.Thread | None:
        """The driver thread of the last start (None before the first)."""
        return self._thread

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _count_error(self, what: str, exc: BaseException) -> None:
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self.count_errors()
        log.warning("device %s: %s", self.name, self.last_error)

    def describe(self) -> str:
        """The instrument's identity once connected (``*IDN?``, serial and firmware), for the
        INFO line ``connected``.  By default the declared options that say which instrument
        this is (host, port, serial, firmware, path, url), where set."""
        s = self.settings
        return ", ".join(f"{k} {s.get(k)}" for k in _IDENTITY if s.get(k) not in (None, ""))

    def _log_connected(self, lost_at: float | None) -> None:
        try:
            who = self.describe()
        except Exception as exc:  # noqa: BLE001 - a log line must not fail a connect
            who = f"identity unknown: {type(exc).__name__}: {exc}"
        who = f": {who}" if who else ""
        if lost_at is None:
            log.info("device %s (%s): connected%s", self.name, self.kind, who)
        else:
            log.info("device %s (%s): reconnected after %.1f s%s", self.name, self.kind,
                     time.monotonic() - lost_at, who)

    def _run(self) -> None:
        lost_at: float | None = None  # since when the device is down after having run
        while not self._stopped:
            self._set_state(DeviceState.CONNECTING)
            try:
                self.open()
            except Exception as exc:  # noqa: BLE001 - any driver failure is retried
                self._count_error("connect failed", exc)
                self._safe_close()
                if not self._back_off():
                    break
                continue
            self._set_state(DeviceState.RUNNING)
            self._log_connected(lost_at)
            lost_at = None
            self.backoff.reset()
            try:
                while not self._stopped:
                    self.poll()
            except DeviceDone:
                self._safe_close()
                self._set_state(DeviceState.FINISHED)
                return
            except Exception as exc:  # noqa: BLE001
                if self._stopped:
                    break  # errors caused by interrupt() while stopping are expected
                self._count_error("lost", exc)
                lost_at = time.monotonic()
                self._safe_close()
                if not self._back_off():
                    break
                continue
        if self._state is DeviceState.FAILED:
            return  # closed already; stays failed until restarted
        self._set_state(DeviceState.STOPPING)
        self._safe_close()
        self._set_state(DeviceState.STOPPED)

    def _safe_close(self) -> None:
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("device %s: close failed: %s", self.name, exc)

    def _back_off(self) -> bool:
        """Wait before reconnecting; False when stopping or out of retries."""
        if self.backoff.exhausted:
            log.error("device %s: giving up after %d attempts (%s)", self.name,
                      self.backoff.attempts, self.last_error)
            self._set_state(DeviceState.FAILED)
            return False
        self._set_state(DeviceState.BACKOFF)
        return not self.wait(self.backoff.next_delay())
