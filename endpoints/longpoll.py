"""HTTP long-poll endpoint: serves the topics it subscribes to, to other processes and hosts.

The WSA4000 host library's plan for crossing a process or machine boundary: a client asks
for everything after its cursor and the request waits until there is something (or a
timeout).  Packet type and metadata travel in headers, raw bytes in the body; the wire format
is :mod:`radlogger.wire`, the HTTP stack :mod:`radlogger.web`, the client
:mod:`radlogger.client` (protocol described there), the header names :mod:`radlogger.longpoll`.

Buffering: a bounded ring (``buffer`` items and ``buffer_mb`` megabytes) addressed by
consecutive cursor ids.  A client that resumes with a cursor still in the ring gets exactly
the items it has not seen; one that fell further behind gets what is left plus an explicit
``X-Radlogger-Gap: <lost items>``.  Each new ring (a new process) has a new epoch, so a client
whose cursor belongs to an earlier run is told to reset instead of silently skipping data.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from typing import Any

from aiohttp import web

from radlogger import longpoll as lp
from radlogger.endpoint import NEVER_INLINE, Endpoint
from radlogger.measurement import Measurement
from radlogger.options import Option
from radlogger.topics import pattern_matches, validate_pattern
from radlogger.web import WebServer, resolve_token
from radlogger.wire import frame_parts, split_typed

# (cursor id, topic, header JSON, body, packet type for humans)
_Entry = tuple[int, str, bytes, Any, str]
_SINGLE_HEADER_MAX = 6000  # bigger metadata than this goes in a frames body, not a header


class Ring:
    """Bounded ring of encoded measurements with consecutive ids (cursor = last id seen)."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._slots: list[_Entry | None] = [None] * capacity
        self.oldest = 1  # id of the oldest entry held (== newest + 1 when empty)
        self.newest = 0
        self.bytes = 0
        self.evicted = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.newest - self.oldest + 1

    def extend(self, items: list[tuple[str, bytes, Any, str]]) -> None:
        cap, slots = self.capacity, self._slots
        with self._lock:
            for topic, header, body, kind in items:
                i = self.newest + 1
                while i - self.oldest >= cap:
                    self._evict()
                slots[i % cap] = (i, topic, header, body, kind)
                self.newest = i
                self.bytes += len(header) + len(body)
                while self.bytes > self.max_bytes and self.oldest < i:
                    self._evict()  # always keep the newest, however large

    def _evict(self) -> None:
        """Drop the oldest entry (ids held are exactly oldest..newest, one slot each)."""
        slot = self.oldest % self.capacity
        old = self._slots[slot]
        if old is not None:
            self.bytes -= len(old[2]) + len(old[3])
            self._slots[slot] = None
        self.oldest += 1
        self.evicted += 1

    def read(self, after: int, limit: int, patterns: list[str]) -> tuple[list[_Entry], int, int]:
        """Entries with id > ``after`` (matching ``patterns`` if any), at most ``limit``.

        Returns (entries, cursor after this read, items lost before the oldest held).
        """
        with self._lock:
            gap = max(0, self.oldest - 1 - after)
            start = max(after + 1, self.oldest)
            out: list[_Entry] = []
            i = start
            cap, slots = self.capacity, self._slots
            while i <= self.newest and len(out) < limit:
                entry = slots[i % cap]
                if entry is not None and (not patterns or any(
                        pattern_matches(p, entry[1]) for p in patterns)):
                    out.append(entry)
                i += 1
            return out, i - 1 if i - 1 > after else after, gap


def _bad_request(message: str) -> Exception:
    """HTTP 400 with a one-line JSON error (what every radloggerd API answers to bad input)."""
    from aiohttp import web

    return web.HTTPBadRequest(text=json.dumps({"error": message}) + "\n",
                              content_type="application/json")


