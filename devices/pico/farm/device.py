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
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from radlogger.device import Device
from radlogger.options import Option, OptionError, by_reason
from radlogger.registries import Registries
from radlogger.web import WebError, WebServer, resolve_token

from ..protocol import FIRMWARES
from .api import start_api
from .compat import add_control_routes
from .control import Farm
from .events import EVENT_TYPES
from .icefarm import IcefarmSockets
from .reflash import Reflasher, load_image
from .registry import boards
from .roles import ControlLink, ControlOps, WorkerLink
from .sessions import Sessions


def _resolve(host: str) -> str:
    """An address for ``host`` (a name resolves; unresolvable counts as not loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "0.0.0.0"
    try:
        return socket.getaddrinfo(host, None)[0][4][0]
    except (OSError, UnicodeError):
        return "0.0.0.0"

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
        Option("role", str, "both", "control (reservation database, clients), worker (boards "
               "attached, registers with control_url) or both in one daemon",
               choices=("both", "control", "worker")),
        Option("control_url", str, "", "a worker's control, e.g. http://control:8080 (role = "
               "worker)"),
        Option("url", str, "", "base URL clients and the control reach this process at "
               "(default: http://host:port)"),
        Option("icefarm", bool, True, "serve iCEFARM's interface (GET routes at the root, "
               "Socket.IO) beside radloggerd's own /api"),
        Option("allow_unauthenticated", bool, False, "allow the iCEFARM interface (which has "
               "no token) on a non-loopback host"),
        Option("max_sessions", int, 1000, "most client sessions (and event backlogs) kept",
               min=1),
        Option("session_ttl", float, 60.0, "a session without socket and reservations is "
               "dropped after this many seconds", min=0.01),
        Option("socketio_buffer_mb", float, 100.0, "largest Socket.IO message in MiB (an "
               "iCEFARM batch of bitstreams)", min=0.1),
        Option("flash", bool, False, "reflash the default firmware, test it and flash the "
               "board's own firmware again after every reservation (iCEFARM's cycle)"),
        Option("firmware_default", str, "", "default firmware image (.uf2 or .bin) for flash"),
        Option("firmware_pulsecount", str, "", "pulse-count firmware image for flash"),
        Option("firmware_variance", str, "", "variance firmware image for flash"),
        Option("flash_timeout", float, 30.0, "seconds a flashed board has to come back",
               min=0.1),
        Option("flash_sim_root", str, "", "flash simulated boards (radlogger.devices.pico."
               "simflash) living in this directory, with simulated firmware images"),
        Option("max_pending_events", int, 100000, "farm events waiting for the broker; beyond "
               "it they are dropped and counted (instrument data keeps the queue)", min=1),
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
        self.events_overflow = 0
        self.sockets: IcefarmSockets | None = None
        self.sessions = Sessions(s.max_sessions, s.event_queue, s.session_ttl)
        self.links: list[Any] = []
        if s.role == "worker" and not s.control_url:
            raise OptionError("control_url", f"device {name}: role = worker needs control_url "
                              "(the control's base URL, e.g. http://control:8080)")
        if (s.icefarm and not s.allow_unauthenticated
                and not ipaddress.ip_address(_resolve(s.host)).is_loopback):
            raise OptionError("allow_unauthenticated", f"device {name}: the iCEFARM interface "
                              f"has no authentication; host = {s.host} is not loopback: set "
                              "allow_unauthenticated = yes (or put a proxy in front), or "
                              "icefarm = no")
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
        out: dict[str, int | float] = {
            "boards": len(self._boards()), "ticks": farm.ticks if farm is not None else 0,
            "events_pending": len(self._events), "events_overflow": self.events_overflow}
        if farm is not None:
            out["claims_refused"] = farm.claims_refused
            out.update(by_reason("client_events_lost", farm.hub.lost))
        if self.sockets is not None:
            out.update({f"icefarm.{k}": v for k, v in self.sockets.counters().items()})
        for link in self.links:
            if isinstance(link, Reflasher):
                out.update(link.counters())
                continue
            out.update({f"link.{k}": v for k, v in vars(link).items()
                        if isinstance(v, int) and not isinstance(v, bool)})
        return out

    def _reflasher(self, farm: Farm) -> Reflasher:
        s = self.settings
        if s.flash_sim_root:
            from ..simflash import SimUsbView, sim_firmware
            from ..uf2 import bin_to_uf2

            images = {k: bin_to_uf2(sim_firmware(k)) for k in ("default", *FIRMWARES)}
            return Reflasher(farm, images, SimUsbView(s.flash_sim_root), s.flash_timeout)
        images = {}
        for k in ("default", *FIRMWARES):
            path = s[f"firmware_{k}"]
            if not path:
                raise OptionError(f"firmware_{k}", f"device {self.name}: flash = yes needs "
                                  f"firmware_{k} (a .uf2 or .bin image)")
            try:
                images[k] = load_image(path)
            except OSError as exc:
                raise OptionError(f"firmware_{k}", f"{path}: {exc.strerror}") from None
        return Reflasher(farm, images, None, s.flash_timeout)

    def _sink(self, ev: dict[str, Any]) -> None:
        """Farm events for the broker, bounded: bookkeeping never crowds out instrument data."""
        if len(self._events) >= self.settings.max_pending_events:
            self.events_overflow += 1
            return
        self._events.append(ev)

    def _icefarm(self, server: WebServer) -> Callable[[str, list[str]], None] | None:
        s, farm = self.settings, self.farm
        if not s.icefarm or farm is None:
            return None
        sockets = IcefarmSockets(farm, s.role != "worker", s.role != "control", self.sessions)
        sockets.attach(server, int(s.socketio_buffer_mb * (1 << 20)))
        if s.role != "worker":
            add_control_routes(server.app, ControlOps(farm, self.token, sockets.initialized))
        self.sockets = sockets
        return sockets.initialized

    def listens(self) -> list[tuple[str, str, int]]:
        return [("tcp", self.settings.host, self.settings.port)] if self.settings.port else []

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else ""

    def open(self) -> None:
        s = self.settings
        farm = Farm(self.name, s, self.worker_name, self._sink, self._boards)
        self.farm = farm
        try:
            server = start_api(farm, s.host, s.port, self.token, int(s.max_body_mb * (1 << 20)),
                               extend=self._icefarm)
        except BaseException:
            self.farm = None
            farm.close()
            raise
        farm.url = s.url.rstrip("/") or server.url
        if s.flash:
            farm.reflasher = self._reflasher(farm)
            self.links.append(farm.reflasher)
        farm.restore()
        self.server = server
        if s.role != "worker":
            self.links.append(ControlLink(farm, self.token, s.heartbeat_interval))
        if s.role == "worker":
            self.links.append(WorkerLink(farm, s.control_url, self.token, s.heartbeat_interval))
        for link in self.links:
            link.start()

    def poll(self) -> None:
        farm = self.farm
        assert farm is not None
        farm.tick()
        if self.sockets is not None:
            self.sessions.expire({r["client"] for r in farm.db.active()})
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
            elif kind == "state":
                value = ev["status"]
            elif kind == "flash":
                value = ev["step"]
            else:
                value = len(ev.get("serials", ()))
            self.emit(kind, value, meta=ev)

    def close(self) -> None:
        links, self.links = self.links, []
        for link in links:
            link.stop()
        server, self.server = self.server, None
        farm, self.farm = self.farm, None
        if server is not None:
            server.stop()
        if farm is not None:
            farm.close()
        self._emit_events()
