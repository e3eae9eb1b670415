"""What a peer can make an HTTP server hold, and how loudly it can make it log.

* **Connections.** aiohttp accepts every connection and keeps idle keep-alive ones; a peer
  opening thousands holds as many descriptors until the process hits its limit (EMFILE), and
  then the accept loop fails in a tight loop.  :class:`ConnectionCap` wraps the server's
  protocol factory: past ``limit`` open connections a new one is closed at once and counted,
  with one rate-limited log line.
* **Bodies.** aiohttp bounds each request body (``client_max_size``) but not their sum: many
  concurrent large uploads could hold memory without bound.  :func:`body_budget` reserves each
  request's declared length (or the per-request maximum when it does not say) from one budget
  per server while the handler runs; past it the request is answered 503 at once.
* **Log floods.** aiohttp logs every malformed request as ERROR with a traceback, before any
  authentication; asyncio logs accept errors each time.  :class:`RateLimitFilter` lets one
  record through per interval (without its traceback) and counts the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionCap", "RateLimitFilter", "install_log_limits", "body_budget"]

log = logging.getLogger("radlogger.web")


class _Refuse(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


class ConnectionCap:
    """A protocol factory that refuses connections past ``limit`` open ones."""

    def __init__(self, factory: Any, limit: int, name: str, interval: float = 10.0) -> None:
        self.factory = factory  # aiohttp's web.Server: callable, tracks its connections
        self.limit = limit
        self.name = name
        self.refused = 0
        self._interval = interval
        self._next_log = 0.0

    @property
    def open(self) -> int:
        return len(self.factory.connections)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now >= self._next_log:
                self._next_log = now + self._interval
                log.warning("%s: %d connections open (max_connections = %d): refusing new ones "
                            "(%d refused so far)", self.name, self.open, self.limit, self.refused)
            return _Refuse()
        protocol: asyncio.BaseProtocol = self.factory()
        return protocol


class RateLimitFilter(logging.Filter):
    """One record per ``interval`` seconds passes, shortened to one line; the rest are counted
    and the count is appended to the next one that passes."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self.suppressed = 0
        self._clock = clock
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        exc = record.exc_info[1] if record.exc_info else None
        detail = f": {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}" \
            if exc is not None else ""
        record.msg = f"{record.getMessage()}{detail}" + (
            f" ({self.suppressed} similar records suppressed)" if self.suppressed else "")
        record.args = None
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.suppressed = 0
        return True


_INSTALLED: dict[str, RateLimitFilter] = {}


def install_log_limits(interval: float = 10.0) -> None:
    """Rate-limit what outside peers can make aiohttp and asyncio log (idempotent)."""
    for name in ("aiohttp.server", "aiohttp.web", "asyncio"):
        if name not in _INSTALLED:
            _INSTALLED[name] = RateLimitFilter(interval)
            logging.getLogger(name).addFilter(_INSTALLED[name])


def body_budget(total: int, per_request: int) -> Any:
    """aiohttp middleware: requests with a body share ``total`` bytes of reservations."""
    from aiohttp import web

    state = {"reserved": 0, "refused": 0}

    @web.middleware
    async def budget(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method in ("GET", "HEAD", "OPTIONS") and not request.can_read_body:
            response: web.StreamResponse = await handler(request)
            return response
        need = request.content_length if request.content_length is not None else per_request
        need = min(need, per_request)
        if state["reserved"] + need > total:
            state["refused"] += 1
            raise web.HTTPServiceUnavailable(
                text='{"error": "server busy with other uploads; retry later"}\n',
                content_type="application/json", headers={"Retry-After": "1"})
        state["reserved"] += need
        try:
            response = await handler(request)
            return response
        finally:
            state["reserved"] -= need

    budget.state = state  # type: ignore[attr-defined]
    return budget