class LongPollEndpoint(Endpoint):
    kind = "longpoll"
    summary = "serves the subscribed topics over HTTP long-polling (cursor, gaps, bearer token)"
    options = (
        NEVER_INLINE,  # it answers network clients: never on the broker's thread
        Option("host", str, "127.0.0.1", "address to listen on (loopback unless you open it)"),
        Option("port", int, 8470, "TCP port (0 = any free port)", min=0, max=65535),
        Option("token", str, None, "bearer token clients must send (unset = no token)"),
        Option("token_file", str, None, "file holding the bearer token (overrides token); "
               "created with a random token (mode 0600) at first start if missing"),
        Option("max_connections", int, 256, "open connections the server keeps (long-poll "
               "waiters included); further ones are closed at once and counted", min=1,
               max=100_000),
        Option("allow_unauthenticated", bool, False, "listen on a non-loopback host without "
               "a token (only behind a proxy that authenticates)"),
        Option("buffer", int, 10000, "measurements kept for clients to resume from", min=1),
        Option("buffer_mb", float, 64.0, "most megabytes kept in the buffer", min=0.001),
        Option("max_batch", int, 1000, "most measurements in one answer", min=1),
        Option("max_wait", float, 60.0, "longest a request may wait for data, seconds",
               min=0.0),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.token = s.token  # the token_file is read (or created) when the server opens
        self.ring = Ring(s.buffer, int(s.buffer_mb * 1e6))
        self.server: WebServer | None = None
        # One epoch per ring: cursors stay valid across a close/open of this endpoint (its
        # on_error restart), and a new process (a new ring) tells old cursors to reset.
        self.epoch = secrets.token_hex(6)
        self.requests = 0
        self.served = 0
        self.gaps = 0  # answers that reported lost items
        self.lost = 0  # items reported lost to clients (each client counted)
        self.waiting = 0  # requests waiting for data now (written on the server loop only)
        self._wake_event: asyncio.Event | None = None
        self._closing = False

    def listens(self) -> list[tuple[str, str, int]]:
        return [("tcp", self.settings.host, self.settings.port)] if self.settings.port else []

    @property
    def graph_target(self) -> str:
        port = self.server.port if self.server else self.settings.port
        return f"http://{self.settings.host}:{port}{lp.POLL_PATH}"

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError(f"endpoint {self.name} is not open")
        return self.server.url

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> None:
        s = self.settings
        self._closing = False
        self._wake_event = None
        self.token = resolve_token(s.token, s.token_file, f"endpoint {self.name}", create=True)
        server = WebServer(s.host, s.port, self.token, name=f"longpoll:{self.name}",
                           allow_unauthenticated=s.allow_unauthenticated,
                           max_connections=s.max_connections)
        server.app.router.add_get(lp.POLL_PATH, self._poll)
        server.app.router.add_get(lp.INFO_PATH, self._info)
        server.app.on_shutdown.append(self._on_shutdown)
        server.start()
        self.server = server

    def close(self) -> None:
        self._closing = True
        if self.server is not None:
            self.server.call_soon(self._wake)
            self.server.stop()
            self.server = None

    # ---------------------------------------------------------------- endpoint side
    def handle_batch(self, batch: list[Measurement]) -> None:
        items: list[tuple[str, bytes, Any, str]] = []
        for m in batch:
            try:
                header, body, kind = split_typed(m)
            except Exception as exc:  # noqa: BLE001 - one bad value must not stop the rest
                self.item_failed(m, exc)
                continue
            items.append((m.topic, header, body, kind))
        if items:
            self.ring.extend(items)
            if self.waiting and self.server is not None:
                self.server.call_soon(self._wake)

    def counters(self) -> dict[str, int | float]:
        return {"requests": self.requests, "served": self.served, "gaps": self.gaps,
                "lost": self.lost, "waiting": self.waiting, "buffered": len(self.ring),
                "buffered_bytes": self.ring.bytes, "evicted": self.ring.evicted,
                "cursor": self.ring.newest}

    # ---------------------------------------------------------------- server side
    def _wake(self) -> None:
        event, self._wake_event = self._wake_event, None
        if event is not None:
            event.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        self._wake()

    def _base_headers(self, cursor: int, gap: int, reset: bool) -> dict[str, str]:
        h = {lp.CURSOR: str(cursor), lp.EPOCH: self.epoch,
             "Cache-Control": "no-store"}
        if gap:
            h[lp.GAP] = str(gap)
        if reset:
            h[lp.RESET] = "1"
        return h

    async def _info(self, request: web.Request) -> web.Response:
        ring = self.ring
        return web.json_response({
            "name": self.name, "epoch": self.epoch, "oldest": ring.oldest,
            "newest": ring.newest, "buffered": len(ring), "capacity": ring.capacity,
            "bytes": ring.bytes, "max_bytes": ring.max_bytes,
            "subscribe": list(self.settings.subscribe)})

    def _params(self, request: web.Request) -> tuple[int, bool, int, float, list[str]]:
        q = request.query
        ring = self.ring
        reset = False
        try:
            limit = max(1, min(int(q.get("max", "1")), self.settings.max_batch))
            timeout = float(q.get("timeout", "20"))
            if not math.isfinite(timeout):
                raise ValueError(timeout)
            wait = max(0.0, min(timeout, self.settings.max_wait))
        except ValueError:
            raise _bad_request("max must be an integer and timeout a finite number") from None
        topics = [t.strip() for t in q.get("topics", "").split(",") if t.strip()]
        for t in topics:
            problem = validate_pattern(t)
            if problem:
                raise _bad_request(f"topics: {problem}")
        raw = q.get("cursor")
        if raw is None:
            after = ring.oldest - 1
        elif raw == "latest":
            after = ring.newest
        else:
            try:
                after = int(raw)
            except ValueError:
                raise _bad_request("cursor must be an integer, 'latest', or absent "
                                   "(= oldest buffered)") from None
            epoch = q.get("epoch")
            if (epoch and epoch != self.epoch) or after > ring.newest or after < 0:
                after, reset = ring.oldest - 1, True
        return after, reset, limit, wait, topics

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        after, reset, limit, wait, topics = self._params(request)
        deadline = time.monotonic() + wait
        self.waiting += 1  # before reading the ring: see handle_batch's wake-up check
        try:
            while True:
                entries, cursor, gap = self.ring.read(after, limit, topics)
                if entries or gap or self._closing:
                    break
                after = cursor  # skip what the topic filter rejected
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._wake_event is None:
                    self._wake_event = asyncio.Event()
                try:
                    await asyncio.wait_for(self._wake_event.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1
        if gap:
            self.gaps += 1
            self.lost += gap
        headers = self._base_headers(cursor, gap, reset)
        if not entries:
            return web.Response(status=204, headers=headers)
        self.served += len(entries)
        headers[lp.COUNT] = str(len(entries))
        if limit == 1 and len(entries[0][2]) <= _SINGLE_HEADER_MAX:
            _, topic, header, body, kind = entries[0]
            headers.update({lp.TOPIC: topic, lp.TYPE: kind, lp.META: header.decode("ascii")})
            ctype = "application/json" if kind == "json" else "application/octet-stream"
            return web.Response(body=bytes(body), headers=headers, content_type=ctype)
        parts: list[Any] = []
        for _, _, header, body, _ in entries:
            parts.extend(frame_parts(header, body))
        return web.Response(body=b"".join(parts), headers=headers, content_type=lp.FRAMES_TYPE)
