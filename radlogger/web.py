"""The one HTTP stack: an aiohttp application served from its own thread and event loop.

radloggerd is a threaded program; aiohttp is asyncio.  Rather than turning the daemon inside
out, each server runs an ``aiohttp.web.Application`` on a private event loop in a dedicated
thread.  Other threads talk to handlers only through :meth:`WebServer.call_soon` (which uses
``loop.call_soon_threadsafe``), so handlers never share state with endpoint threads except
through thread-safe structures they own.

aiohttp is optional (the ``web`` extra) and imported where a server is built, so what needs
only this module's helpers (``resolve_token``, ``WebError``: the remote device, a client) runs
without it.

Safe defaults: bind 127.0.0.1 (a user opts into other interfaces explicitly), optional bearer
token checked in constant time on every request except the listed public paths, port 0 means
"any free port" (tests, and the bound port is then :attr:`WebServer.port`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlogger.errors import ConfigurationError

from .webguard import ConnectionCap, body_budget, install_log_limits

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["WebServer", "WebError", "resolve_token", "is_loopback"]

log = logging.getLogger(__name__)

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class WebError(ConfigurationError, RuntimeError):
    """A server that cannot start (port in use, bad address); the message says the fix."""


def resolve_token(token: str | None, token_file: str | None, what: str,
                  create: bool = False) -> str | None:
    """The bearer token from an option or a file (a file keeps secrets out of the INI).

    With ``create`` a missing file is made at first start: a random token, readable only by
    the daemon's user (mode 0600), so a server is protected without anyone choosing a secret;
    clients read the same file (``radloggerd status -c``)."""
    if token_file and create and not Path(token_file).exists():
        _generate_token(Path(token_file), what)
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise WebError(f"{what}: token_file {token_file}: {exc.strerror}: create it or "
                           "fix the path") from None
        if not text:
            raise WebError(f"{what}: token_file {token_file} is empty: write the token into it")
        return text
    return token or None


def _generate_token(path: Path, what: str) -> None:
    import os
    import secrets

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: read theirs
    except OSError as exc:
        raise WebError(f"{what}: cannot create token_file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    log.info("%s: generated a bearer token into %s (mode 0600)", what, path)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer_middleware(token: str, public: Iterable[str] = ()) -> Any:
    from aiohttp import web

    expected = f"Bearer {token}".encode()
    open_paths = frozenset(public)

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token (send 'Authorization: Bearer <token>')\n",
                    headers={"WWW-Authenticate": 'Bearer realm="radloggerd"'})
        return await handler(request)

    return check_token


class WebServer:
    """An aiohttp application on its own thread; add routes to :attr:`app`, then start."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 name: str = "web", public: Iterable[str] = ("/health",),
                 shutdown_timeout: float = 1.0, allow_unauthenticated: bool = False,
                 max_connections: int = 256, max_body: int = 1 << 20,
                 max_body_total: int = 64 << 20) -> None:
        if not token and not is_loopback(host) and not allow_unauthenticated:
            raise WebError(f"{name}: refusing to listen on {host} without a token: anyone who "
                           "can reach it could use it; set a token (or token_file, generated "
                           "at first start), or allow_unauthenticated = yes behind a proxy "
                           "that authenticates")
        self.host = host
        self.requested_port = port
        self.name = name
        self.token = token
        from aiohttp import web

        middlewares = [bearer_middleware(token, public)] if token else []
        # after authentication: an unauthenticated peer reserves nothing
        middlewares.append(body_budget(max_body_total, max_body))
        self.app = web.Application(middlewares=middlewares, client_max_size=max_body)
        self.app.router.add_get("/health", self._health)
        self.shutdown_timeout = shutdown_timeout
        self.max_connections = max_connections
        self.cap: ConnectionCap | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"ok": True, "name": self.name})

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve; returns once the port is bound, raises :class:`WebError` if not."""
        if self._thread is not None:
            return
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._main, name=f"web:{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise WebError(f"{self.name}: HTTP server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            err = self._error
            reason = getattr(err, "strerror", None) or str(err)
            raise WebError(f"{self.name}: cannot listen on {self.host}:{self.requested_port}: "
                           f"{reason} (choose another host/port or stop the program using it)")

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
            self._error = exc
            self._started.set()
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        from aiohttp import web

        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.shutdown_timeout)
        self._runner = runner
        await runner.setup()
        # not a TCPSite: the protocol factory is wrapped so idle peers cannot hold every
        # descriptor (radlogger.webguard)
        install_log_limits()
        self.cap = ConnectionCap(runner.server, self.max_connections, self.name)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.cap, self.host, self.requested_port,
                                                reuse_address=True, backlog=128)
        sockets: tuple[Any, ...] = tuple(self._server.sockets or ())
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port

    async def _cleanup(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("%s: HTTP server cleanup failed", self.name)
            self._runner = None

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop serving (open long-polls are woken by the app's on_shutdown hooks)."""
        thread, loop = self._thread, self.loop
        if thread is None or loop is None:
            return True
        if thread.is_alive():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # loop already closed
        thread.join(timeout)
        self._thread = None
        return not thread.is_alive()

    def attach_socketio(self, **options: Any) -> Any:
        """A python-socketio ``AsyncServer`` (aiohttp mode, path ``/socket.io/``) on this app.

        Socket.IO rides on the one HTTP stack rather than a second server: same port, same
        loop, same stop.  ``options`` go to ``AsyncServer`` (e.g. ``max_http_buffer_size`` for
        large messages).  At stop every socket is disconnected before the runner closes, so
        clients see a clean close rather than a reset.  Needs the ``web`` extra.
        """
        import socketio

        options.setdefault("async_mode", "aiohttp")
        options.setdefault("cors_allowed_origins", [])
        sio = socketio.AsyncServer(**options)
        sio.attach(self.app)

        async def close_sockets(app: web.Application) -> None:
            try:
                await sio.shutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("%s: Socket.IO shutdown failed", self.name)

        self.app.on_shutdown.append(close_sockets)
        return sio

    # ---------------------------------------------------------------- cross-thread calls
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` on the server's loop; False if the server is not running."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    def run(self, coro: Awaitable[Any]) -> Future[Any]:
        """Schedule a coroutine on the server's loop from another thread."""
        if self.loop is None:
            raise RuntimeError(f"{self.name}: server not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
