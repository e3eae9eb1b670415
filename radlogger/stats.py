"""Counters for the accounting invariant: nothing is lost silently.

Per producer (device, or processing endpoint that publishes):
    ``produced == published + dropped + queued``
Per endpoint:
    ``received == handled + dropped + pending``
where ``queued``/``pending`` are zero once the pipeline has stopped.

Hot-path counters (``produced``, ``published``, ``received``, ``handled``) each have exactly one
writer thread, so plain ``+=`` is exact without a lock.  Drops can come from several threads
(a ``drop_oldest`` eviction charges the victim's source from the evicting producer's thread), so
they go through :meth:`Counters.drop`, which takes a lock: drops are the cold path.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = ["ProducerStats", "EndpointStats", "format_summary"]


FirstDrop = Callable[[str, str, str, int], None]


class _Drops:
    __slots__ = ("_lock", "by_reason", "name", "role", "on_first_drop")

    def __init__(self, name: str, role: str) -> None:
        self.role = role  # "device", "endpoint", or "output of endpoint" for what one publishes
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()
        self.name = name
        #: called once per reason, outside the lock, by the thread that dropped
        #: (:meth:`radlogger.losses.LossReport.first_drop`); set when bound to a pipeline
        self.on_first_drop: FirstDrop | None = None

    def drop(self, reason: str, n: int = 1) -> None:
        key = reason.value if isinstance(reason, Enum) else str(reason)
        with self._lock:
            first = key not in self.by_reason
            self.by_reason[key] += n
        if first and n and self.on_first_drop is not None:
            self.on_first_drop(self.role, self.name, key, n)

    @property
    def dropped(self) -> int:
        with self._lock:
            return sum(self.by_reason.values())

    def reasons(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_reason)


class ProducerStats(_Drops):
    """Counters of one source of measurements (a device or a publishing endpoint)."""

    __slots__ = ("produced", "published", "unrouted", "errors", "state")

    def __init__(self, name: str, role: str = "device") -> None:
        super().__init__(name, role)
        self.produced = 0  # writer: the producer thread
        self.published = 0  # writer: the broker thread (handed to PyPubSub)
        self.unrouted = 0  # writer: the broker thread (published to a topic nobody subscribes to)
        self.errors = 0  # writer: the producer thread (connection/parse errors, not drops)
        self.state = "stopped"

    def snapshot(self) -> dict[str, Any]:
        dropped = self.reasons()
        return {
            "name": self.name, "state": self.state, "produced": self.produced,
            "published": self.published, "unrouted": self.unrouted,
            "dropped": sum(dropped.values()), "dropped_by_reason": dropped, "errors": self.errors,
        }

    def balanced(self, queued: int = 0) -> bool:
        return self.produced == self.published + self.dropped + queued


class EndpointStats(_Drops):
    """Counters of one endpoint."""

    __slots__ = ("received", "handled", "failed_batches", "errors", "restarts",
                 "state", "inbox_depth", "inbox_high_water")

    def __init__(self, name: str) -> None:
        super().__init__(name, "endpoint")
        self.received = 0  # writer: the broker thread
        self.handled = 0  # writer: the endpoint's worker
        self.errors = 0  # exceptions raised by the endpoint's code
        self.failed_batches = 0
        self.restarts = 0
        self.state = "stopped"
        self.inbox_depth = 0
        self.inbox_high_water = 0

    def snapshot(self) -> dict[str, Any]:
        dropped = self.reasons()
        return {
            "name": self.name, "state": self.state, "received": self.received,
            "handled": self.handled, "dropped": sum(dropped.values()),
            "dropped_by_reason": dropped, "errors": self.errors, "restarts": self.restarts,
            "inbox_depth": self.inbox_depth, "inbox_high_water": self.inbox_high_water,
        }

    def balanced(self, pending: int = 0) -> bool:
        return self.received == self.handled + self.dropped + pending


def _own_part(c: dict[str, Any]) -> str:
    """A component's own counters that are not zero, for the final line: ``{bad_frames=3}``."""
    own = {k: v for k, v in c.get("own", {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and v}
    if not own:
        return ""
    return " {" + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in own.items()) + "}"


def format_summary(snapshot: dict[str, Any], own: bool = False) -> str:
    """One line for the periodic and (``own``: with each plugin's own non-zero counters) the
    final stats log."""
    parts = [f"queue {snapshot['queue']['depth']}/{snapshot['queue']['capacity']}"]
    producers = snapshot["producers"]
    endpoints = snapshot["endpoints"]
    for d in producers.values():
        if d["name"] in endpoints:
            continue  # a processing endpoint's output is shown with the endpoint
        parts.append(f"{d['name']}[{d['state']}] prod={d['produced']} pub={d['published']} "
                     f"drop={d['dropped']} err={d['errors']}" + (_own_part(d) if own else ""))
    for e in endpoints.values():
        part = (f"{e['name']}[{e['state']}] recv={e['received']} ok={e['handled']} "
                f"drop={e['dropped']} err={e['errors']} inbox={e['inbox_depth']}")
        out = producers.get(e["name"])
        if out is not None and out["produced"]:
            part += f" out={out['published']} outdrop={out['dropped']}"
        parts.append(part + (_own_part(e) if own else ""))
    return "; ".join(parts)
