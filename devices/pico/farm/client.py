"""A small client of the farm API: reserve boards, call state methods, receive events.

Synchronous on purpose (scripts and notebooks drive farms), so it uses the standard library's
``urllib`` rather than adding an HTTP client dependency; the event listener is one thread that
long-polls ``/api/events`` and routes each event to a handler method named after it::

    class Mine(EventHandler):
        def on_results(self, event): ...
        def on_reservation_end(self, event): ...

    client = FarmClient("http://127.0.0.1:8470", "alice", token="...")
    boards = client.reserve(amount=2, kind="pulsecount")
    with EventListener(client, Mine()):
        client.evaluate(boards[0]["serial"], {"gen0-1": bitstream_bytes})
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from radlogger.backoff import Backoff
from radlogger.errors import ConnectionFailure

__all__ = ["FarmClient", "FarmClientError", "EventHandler", "EventListener"]

log = logging.getLogger(__name__)


class FarmClientError(ConnectionFailure, RuntimeError):
    """The farm refused a request (``status`` is the HTTP status, 0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class FarmClient:
    def __init__(self, url: str, client: str, token: str = "", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client = client
        self.token = token
        self.timeout = timeout
        #: serial -> worker URL, learned from reservations (state methods are called there)
        self.workers: dict[str, str] = {}

    # ---------------------------------------------------------------- transport
    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, Any] | None = None, base: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        url = (base or self.url).rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = str(exc.reason)
            raise FarmClientError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FarmClientError(0, f"farm at {url} unreachable: {reason}") from None

    # ---------------------------------------------------------------- control
    def available(self, kind: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/api/available", query={"kind": kind} if kind else None)

    def devices(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/devices")["devices"])

    def reserve(self, amount: int | None = None, serials: list[str] | None = None,
                kind: str = "pulsecount", args: dict[str, Any] | None = None,
                duration: float | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"client": self.client, "kind": kind}
        for key, value in (("amount", amount), ("serials", serials), ("args", args),
                           ("duration", duration)):
            if value is not None:
                body[key] = value
        rows = list(self.request("POST", "/api/reserve", body)["reservations"])
        for r in rows:
            self.workers[r["serial"]] = r.get("url") or self.url
        return rows

    def extend(self, serials: list[str] | None = None,
               duration: float | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"client": self.client}
        if serials is not None:
            body["serials"] = serials
        if duration is not None:
            body["duration"] = duration
        return list(self.request("POST", "/api/extend", body)["reservations"])

    def end(self, serials: list[str]) -> list[dict[str, Any]]:
        return list(self.request("POST", "/api/end", {"client": self.client,
                                                      "serials": serials})["ended"])

    def end_all(self) -> list[dict[str, Any]]:
        return list(self.request("POST", "/api/end-all", {"client": self.client})["ended"])

    # ---------------------------------------------------------------- states
    def call(self, serial: str, method: str, **params: Any) -> dict[str, Any]:
        body = {"client": self.client, **params}
        path = f"/api/boards/{urllib.parse.quote(serial, safe='')}/{method}"
        return self.request("POST", path, body, base=self.workers.get(serial))

    def evaluate(self, serial: str, bitstreams: Mapping[str, bytes]) -> dict[str, Any]:
        """Queue ``{evaluation id: bitstream bytes}`` on a reserved pulse-count board."""
        encoded = {str(k): base64.b64encode(v).decode("ascii") for k, v in bitstreams.items()}
        return self.call(serial, "evaluate", bitstreams=encoded)

    def events(self, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        return self.request("GET", "/api/events",
                            query={"client": self.client, "after": after, "timeout": timeout},
                            timeout=timeout + self.timeout)


class EventHandler:
    """Override ``on_<event>`` methods; ``on_event`` gets anything without its own method."""

    def on_event(self, event: dict[str, Any]) -> None:
        log.info("farm event %s: %s", event.get("event"), event)

    def dispatch(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"on_{event.get('event')}", None)
        (handler or self.on_event)(event)


class EventListener:
    """Long-polls the farm for a client's events and hands each to ``handler``, in order."""

    def __init__(self, client: FarmClient, handler: EventHandler, poll_timeout: float = 10.0,
                 after: int = 0) -> None:
        self.client = client
        self.handler = handler
        self.poll_timeout = poll_timeout
        self.after = after
        self.errors = 0
        self.handler_errors = 0
        self.received = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(0.1, 10.0)

    def start(self) -> EventListener:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"farm-events:{self.client.client}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops after the poll in flight returns (at most ``poll_timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_timeout + self.client.timeout
                              if timeout is None else timeout)

    def __enter__(self) -> EventListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.client.events(self.after, self.poll_timeout)
            except FarmClientError as exc:
                self.errors += 1
                log.warning("farm events for %s: %s", self.client.client, exc)
                if self._stop.wait(self._backoff.next_delay()):
                    return
                continue
            self._backoff.reset()
            for event in answer.get("events", []):
                self.after = max(self.after, int(event["seq"]))
                self.received += 1
                try:
                    self.handler.dispatch(event)
                except Exception:  # noqa: BLE001 - a handler bug must not stop the listener
                    self.handler_errors += 1
                    log.exception("farm event handler failed on %s", event.get("event"))
