"""Long-poll client: how a program (or another radloggerd) listens to a radloggerd's events.

The server side is :mod:`radlogger.endpoints.longpoll`; the header names and paths both use are
in :mod:`radlogger.longpoll`.  The protocol, in short::

    GET /poll?cursor=N&epoch=E&max=K&timeout=S&topics=a,b   Authorization: Bearer <token>
    -> 200 with up to K measurements after cursor N, or 204 after S seconds without data
       X-Radlogger-Cursor: the cursor to send next time (the last item returned or skipped)
       X-Radlogger-Epoch:  changes when the server restarts (cursors are then meaningless)
       X-Radlogger-Gap:    items lost between N and the oldest item still buffered
       X-Radlogger-Reset:  1 when the server could not honour N (new epoch) and started over

With ``max=1`` the body is the raw value (array bytes, or JSON text) and the packet type and
metadata are in headers (``curl``-friendly); with ``max>1`` the body is a stream of
:mod:`radlogger.wire` frames.  The client keeps the cursor, so reconnecting resumes exactly
where it stopped: no gap and no duplicate as long as the server still buffers the data, and an
explicit gap count when it does not.

Why the standard library's ``http.client`` and not aiohttp here: a client is one blocking
request at a time on the caller's thread; it must be interruptible from another thread (a
device being stopped shuts its socket down) and must not need an event loop per consumer.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from radlogger.errors import ConnectionFailure

from . import longpoll as lp
from .backoff import Backoff
from .errorpolicy import LogGate
from .measurement import Measurement
from .wire import WireError, decode_frames, join

__all__ = ["LongPollClient", "Poll", "RemoteError", "AuthError", "Listener"]

log = logging.getLogger(__name__)



class RemoteError(ConnectionFailure, RuntimeError):
    """The server answered, but not with data; ``retryable`` says whether to try again."""

    def __init__(self, message: str, status: int = 0, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class AuthError(RemoteError):
    """Wrong or missing token: retrying cannot help, the configuration must change."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message, status, retryable=False)


@dataclass
class Poll:
    """One answer: the items, where the cursor now is, and what was lost."""

    items: list[Measurement] = field(default_factory=list)
    cursor: int = 0
    gap: int = 0
    reset: bool = False


