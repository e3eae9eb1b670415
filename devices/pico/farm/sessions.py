"""iCEFARM client sessions: events queued per client until its Socket.IO socket takes them.

iCEFARM keeps one session per client name: events are queued while no socket is connected and
flushed when one connects; a session whose socket is gone for 60 s is dropped.  Here a session
is **created by a reservation** (or by a socket that connects), never by an event for a client
nobody knows; the number of sessions is capped (``max_sessions``, a connection beyond it is
refused), each backlog is bounded (``max_events``, the oldest is dropped and counted), and a
session without a socket and without reservations expires after ``ttl`` seconds.  Everything
that is not delivered is counted by reason in :meth:`Sessions.counters`.

A client may hold two sockets on one server (iCEFARM's client connects to the control and to
each worker URL; in a daemon that is both, they are the same URL): each event goes to one
socket, the most recently connected, so it is delivered exactly once.

Thread-safe: events come from driver and tick threads, sockets from the HTTP loop.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from radlogger.options import by_reason

__all__ = ["Sessions", "Session"]


@dataclass
class Session:
    client: str
    sids: list[str] = field(default_factory=list)
    queue: collections.deque[str] = field(default_factory=collections.deque)
    since: float = field(default_factory=time.monotonic)  # last time it had a socket or work

    @property
    def sid(self) -> str | None:
        return self.sids[-1] if self.sids else None


class Sessions:
    def __init__(self, max_sessions: int = 1000, max_events: int = 10000,
                 ttl: float = 60.0) -> None:
        self.max_sessions = max_sessions
        self.max_events = max_events
        self.ttl = ttl
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._by_sid: dict[str, str] = {}
        self.dropped: collections.Counter[str] = collections.Counter()
        self.queued = 0
        self.sent = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, client: str) -> bool:
        """A session for ``client`` (a reservation made it); False when the cap is reached."""
        with self._lock:
            return self._open(client) is not None

    def _open(self, client: str) -> Session | None:
        s = self._sessions.get(client)
        if s is None:
            if len(self._sessions) >= self.max_sessions:
                return None
            s = self._sessions[client] = Session(client)
        s.since = time.monotonic()
        return s

    def connect(self, sid: str, client: str) -> bool:
        with self._lock:
            s = self._open(client)
            if s is None:
                self.refused += 1
                return False
            s.sids.append(sid)
            self._by_sid[sid] = client
            return True

    def disconnect(self, sid: str) -> str | None:
        with self._lock:
            client = self._by_sid.pop(sid, None)
            s = self._sessions.get(client or "")
            if s is not None:
                if sid in s.sids:
                    s.sids.remove(sid)
                s.since = time.monotonic()
            return client

    def client_of(self, sid: str) -> str | None:
        with self._lock:
            return self._by_sid.get(sid)

    def clients(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def push(self, client: str, message: str, create: bool = False) -> bool:
        """Queue ``message`` for ``client``; counted as dropped when it has no session."""
        with self._lock:
            s = self._open(client) if create else self._sessions.get(client)
            if s is None:
                self.dropped["no_session"] += 1
                return False
            s.queue.append(message)
            self.queued += 1
            if len(s.queue) > self.max_events:
                s.queue.popleft()
                self.dropped["backlog_full"] += 1
            return True

    def take(self, client: str) -> tuple[str | None, list[str]]:
        """The socket to send on and the queued messages (empty when no socket is connected)."""
        with self._lock:
            s = self._sessions.get(client)
            if s is None or s.sid is None or not s.queue:
                return None, []
            messages = list(s.queue)
            s.queue.clear()
            self.sent += len(messages)
            return s.sid, messages

    def requeue(self, client: str, messages: list[str]) -> None:
        """Messages a failed emit could not deliver go back to the front."""
        with self._lock:
            s = self._sessions.get(client)
            if s is None:
                self.dropped["no_session"] += len(messages)
                return
            self.sent -= len(messages)
            s.queue.extendleft(reversed(messages))

    def expire(self, busy: set[str]) -> list[str]:
        """Drop sessions without a socket for ``ttl`` s whose client holds no reservation."""
        now = time.monotonic()
        gone = []
        with self._lock:
            for client, s in list(self._sessions.items()):
                if client in busy:
                    s.since = now
                elif not s.sids and now - s.since >= self.ttl:
                    self.dropped["session_expired"] += len(s.queue)
                    del self._sessions[client]
                    gone.append(client)
        return gone

    def counters(self) -> dict[str, int | float]:
        with self._lock:
            pending = sum(len(s.queue) for s in self._sessions.values())
            return {"sessions": len(self._sessions), "events_queued": self.queued,
                    "events_sent": self.sent, "events_pending": pending,
                    "sessions_refused": self.refused,
                    **by_reason("events_dropped", self.dropped)}

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {c: {"sockets": len(s.sids), "pending": len(s.queue)}
                    for c, s in self._sessions.items()}
