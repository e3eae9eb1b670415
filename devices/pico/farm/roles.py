"""Control and worker roles across hosts: what they say to each other, over HTTP with a token.

* A **worker** (boards attached) registers its boards with the control every
  ``heartbeat_interval`` (``POST <control>/api/workers/<name>/heartbeat`` with its URL, a boot
  id and every board with its firmware and health) and serves ``/api/worker/*`` for the
  control: ``heartbeat``, ``reserve``, ``release``, ``reboot``.  It keeps its own small
  database of its boards (the same :class:`.control.Farm`), in which the control's
  reservations are mirrored while they last.
* The **control** keeps the reservation database, answers clients (:class:`ControlOps` behind
  iCEFARM's routes), pings each worker every ``heartbeat_interval`` and counts a worker silent
  for ``worker_timeout`` as failed (its boards break, their clients get ``failure``); a worker
  that registers with a new boot id restarted, with the same result at once.
* A daemon can be both: its own boards are then local, with no HTTP between the two roles.

Control <-> worker traffic carries ``Authorization: Bearer <token>`` (the farm's token); only
the client-facing iCEFARM interface is open, on loopback unless allowed otherwise.
HTTP out of the process uses the standard library in threads (never on the event loop).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import BadRequest, Conflict, FarmError, NotFound

__all__ = ["http_json", "ControlOps", "WorkerLink", "ControlLink"]

log = logging.getLogger(__name__)


def http_json(method: str, url: str, body: Any = None, token: str = "",
              timeout: float = 10.0) -> Any:
    """One JSON request; :class:`Conflict` on any failure (the message names the URL)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = str(exc.reason)
        raise Conflict(f"{method} {url}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Conflict(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


class ControlOps:
    """iCEFARM's control routes (one method per route) on a :class:`.control.Farm`."""

    def __init__(self, farm: Any, token: str, initialized: Callable[[str, list[str]], None],
                 log_name: str = "icefarm") -> None:
        self.farm = farm
        self.token = token
        self.initialized = initialized
        self.remote_log = logging.getLogger(f"{__name__}.{log_name}")

    def _rows(self, rows: list[dict[str, Any]], client: str) -> list[dict[str, str]]:
        """Tell remote workers about the new reservations; connection rows for the client."""
        farm = self.farm
        local = [r["serial"] for r in rows if r["worker"] == farm.worker]
        try:
            for r in rows:
                if r["worker"] != farm.worker:
                    http_json("POST", f"{r['url']}/api/worker/reserve",
                              {"serial": r["serial"], "client": client, "kind": r["kind"],
                               "args": r["args"], "duration": r["expires"] - r["started"]},
                              self.token)
        except Conflict as exc:
            log.warning("farm %s: reservation for %s failed at a worker: %s", farm.name,
                        client, exc)
            farm.end(client, [r["serial"] for r in rows])
            raise
        self.initialized(client, local)
        return [{"serial": r["serial"], "url": r["url"] or farm.url} for r in rows]

    def available(self) -> dict[str, int]:
        return {"amount": len(self.farm.db.available())}

    def devices(self) -> list[str]:
        return list(self.farm.db.available())

    def reserve(self, amount: int, name: str, kind: str, args: dict[str, Any]) -> Any:
        try:
            rows = self.farm.reserve(name, kind, amount=amount, args=args)
        except (Conflict, NotFound):
            return False  # iCEFARM: 500 when not enough boards
        return self._rows(rows, name)

    def reserveserials(self, name: str, kind: str, args: dict[str, Any],
                       serials: list[str]) -> Any:
        try:
            rows = self.farm.reserve(name, kind, serials=serials, args=args)
        except (Conflict, NotFound):
            return False
        return self._rows(rows, name)

    def _held(self, name: str, serials: list[str] | None) -> list[str]:
        held = {r["serial"] for r in self.farm.db.active(client=name)}
        return sorted(held if serials is None else held.intersection(serials))

    def extend(self, name: str, serials: list[str]) -> list[str]:
        held = self._held(name, serials)
        return [r["serial"] for r in self.farm.extend(name, held)] if held else []

    def extendall(self, name: str) -> list[str]:
        return self.extend(name, self._held(name, None))

    def end(self, name: str, serials: list[str]) -> list[str]:
        held = self._held(name, serials)
        return [r["serial"] for r in self.farm.end(name, held)] if held else []

    def endall(self, name: str) -> list[str]:
        return self.end(name, self._held(name, None))

    def reboot(self, serials: list[str]) -> bool:
        """A board's state restarts: queued work stays; ``initialized`` is sent again."""
        for r in self.farm.db.active():
            if r["serial"] in serials:
                if r["worker"] == self.farm.worker:
                    self.initialized(r["client"], [r["serial"]])
                else:
                    http_json("POST", f"{r['url']}/api/worker/reboot",
                              {"serial": r["serial"], "client": r["client"]}, self.token)
        return True

    def delete(self, serials: list[str]) -> bool:
        for s in serials:
            try:
                self.farm.db.delete_board(s)
            except FarmError as exc:
                raise BadRequest(str(exc)) from None
        return True

    def clear_workers(self) -> dict[str, str]:
        for r in self.farm.db.active():
            self.farm.end(r["client"], [r["serial"]])
        return {"status": "ok"}

    def log(self, name: str, logs: list[Any]) -> bool:
        for row in logs:
            if isinstance(row, list) and len(row) == 2 and isinstance(row[0], int):
                self.remote_log.log(row[0], "[%s] %s", name, str(row[1])[:2000])
        return True


class WorkerLink:
    """A worker's thread: registers its boards with the control, every ``interval`` s."""

    def __init__(self, farm: Any, control_url: str, token: str, interval: float) -> None:
        self.farm = farm
        self.control_url = control_url.rstrip("/")
        self.token = token
        self.interval = interval
        self.boot = uuid.uuid4().hex
        self.sent = 0
        self.failed = 0
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"farm-link:{farm.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def boards(self) -> list[dict[str, Any]]:
        statuses = self.farm.db.statuses()
        out = []
        for serial, board in self.farm.local_boards().items():
            status = statuses.get(serial, "testing")
            ok = status in ("available", "reserved")
            out.append({"serial": serial, "firmware": board.settings.firmware, "ok": ok,
                        "status": status})
        return out

    def beat(self) -> None:
        url = f"{self.control_url}/api/workers/{self.farm.worker}/heartbeat"
        body = {"url": self.farm.url, "boot": self.boot, "boards": self.boards()}
        try:
            answer = http_json("POST", url, body, self.token) or {}
            self.refused = list(answer.get("refused", []))
            self.sent += 1
        except Conflict as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("farm %s: worker registration failed (%d times): %s",
                            self.farm.name, self.failed, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval)


class ControlLink:
    """The control's thread: pings remote workers; tells them when reservations end."""

    def __init__(self, farm: Any, token: str, interval: float) -> None:
        self.farm = farm
        self.token = token
        self.interval = interval
        self.pings_failed = 0
        self.releases_failed = 0
        self._pool = ThreadPoolExecutor(4, thread_name_prefix=f"farm-release:{farm.name}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"farm-ping:{farm.name}",
                                        daemon=True)

    def start(self) -> None:
        self.farm.on_end = self.release
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def release(self, r: dict[str, Any], reason: str) -> None:
        if not r.get("url") or self._stop.is_set():
            return

        def call() -> None:
            try:
                http_json("POST", f"{r['url']}/api/worker/release",
                          {"serial": r["serial"], "client": r["client"], "reason": reason},
                          self.token, timeout=5.0)
            except Conflict as exc:
                self.releases_failed += 1
                log.info("farm %s: release of %s at its worker failed: %s", self.farm.name,
                         r["serial"], exc)

        self._pool.submit(call)

    def ping(self) -> None:
        for w in self.farm.db.workers():
            if w["failed"] or w["name"] == self.farm.worker or not w["url"]:
                continue
            try:
                http_json("GET", f"{w['url']}/api/worker/heartbeat", token=self.token,
                          timeout=min(5.0, self.interval))
                self.farm.db.heartbeat(w["name"], w["url"])
            except Conflict:
                self.pings_failed += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.ping()


def worker_release(farm: Any, serial: str, client: str, reason: str) -> list[str]:
    """The control ended a reservation: end the mirrored one here (results flush, the rest
    of the queue is answered as failed)."""
    held = [r["serial"] for r in farm.db.active(client=client, serial=serial)]
    return [r["serial"] for r in farm.end(client, held)] if held else []

