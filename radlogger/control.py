"""The daemon's control surface: the HTTP status API and the periodic ``status`` topic.

``radloggerd status`` asks a running daemon through this API (``GET /status``,
``/status.txt``, ``/graph``, ``/graph.dot``), bound to 127.0.0.1 unless configured otherwise,
with an optional bearer token.  The same port serves the live view (:mod:`radlogger.dashboard`:
the page at ``/``, its event stream ``/events`` and ``/live`` for ``radloggerd watch``), fed by a
viewer tap endpoint that the control adds to the pipeline while it runs.

The status topic (``radlogger.status.<name>``) lets any endpoint
subscribe to the daemon's own health: a store keeps it, an MQTT endpoint forwards it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .metrics import add_metrics_route
from .options import Option

__all__ = ["CONTROL_OPTIONS", "Control"]

log = logging.getLogger(__name__)

CONTROL_OPTIONS: tuple[Option, ...] = (
    Option("control_port", int, 0, "TCP port of the HTTP status API used by `radloggerd "
           "status` (0 = off)", min=0, max=65535),
    Option("control_host", str, "127.0.0.1", "address the status API binds to"),
    Option("control_token", str, "", "bearer token the status API requires (empty = none)"),
    Option("control_token_file", str, "", "file holding the bearer token; created with a "
           "random token (mode 0600) at first start if missing; overrides control_token"),
    Option("allow_unauthenticated", bool, False, "let the status API listen on a "
           "non-loopback address without a token (only behind a proxy that authenticates)"),
    Option("status_interval", float, 0.0, "seconds between status measurements published on "
           "radlogger.status.* (0 = off)", min=0),
    Option("status_down_after", float, 120.0, "seconds a device may be not running (never "
           "connected, or cycling through backoff) before status reports it not ok", min=1,
           max=86400),
)


class Control:
    """Starts and stops the status API and publisher of one running pipeline."""

    def __init__(self, pipeline: Any, settings: Any) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.web: Any = None
        self.publisher: Any = None
        self.tap: Any = None
        self.feed: Any = None
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        from .status import StatusPublisher, StatusTracker, add_routes

        s = self.settings
        tracker = StatusTracker(down_s=s.status_down_after)
        if s.status_interval:
            self.publisher = StatusPublisher(self.pipeline, s.status_interval, tracker=tracker)
            self.publisher.start()
        if s.control_port:
            from . import dashboard
            from .web import WebServer, resolve_token

            token = resolve_token(s.control_token or None, s.control_token_file or None,
                                  "status API", create=True)
            self.web = WebServer(s.control_host, s.control_port, token, name="radloggerd",
                                 public=("/health", *dashboard.PUBLIC_PATHS),
                                 allow_unauthenticated=s.allow_unauthenticated)
            add_routes(self.web.app, self.pipeline, tracker)
            self.tap = dashboard.ViewerTap(_free_name(self.pipeline, "viewer"))
            self.pipeline.add_endpoint(self.tap)
            self.feed = dashboard.add_routes(self.web.app, self.pipeline, tracker, self.tap)
            add_metrics_route(self.web.app, self.pipeline, tracker)
            self.web.start()
            log.info("status API on %s", self.web.url)
            self._sampling.clear()
            self._sampler = threading.Thread(target=self._sample, args=(tracker,),
                                             name="status-sampler", daemon=True)
            self._sampler.start()

    def _sample(self, tracker: Any) -> None:
        """Sample once a second, so a status request always has rates over the last seconds
        and a device cycling through backoff is seen as down however rarely status is asked."""
        while not self._sampling.wait(1.0):
            try:
                tracker.update(self.pipeline)
            except Exception:  # noqa: BLE001 - status must never take the daemon down
                log.exception("status sampling failed")

    def stop(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)
            self._sampler = None
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        if self.web is not None:
            self.web.stop()
            self.web = None
        if self.tap is not None:
            if self.tap.name in self.pipeline.endpoints:
                self.pipeline.remove_endpoint(self.tap.name, time.monotonic() + 2.0)
            self.tap = None


def _free_name(pipeline: Any, name: str) -> str:
    """``name``, or ``name2``... if a configured device or endpoint already has it."""
    taken = set(pipeline.devices) | set(pipeline.endpoints)
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}{i}"
    return candidate
