"""The farm as a pipeline device: the control plane's thread, API server and broker topics.

``[device:farm]`` with ``driver = pico_farm`` starts the reservation database, the HTTP API and
the housekeeping tick; pico drivers with ``farm = farm`` are its boards.  Every event sent to a
client is also published on the broker as ``<farm>.<event>`` (``results``,
``reservation_ending``, ``reservation_end``, ``failure``, ``devices_available``) so any
endpoint can store them; the value is the headline (number of results, the end reason, seconds
left, number of boards) and ``meta`` is the whole event.  Events are emitted from this
device's own thread (the outlet has one writer), taken from a deque the publishers append to.
"""

from __future__ import annotations

import collections
import socket
from typing import Any

from radlogger.device import Device
from radlogger.options import Option, OptionError
from radlogger.registries import Registries
from radlogger.web import WebError, WebServer, resolve_token

from .api import start_api
from .control import Farm
from .events import EVENT_TYPES
from .registry import boards

__all__ = ["FarmDevice"]


class FarmDevice(Device):
    kind = "pico_farm"
    summary = "reservation control plane for pico boards: SQLite, HTTP JSON API, client events"
    quantities = EVENT_TYPES
    options = (
        Option("db", str, "pico-farm.sqlite", "SQLite file of boards and reservations (WAL)"),
        Option("host", str, "127.0.0.1", "address the API listens on"),
        Option("port", int, 8470, "API port (0 = any free port)", min=0, max=65535),
        Option("token", str, "", "bearer token required on every API request (empty = none)"),
        Option("token_file", str, "", "read the token from this file instead"),
        Option("worker", str, "", "name of this host's worker (default: the host name)"),
        Option("reservation_s", float, 3600.0, "default reservation length in seconds", min=1e-3),
        Option("max_reservation_s", float, 86400.0, "longest reservation or extension",
               min=1e-3),
        Option("warn_before_s", float, 1200.0, "send 'reservation_ending' this long before the "
               "end", min=0),
        Option("heartbeat_interval", float, 15.0, "seconds between this worker's heartbeats",
               min=1e-3),
        Option("worker_timeout", float, 180.0, "a worker silent this long fails with its boards",
               min=1e-3),
        Option("board_grace", float, 10.0, "seconds a reserved board may stay disconnected "
               "before it is broken and its reservation ends", min=0),
        Option("flush_interval", float, 10.0, "results are sent at least this often", min=1e-3),
        Option("flush_remaining", int, 25, "results are sent at once when this few bitstreams "
               "remain queued", min=0),
        Option("max_queue", int, 1000, "most bitstreams queued per board", min=1),
        Option("event_queue", int, 10000, "events kept per client until acknowledged", min=1),
        Option("max_body_mb", float, 64.0, "largest request body in MiB (an evaluate batch of "
               "25 bitstreams is about 3.5 MiB)", min=0.01),
        Option("tick", float, 0.1, "seconds between housekeeping passes", min=1e-3, max=5),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        try:
            self.token = resolve_token(s.token, s.token_file, f"device {name}") or ""
        except WebError as exc:
            raise OptionError("token_file", str(exc)) from None
        self.worker_name = s.worker or socket.gethostname()
        self.farm: Farm | None = None
        self.server: WebServer | None = None
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._registries: Registries | None = None  # the running pipeline's, once attached

    def attach(self, registries: Registries) -> None:
        """The boards are the pico drivers that the same running pipeline attached."""
        self._registries = registries

    def detach(self, registries: Registries) -> None:
        self._registries = None

    def _boards(self) -> list[Any]:
        registries = self._registries
        return boards(registries, self.name) if registries is not None else []

    def counters(self) -> dict[str, int | float]:
        farm = self.farm
        return {"boards": len(self._boards()), "ticks": farm.ticks if farm is not None else 0,
                "events_pending": len(self._events)}

    def listens(self) -> list[tuple[str, str, int]]:
        return [("tcp", self.settings.host, self.settings.port)] if self.settings.port else []

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else ""

    def open(self) -> None:
        s = self.settings
        farm = Farm(self.name, s, self.worker_name, self._events.append, self._boards)
        try:
            server = start_api(farm, s.host, s.port, self.token, int(s.max_body_mb * (1 << 20)))
        except BaseException:
            farm.close()
            raise
        farm.url = server.url
        farm.restore()
        self.farm, self.server = farm, server

    def poll(self) -> None:
        farm = self.farm
        assert farm is not None
        farm.tick()
        self._emit_events()
        self.wait(self.settings.tick)

    def _emit_events(self) -> None:
        events = self._events
        while events:
            ev = events.popleft()
            kind = ev["event"]
            if kind == "results":
                value: Any = len(ev["results"]) + len(ev["failed"])
            elif kind in ("reservation_end", "failure"):
                value = ev["reason"]
            elif kind == "reservation_ending":
                value = ev["remaining_s"]
            else:
                value = len(ev.get("serials", ()))
            self.emit(kind, value, meta=ev)

    def close(self) -> None:
        server, self.server = self.server, None
        farm, self.farm = self.farm, None
        if server is not None:
            server.stop()
        if farm is not None:
            farm.close()
        self._emit_events()
