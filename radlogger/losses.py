"""Every loss is loud: the first drop of each (component, reason) is a WARNING at once, later
drops are summarised at most every few seconds, and the end of a run says in words what was lost.

The counters themselves live in :mod:`radlogger.stats`; this module only decides what a user is
told, and when.  The first-drop call comes from whichever thread dropped (a device thread, the
broker), once per component and reason, so it costs nothing on the hot path; summaries come from
the daemon's stats loop through :meth:`LossReport.poll`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LossReport", "FIXES", "BY_DESIGN", "VIEWER_DECIMATED", "describe_losses", "total_lost"]

log = logging.getLogger("radlogger.losses")

#: what the user can do about each reason; ``{...}`` names come from the component's settings
FIXES: dict[str, str] = {
    "queue_full": "queue_size = {queue_size}; raise it, or set queue_policy = block",
    "inbox_full": "inbox_size = {inbox_size}; raise it, or set queue_policy = block",
    "endpoint_failed": "the endpoint raised; its error is logged",
    "endpoint_stalled": "the endpoint took nothing for full_timeout = {full_timeout} s while the "
                        "broker waited; it is stuck or far too slow, its error is logged",
    "shutdown": "shutdown_deadline = {shutdown_deadline}; raise it to let the pipeline drain",
    "child_crashed": "a worker process died; its error is logged",
    "too_many_topics": "max_topics = {max_topics}; raise it if the topics are genuine",
}

#: a live viewer (dashboard, ``radloggerd watch``) keeps only what it shows
VIEWER_DECIMATED = "viewer_decimated"

#: drop reasons that are the component's purpose, not a loss of the run's data: still counted
#: (the accounting invariant holds, status shows them) but never warned about, summarised as a
#: loss, or turned into a non-zero exit.  A component whose drops are by design uses one of
#: these reasons for them (and only for them).
BY_DESIGN: frozenset[str] = frozenset({VIEWER_DECIMATED})

Settings = Callable[[str, str], Mapping[str, Any]]


def _fix(reason: str, settings: Mapping[str, Any]) -> str:
    template = FIXES.get(reason, "")
    try:
        return template.format_map(settings)
    except (KeyError, ValueError):
        return template.split(";", 1)[-1].strip() if ";" in template else template


class LossReport:
    """Tells the user about drops: at once for the first, then at most every ``interval``."""

    def __init__(self, settings: Settings | None = None, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self._settings = settings or (lambda role, name: {})
        self.interval = interval
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._reported: dict[tuple[str, str, str], int] = {}
        self._last_summary = clock()
        self.warnings = 0

    def message(self, role: str, name: str, reason: str, n: int) -> str:
        fix = _fix(reason, self._settings(role, name))
        return (f"{role} {name}: {reason.replace('_', ' ')}, {n:,} dropped"
                + (f" ({fix})" if fix else ""))

    def first_drop(self, role: str, name: str, reason: str, n: int) -> None:
        """Called once per (component, reason), by the thread that dropped."""
        if reason in BY_DESIGN:
            return
        with self._lock:
            if (role, name, reason) in self._reported:
                return
            self._reported[(role, name, reason)] = n
            self.warnings += 1
        self._log.warning("%s", self.message(role, name, reason, n))

    def poll(self, snapshot: Mapping[str, Any], force: bool = False) -> list[str]:
        """Log what was dropped since the last summary; at most every ``interval`` seconds."""
        now = self._clock()
        if not force and now - self._last_summary < self.interval:
            return []
        self._last_summary = now
        lines = []
        for role, name, reason, n in _drops(snapshot):
            with self._lock:
                before = self._reported.get((role, name, reason))
                self._reported[(role, name, reason)] = n
            if before is None:
                self.warnings += 1
                lines.append(self.message(role, name, reason, n))
            elif n > before:
                lines.append(f"{role} {name}: {reason.replace('_', ' ')}, {n - before:,} more "
                             f"dropped ({n:,} in all)")
        for line in lines:
            self._log.warning("%s", line)
        return lines


def _drops(snapshot: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """(role, name, reason, count) of every drop in a pipeline snapshot, less drops by design."""
    out = []
    endpoints = snapshot.get("endpoints", {})
    for role, group in (("device", snapshot.get("producers", {})), ("endpoint", endpoints)):
        for name, s in group.items():
            label = "endpoint" if role == "device" and name in endpoints else role
            for reason, n in sorted(s.get("dropped_by_reason", {}).items()):
                if n and reason not in BY_DESIGN:
                    out.append((label, name, reason, int(n)))
    return out


def total_lost(snapshot: Mapping[str, Any]) -> int:
    return sum(n for *_, n in _drops(snapshot))


def describe_losses(snapshot: Mapping[str, Any]) -> str:
    """In words, what a run lost; empty when nothing was."""
    drops = _drops(snapshot)
    if not drops:
        return ""
    parts = [f"{role} {name} {reason.replace('_', ' ')} {n:,}" for role, name, reason, n in drops]
    return f"lost {sum(d[3] for d in drops):,} measurements: " + "; ".join(parts)
