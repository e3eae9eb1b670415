"""An endpoint's error policy: what consecutive failures lead to, and how loudly they are logged.

An exception from an endpoint's ``handle`` is one failed measurement; after ``max_errors`` in a
row the ``on_error`` policy applies: ``continue`` (keep going), ``restart`` (close + open) or
``fail`` (the endpoint stops; whatever reaches it is counted as dropped).  Logging is limited to
one line per second per endpoint, with a count of what was suppressed, so a broken endpoint fed
a million measurements a second cannot flood the log.
"""

from __future__ import annotations

import logging
import time

__all__ = ["ErrorPolicy", "LogGate"]

log = logging.getLogger("radlogger.endpoint")


class LogGate:
    """At most one error log line per second; counts what it suppressed."""

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


class ErrorPolicy:
    """Counts consecutive errors; :meth:`failed` says what to do after one."""

    CONTINUE = "continue"
    RESTART = "restart"
    FAIL = "fail"

    def __init__(self, name: str, kind: str, on_error: str, max_errors: int) -> None:
        self.name = name
        self.kind = kind
        self.on_error = on_error
        self.max_errors = max_errors
        self.consecutive = 0
        self._gate = LogGate()

    def reset(self) -> None:
        self.consecutive = 0

    def failed(self, exc: BaseException, context: str, errors_so_far: int,
               stopping: bool) -> str | None:
        """One error: log it (rate-limited) and return the action due now, or None."""
        self.consecutive += 1
        if self._gate.allow():
            suppressed = self._gate.take_suppressed()
            log.error("endpoint %s (%s) failed on %s: %s: %s%s", self.name, self.kind, context,
                      type(exc).__name__, exc,
                      f" ({suppressed} similar errors suppressed)" if suppressed else "",
                      exc_info=errors_so_far == 1)
        if self.consecutive < self.max_errors or stopping:
            return None  # no restart once stopping: stop() owns closing
        return self.on_error
