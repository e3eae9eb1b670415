"""Events to clients, delivered by long-poll: ``GET /api/events?client=NAME&after=SEQ``.

Why long-poll rather than calling back a client's URL: a client behind NAT or a firewall can
still receive, nothing has to listen on the client's side, and delivery is at-least-once — each
client's events are numbered, kept until the client polls with ``after`` at or beyond their
number (acknowledging them), and a client that reconnects picks up where it left off.
Each client's backlog is bounded (``max_events``); overflow drops the oldest and counts it in
``dropped``, and the next poll reports the gap (``dropped`` in the answer).

Publishing is thread-safe (driver threads publish results); waiting is asyncio (the API
thread): a publisher wakes the waiting requests with ``call_soon_threadsafe``.  Every event
also goes to ``sink`` so the farm device can put it on the broker (``<farm>.<event>``).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EventHub", "EVENT_TYPES"]

EVENT_TYPES = ("results", "reservation_ending", "reservation_end", "failure",
               "devices_available", "state", "flash")


class EventHub:
    def __init__(self, max_events: int = 10000,
                 sink: Callable[[dict[str, Any]], None] | None = None,
                 max_clients: int = 1000) -> None:
        self.max_events = max_events
        self.max_clients = max_clients
        self.sink = sink
        #: more receivers of every event (the iCEFARM Socket.IO sessions); any thread
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._seen: dict[str, float] = {}  # client -> last poll or reservation (monotonic)
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[dict[str, Any]]] = {}
        self._seq: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped: collections.Counter[str] = collections.Counter()  # by client
        self.lost: collections.Counter[str] = collections.Counter()  # by reason
        self.published = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def known(self, client: str) -> None:
        """Start a backlog for ``client``: it reserved (polling alone never creates one)."""
        with self._lock:
            self._queues.setdefault(client, collections.deque())
            self._seq.setdefault(client, 0)
            self._seen[client] = time.monotonic()

    def expire(self, busy: set[str], ttl: float) -> list[str]:
        """Forget backlogs of clients holding no reservation and silent for ``ttl`` s."""
        now = time.monotonic()
        gone = []
        with self._lock:
            for client in list(self._queues):
                if client in busy:
                    self._seen[client] = now
                elif now - self._seen.get(client, now) >= ttl:
                    self.lost["expired"] += len(self._queues.pop(client))
                    self._seq.pop(client, None)
                    self._seen.pop(client, None)
                    gone.append(client)
        return gone

    def clients(self) -> list[str]:
        with self._lock:
            return sorted(self._queues)

    def publish(self, event: str, client: str, **fields: Any) -> dict[str, Any]:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r}")
        with self._lock:
            q = self._queues.get(client)
            if q is None:
                if len(self._queues) >= self.max_clients:
                    self.lost["too_many_clients"] += 1
                    q = collections.deque()  # delivered to listeners only
                else:
                    q = self._queues[client] = collections.deque()
                    self._seen[client] = time.monotonic()
            seq = self._seq.get(client, 0) + 1
            self._seq[client] = seq
            ev = {"seq": seq, "event": event, "client": client, "t": time.time(), **fields}
            q.append(ev)
            if len(q) > self.max_events:
                q.popleft()
                self.dropped[client] += 1
            self.published += 1
        if self.sink is not None:
            self.sink(ev)
        for listener in self.listeners:
            listener(ev)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake, client)
            except RuntimeError:
                pass  # the loop closed (shutdown); pollers are gone
        return ev

    def broadcast(self, event: str, **fields: Any) -> int:
        clients = self.clients()
        for c in clients:
            self.publish(event, c, **fields)
        return len(clients)

    def take(self, client: str, after: int) -> list[dict[str, Any]]:
        """Events of ``client`` numbered above ``after``; those at or below are acknowledged."""
        with self._lock:
            q = self._queues.get(client)
            if q is None:
                return []  # an unknown client: no backlog is made for it (issue 14)
            self._seen[client] = time.monotonic()
            while q and q[0]["seq"] <= after:
                q.popleft()
            return list(q)

    def last(self, client: str) -> int:
        with self._lock:
            return self._seq.get(client, 0)

    async def wait(self, client: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Long-poll (on the API loop): events above ``after``, waiting up to ``timeout``."""
        events = self.take(client, after)
        if events or timeout <= 0:
            return events
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.setdefault(client, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.get(client, set()).discard(fut)
        return self.take(client, after)

    def _wake(self, client: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(client, set())
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Release every waiting poll (shutdown)."""
        with self._lock:
            clients = list(self._waiters)
        for c in clients:
            self._wake(c)
