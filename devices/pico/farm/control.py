"""The farm's control and local-worker roles: reservations, board health, heartbeats, events.

Control keeps the database and answers the API; the local worker is this process's boards
(pico drivers with ``farm = <name>``).  Remote workers report through
``POST /api/workers/<name>/heartbeat``; a worker silent for ``worker_timeout`` fails: its boards
become ``broken`` and every reservation on them ends with a ``failure`` event.  The local
worker heartbeats itself from :meth:`Farm.tick`, so a farm whose tick thread hangs fails the
same way (seen by another control sharing the database).

Board lifecycle: a new board is ``testing``; a local board that is connected and idle at its
ready line becomes ``available``; reservation ends put it back to ``testing`` (it is checked
again before the next client gets it); a board whose driver has been disconnected for longer
than ``board_grace`` is ``broken`` and its reservation ends with ``failure``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from radlogger.device import DeviceState

from .db import ReservationDB
from .errors import BadRequest, Conflict, NotFound
from .events import EventHub
from .states import STATES, State

__all__ = ["Farm"]

#: statuses a worker's board passes through between reservations (not failures)
_BETWEEN = ("await_flash_default", "flashing_default", "testing")

log = logging.getLogger(__name__)


class Farm:
    def __init__(self, name: str, settings: Any, worker: str,
                 sink: Callable[[dict[str, Any]], None] | None = None,
                 boards: Callable[[], list[Any]] = list) -> None:
        self.name = name
        #: this worker's boards: the running pico drivers attached to this farm
        self._boards = boards
        self.settings = settings
        self.worker = worker
        self.url = ""
        self.db = ReservationDB(settings.db)
        self.hub = EventHub(settings.event_queue, sink, settings.max_sessions)
        #: called as ``on_end(reservation, reason)`` for every reservation that ends (the
        #: control tells the board's worker to release it)
        self.on_end: Callable[[dict[str, Any], str], None] | None = None
        self._boots: dict[str, str] = {}  # worker -> boot id of its process
        #: reflashes and tests local boards after their reservations (flash = yes)
        self.reflasher: Any = None
        self.claims_refused = 0
        self.states: dict[str, State] = {}
        self._lock = threading.RLock()
        self._unhealthy_since: dict[str, float] = {}
        self._registered: dict[str, str] = {}  # serial -> firmware written to the database
        self._last_heartbeat = 0.0
        self.ticks = 0

    # ---------------------------------------------------------------- boards
    def local_boards(self) -> dict[str, Any]:
        return {b.board_id: b for b in self._boards()}

    def _state_for(self, r: dict[str, Any]) -> None:
        board = self.local_boards().get(r["serial"])
        if board is None or r["serial"] in self.states:
            return
        self.states[r["serial"]] = STATES[r["kind"]](board, r, self.hub.publish, self.settings)

    def _end_state(self, r: dict[str, Any], reason: str) -> None:
        state = self.states.pop(r["serial"], None)
        facts = state.close(reason) if state is not None else {}
        if self.on_end is not None and r.get("worker") != self.worker:
            self.on_end(r, reason)
        if reason != "failure":
            if self.reflasher is not None and r["serial"] in self.local_boards():
                self.reflasher.submit(r["serial"])
            else:
                self._state_event(r["serial"], "testing")
        self.hub.publish("reservation_end", r["client"], serial=r["serial"], reservation=r["id"],
                         reason=reason, **facts)

    def restore(self) -> None:
        """After a restart: states for reservations that are still active."""
        with self._lock:
            for r in self.db.active():
                self.hub.known(r["client"])
                self._state_for(r)

    # ---------------------------------------------------------------- API operations
    def _duration(self, duration: float | None) -> float:
        s = self.settings
        if duration is None:
            return float(s.reservation_s)
        if duration <= 0:
            raise BadRequest("field 'duration' must be a positive number of seconds")
        return min(float(duration), float(s.max_reservation_s))

    def reserve(self, client: str, kind: str, amount: int | None = None,
                serials: list[str] | None = None, duration: float | None = None,
                args: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if kind not in STATES:
            raise BadRequest(f"unknown state kind '{kind}'; known: {', '.join(sorted(STATES))}")
        if (amount is None) == (not serials):
            raise BadRequest("give either 'amount' (a number of boards) or 'serials'")
        if amount is not None and amount < 1:
            raise BadRequest("field 'amount' must be at least 1")
        with self._lock:
            self._sync_local(time.monotonic())  # a board that just came up is reservable
            rows = self.db.reserve(client, kind, self._duration(duration), amount, serials, args)
            self.hub.known(client)
            for r in rows:
                self._state_for(r)
                self._state_event(r["serial"], "reserved")
        return rows

    def extend(self, client: str, serials: list[str] | None = None,
               duration: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return self.db.extend(client, self._duration(duration), serials)

    def end(self, client: str, serials: list[str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.end(client, serials, "ended")
            for r in rows:
                self._end_state(r, "ended")
        return rows

    def call(self, client: str, serial: str, method: str,
             params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            board = self.db.board(serial)
            if board is None:
                raise NotFound(f"unknown board {serial}")
            held = self.db.active(client=client, serial=serial)
            if not held:
                raise Conflict(f"client {client} holds no reservation of board {serial}")
            state = self.states.get(serial)
            if state is None:
                r = held[0]
                raise Conflict(f"board {serial} is attached to worker {r['worker']} "
                               f"({r['url'] or 'no url'}); call its state methods there")
        return state.call(method, params)

    def heartbeat(self, worker: str, url: str, boards: list[dict[str, Any]],
                  boot: str = "") -> list[str]:
        """A (remote) worker reports in with its boards; returns the serials refused.

        A worker claims only boards that no live worker holds: a board registered by another
        worker that has not failed stays with it, and the claim is refused, logged, counted
        (issue 14: a heartbeat could move any board, and clients then sent bitstreams to the
        new worker's URL).  A worker that comes back with a new ``boot`` id restarted: the
        reservations on its boards are gone with its process, so they end with ``failure``.
        """
        refused = []
        with self._lock:
            previous = self._boots.get(worker)
            if boot and previous and previous != boot:
                self._fail_worker_boards(worker, f"worker {worker} restarted")
            if boot:
                self._boots[worker] = boot
            self.db.heartbeat(worker, url)
            live = {w["name"] for w in self.db.workers() if not w["failed"]}
            for b in boards:
                held = self.db.board(b["serial"])
                if held is not None and held["worker"] != worker and held["worker"] in live:
                    refused.append(b["serial"])
                    continue
                status = self.db.register_board(b["serial"], worker, b["firmware"])
                theirs = b.get("status", "")
                if not b["ok"] and theirs in _BETWEEN and status != "reserved":
                    # the worker is flashing or testing it after a reservation: mirror that
                    if status != theirs and self.db.set_status(b["serial"], theirs):
                        self._state_event(b["serial"], theirs)
                    continue
                if b["ok"] and theirs != "reserved" and status in ("testing", "broken", *_BETWEEN):
                    self.db.set_status(b["serial"], "available",
                                       only_from=("testing", "broken", *_BETWEEN))
                    self._state_event(b["serial"], "available")
                    self.hub.broadcast("devices_available", serials=[b["serial"]],
                                       available=len(self.db.available()))
                elif not b["ok"] and status != "broken":
                    self._break(b["serial"], "the worker reports the board as not working")
            if refused:
                self.claims_refused += len(refused)
                log.warning("farm %s: worker %s claimed board(s) %s held by another live "
                            "worker; refused", self.name, worker, ", ".join(refused))
        return refused

    def _fail_worker_boards(self, worker: str, detail: str) -> None:
        for board in self.db.boards():
            if board["worker"] == worker and board["reservation"] is not None:
                self._break(board["serial"], detail)

    def _state_event(self, serial: str, status: str) -> None:
        """A board's status changed: a broker measurement (``<farm>.state``) for the record."""
        if self.hub.sink is not None:
            self.hub.sink({"event": "state", "serial": serial, "status": status,
                           "client": "", "seq": 0})

    def devices(self) -> list[dict[str, Any]]:
        local = self.local_boards()
        rows = self.db.boards()
        for r in rows:
            board = local.get(r["serial"])
            if board is not None:
                r["driver"] = {"device": board.name, "state": board.state.value,
                               "last_error": board.last_error, "serial": board.board_serial,
                               "port": board.port_path, **board.counters()}
        return rows

    # ---------------------------------------------------------------- housekeeping
    def _break(self, serial: str, detail: str) -> None:
        self._state_event(serial, "broken")
        for r in self.db.end_board(serial, "failure", "broken"):
            self.hub.publish("failure", r["client"], serial=serial, reservation=r["id"],
                             reason="board", detail=detail)
            self._end_state(r, "failure")

    def _sync_local(self, now: float) -> None:
        """Register local boards and follow their health."""
        available = []
        grace = self.settings.board_grace
        statuses = self.db.statuses()
        for serial, board in self.local_boards().items():
            status = statuses.get(serial)
            if status is None or self._registered.get(serial) != board.settings.firmware:
                status = self.db.register_board(serial, self.worker, board.settings.firmware)
                self._registered[serial] = board.settings.firmware
            healthy = board.alive and board.state is DeviceState.RUNNING
            if healthy:
                self._unhealthy_since.pop(serial, None)
                if status == "testing" and board.ready_for_work:
                    if self.db.set_status(serial, "available", only_from=("testing",)):
                        available.append(serial)
                        self._state_event(serial, "available")
                elif status == "broken" and not (self.reflasher is not None
                                                 and serial in self.reflasher.broken):
                    self.db.set_status(serial, "testing", only_from=("broken",))
                continue
            since = self._unhealthy_since.setdefault(serial, now)
            if status in ("available", "reserved") and now - since >= grace:
                self._break(serial, f"device {board.name} is {board.state.value}: "
                                    f"{board.last_error or 'not connected'}")
        if available:
            self.hub.broadcast("devices_available", serials=available,
                               available=len(self.db.available()))

    def tick(self) -> None:
        """Periodic work: heartbeats, board health, expiry, warnings, result flushes."""
        s = self.settings
        now = time.monotonic()
        with self._lock:
            self.ticks += 1
            if now - self._last_heartbeat >= s.heartbeat_interval:
                self.db.heartbeat(self.worker, self.url)
                self._last_heartbeat = now
            self._sync_local(now)
            for r in self.db.expire():
                self._end_state(r, "expired")
            for r in self.db.due_warnings(s.warn_before_s):
                self.hub.publish("reservation_ending", r["client"], serial=r["serial"],
                                 reservation=r["id"], expires=r["expires"],
                                 remaining_s=max(0.0, r["expires"] - self.db.clock()))
            workers, ended = self.db.fail_silent_workers(s.worker_timeout, exclude=self.worker)
            for r in ended:
                self.hub.publish("failure", r["client"], serial=r["serial"], reservation=r["id"],
                                 reason="worker", detail=f"worker {r['worker']} missed its "
                                 f"heartbeats for {s.worker_timeout}s")
                self._end_state(r, "failure")
            for w in workers:
                log.warning("farm %s: worker %s missed its heartbeats; its boards are broken",
                            self.name, w)
            states = list(self.states.values())
            busy = {r["client"] for r in self.db.active()}
            self.hub.expire(busy, s.session_ttl)
        for state in states:
            state.tick(now)

    def close(self) -> None:
        """Stop serving; active reservations stay in the database for the next start.

        Queued bitstreams are dropped (logged with their number): their results could not
        reach a client any more.  Results already made are on the broker topics.
        """
        with self._lock:
            for state in list(self.states.values()):
                facts = state.close("farm_stopped")
                if facts.get("dropped"):
                    log.warning("farm %s: %d queued bitstreams of board %s dropped at stop",
                                self.name, facts["dropped"], state.serial)
            self.states.clear()
            self.db.close()
