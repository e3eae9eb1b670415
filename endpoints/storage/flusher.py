"""The timer thread of a store: flushes data older than ``flush_interval`` and retries after
disk errors, when no new batch would wake the endpoint's worker."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

__all__ = ["Flusher", "Timed"]

log = logging.getLogger(__name__)


class Timed(Protocol):
    name: str

    def on_timer(self) -> None: ...


class Flusher:
    """A timer thread: flushes data older than ``flush_interval`` and retries after errors.

    Needed because an endpoint's worker sleeps until the next batch arrives: without it, the
    last measurements before a quiet period would wait in memory, and a crash would lose them.
    """

    def __init__(self, store: Timed) -> None:
        self._store = store
        self._cond = threading.Condition(threading.Lock())
        self._deadline: float | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"storage-flush:{store.name}",
                                        daemon=True)
        self._thread.start()

    def arm(self, when: float) -> None:
        with self._cond:
            if self._deadline is None or when < self._deadline:
                self._deadline = when
                self._cond.notify()

    def stop(self, join: bool = True) -> None:
        """End the thread; ``join=False`` when called under the store's I/O lock (which the
        thread may be waiting for)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if join and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while not self._stop:
                if self._deadline is None:
                    cond.wait()
                    continue
                delay = self._deadline - time.monotonic()
                if delay > 0:
                    cond.wait(delay)
                    continue
                self._deadline = None
                cond.release()
                try:
                    self._store.on_timer()
                except Exception:  # noqa: BLE001 - the timer must outlive a store's bug
                    log.exception("endpoint %s: timed flush failed", self._store.name)
                finally:
                    cond.acquire()