class LongPollClient:
    """Blocking long-poll client that keeps its cursor across reconnects."""

    def __init__(self, url: str, token: str | None = None, topics: Iterable[str] = (),
                 batch: int = 500, wait: float = 20.0, start: str = "oldest",
                 connect_timeout: float = 5.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {url!r}: expected http://host:port[/path]")
        if start not in ("oldest", "latest"):
            raise ValueError(f"start {start!r}: expected oldest or latest")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + lp.POLL_PATH
        self.token = token
        self.topics = list(topics)
        self.batch = max(1, int(batch))
        self.wait = wait
        self.start = start
        self.connect_timeout = connect_timeout
        self.cursor: int | None = None
        self.epoch: str | None = None
        self.received = 0
        self.requests = 0
        self.bad_answers = 0  # answers that could not be decoded (skipped, counted lost)
        self._bad_log = LogGate()
        self.gaps = 0  # times the server reported lost items
        self.lost = 0  # items reported lost in those gaps
        self.resets = 0
        self._conn: http.client.HTTPConnection | None = None
        self._interrupted = False

    # ---------------------------------------------------------------- one request
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.wait + self.connect_timeout)
        return self._conn

    def _query(self, wait: float) -> str:
        q: dict[str, str] = {"max": str(self.batch), "timeout": f"{wait:g}"}
        if self.cursor is not None:
            q["cursor"] = str(self.cursor)
            if self.epoch:
                q["epoch"] = self.epoch
        elif self.start == "latest":
            q["cursor"] = "latest"
        if self.topics:
            q["topics"] = ",".join(self.topics)
        return f"{self._path}?{urlencode(q)}"

    def poll(self, wait: float | None = None) -> Poll:
        """Wait up to ``wait`` seconds for items after the cursor; raises on failure.

        Connection problems raise ``OSError``/``http.client.HTTPException``; an unusable
        answer raises :class:`RemoteError`; a refused token raises :class:`AuthError`.
        """
        wait = self.wait if wait is None else wait
        headers = {"Accept": f"{lp.FRAMES_TYPE}, */*"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                if not reused:
                    conn.connect()
                if self._interrupted:
                    raise ConnectionAbortedError("long-poll client interrupted")
                conn.request("GET", self._query(wait), headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                # A kept-alive connection the server closed meanwhile (idle timeout, server
                # restart): the GET is idempotent (cursor), so ask once more on a new one.
                if not reused or attempt == 2 or self._interrupted:
                    raise
            except BaseException:
                self.close()
                raise
        self.requests += 1
        return self._answer(resp, body)

    def _answer(self, resp: http.client.HTTPResponse, body: bytes) -> Poll:
        status = resp.status
        if status == 401:
            raise AuthError(f"{self.url}: token rejected (HTTP 401): set the token the server "
                            "expects (option token or token_file)")
        if status not in (200, 204):
            text = body[:200].decode("utf-8", "replace").strip()
            raise RemoteError(f"{self.url}: HTTP {status} {resp.reason}: {text}", status,
                              retryable=status >= 500 or status == 429)
        h = resp.headers
        try:
            cursor = int(h.get(lp.CURSOR, ""))
        except ValueError:
            raise RemoteError(f"{self.url}: answer without a valid {lp.CURSOR} "
                              "(is this a radloggerd long-poll endpoint?)") from None
        result = Poll(cursor=cursor, gap=int(h.get(lp.GAP, "0") or 0),
                      reset=h.get(lp.RESET) == "1")
        if status == 200:
            try:
                if h.get_content_type() == lp.FRAMES_TYPE:
                    result.items = decode_frames(body)
                else:
                    result.items = [join(h.get(lp.META, ""), body)]
            except (WireError, ValueError, RecursionError, UnicodeDecodeError) as exc:
                # counted and skipped: asking again would fetch the same poison forever
                self.bad_answers += 1
                skipped = cursor - self.cursor if self.cursor is not None and \
                    cursor > self.cursor else 1
                result.gap += skipped
                if self._bad_log.allow():
                    log.warning("%s: an answer could not be decoded (%s: %s); its %d "
                                "measurement(s) skipped and counted as lost", self.url,
                                type(exc).__name__, str(exc)[:200], skipped)
        self.epoch = h.get(lp.EPOCH) or self.epoch
        self.cursor = cursor
        self.received += len(result.items)
        if result.gap:
            self.gaps += 1
            self.lost += result.gap
        if result.reset:
            self.resets += 1
        return result

    def interrupt(self) -> None:
        """Abort a blocked :meth:`poll` from another thread (it raises); sticky."""
        self._interrupted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset_interrupt(self) -> None:
        self._interrupted = False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---------------------------------------------------------------- loops for API users
    def events(self, stop: threading.Event | None = None,
               backoff: Backoff | None = None,
               on_gap: Callable[[Poll], None] | None = None) -> Iterator[Measurement]:
        """Yield measurements forever (until ``stop`` is set), reconnecting with backoff.

        A refused token is not retried: :class:`AuthError` propagates.
        """
        stop = stop or threading.Event()
        backoff = backoff or Backoff(0.2, 10.0)
        while not stop.is_set():
            try:
                result = self.poll()
            except AuthError:
                raise
            except (OSError, http.client.HTTPException, RemoteError) as exc:
                if stop.is_set() or self._interrupted:
                    return
                if isinstance(exc, RemoteError) and not exc.retryable:
                    raise
                delay = backoff.next_delay()
                log.warning("long-poll %s: %s; retrying in %.1f s", self.url, exc, delay)
                if stop.wait(delay):
                    return
                continue
            backoff.reset()
            if (result.gap or result.reset) and on_gap is not None:
                on_gap(result)
            yield from result.items

    def listen(self, callback: Callable[[Measurement], None],
               on_gap: Callable[[Poll], None] | None = None) -> Listener:
        """Call ``callback`` for every measurement on a background thread."""
        listener = Listener(self, callback, on_gap)
        listener.start()
        return listener


class Listener:
    """A thread feeding a client's events to a callback; :meth:`stop` ends it promptly."""

    def __init__(self, client: LongPollClient, callback: Callable[[Measurement], None],
                 on_gap: Callable[[Poll], None] | None = None) -> None:
        self.client = client
        self.callback = callback
        self.on_gap = on_gap
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listener:{client.url}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for m in self.client.events(self._stop, on_gap=self.on_gap):
                self.callback(m)
        except BaseException as exc:  # noqa: BLE001 - kept for the owner to inspect
            if not self._stop.is_set():
                self.error = exc
                log.error("long-poll listener %s stopped: %s", self.client.url, exc)
        finally:
            self.client.close()

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        self.client.interrupt()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def info(url: str, token: str | None = None, timeout: float = 5.0) -> dict[str, object]:
    """The server's ``/info`` (epoch, cursors, buffer) as a dict: for tools and tests."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", parts.path.rstrip("/") + lp.INFO_PATH, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 401:
            raise AuthError(f"{url}: token rejected (HTTP 401)")
        if resp.status != 200:
            raise RemoteError(f"{url}: HTTP {resp.status}", resp.status)
        return dict(json.loads(body))
    finally:
        conn.close()

