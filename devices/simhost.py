"""An in-process simulator owned by one device (``simulate = yes`` in a driver's section).

Why a class of its own: the three instrument drivers tie a simulator to their device in the
same way, and the rules are easy to get subtly wrong:

* it starts at the device's first ``open()``, never at construction: ``radloggerd check``, the
  configuration loader and reloads construct devices they never start;
* it survives reconnects: the driver re-opens the same simulator, as it would re-open a real
  instrument, so a reconnect never starts a second one;
* it stops when the device stops: from ``close()`` once the device is stopping, and from the
  driver's ``stop()`` for a device whose thread already ended (finished, failed);
* a device that is stopping never starts one (``open()`` racing ``stop()`` cannot leak it).

The driver still reaches the simulator only through the real transport and protocol (TCP,
UDP, a pty): this class only owns its lifetime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["SimulatorHost", "SimulatorOwner"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SimulatorHost(Generic[T]):
    """Starts a simulator on first use, hands out the same one until released.

    ``owner`` is the device (anything with ``name`` and ``stopping``); ``start`` builds and
    starts the simulator, ``stop`` stops it (both called with no lock held by the caller).
    """

    def __init__(self, owner: Any, start: Callable[[], T], stop: Callable[[T], None]) -> None:
        self._owner = owner
        self._start = start
        self._stop = stop
        self._lock = threading.Lock()
        self._sim: T | None = None
        self.starts = 0

    @property
    def current(self) -> T | None:
        """The running simulator, or None."""
        return self._sim

    def get(self) -> T:
        """The running simulator, started now if there is none."""
        with self._lock:
            if self._owner.stopping:
                raise ConnectionAbortedError(f"device {self._owner.name} is stopping; its "
                                             "simulator is not started")
            if self._sim is None:
                self._sim = self._start()
                self.starts += 1
                log.debug("device %s: simulator started", self._owner.name)
            return self._sim

    def release(self) -> None:
        """Stop the simulator if one runs (idempotent, any thread)."""
        with self._lock:
            sim, self._sim = self._sim, None
            if sim is None:
                return
            try:
                self._stop(sim)
            except Exception:  # noqa: BLE001 - stopping a device must not fail on its simulator
                log.exception("device %s: stopping the simulator failed", self._owner.name)
            else:
                log.debug("device %s: simulator stopped", self._owner.name)


class SimulatorOwner:
    """Mixin for drivers with ``simulate = yes``: their simulator (``self.sim``, a
    :class:`SimulatorHost` or None) is released when the device stops, also when the device
    thread had already ended (finished, failed) and so never reached ``close()`` stopping."""

    sim: SimulatorHost[Any] | None = None

    def counters(self) -> dict[str, int | float]:
        """The driver's counters, plus how often its simulator was started."""
        own: dict[str, int | float] = super().counters()  # type: ignore[misc]
        return {**own, "simulator_starts": self.sim.starts if self.sim is not None else 0}

    def stop(self, timeout: float | None = None) -> bool:
        stopped = bool(super().stop(timeout))  # type: ignore[misc]
        if self.sim is not None:
            self.sim.release()
        return stopped
