"""The live view of a running daemon: a browser dashboard and the data ``radloggerd watch`` reads.

Served on the control port by the one HTTP stack (:mod:`radlogger.web`), next to ``/status``:

* ``GET /`` and ``/dashboard/*``: the page and its script and style, shipped in the package
  (no external network).  They hold no data, so they are served without the token: a browser
  cannot send a bearer header when it navigates.  The page asks for the token (or takes it
  from ``#token=...``) and sends it on every data request, so the data keeps the API's rules;
* ``GET /events``: the data, pushed as server-sent events every ``interval`` seconds (a bounded
  rate whatever the instruments' rate): status (states, counters, rates, last errors), the
  graph, and what the :class:`~radlogger.dashboard.tap.ViewerTap` kept.  Read with ``fetch``
  so the bearer header can be sent;
* ``GET /live?pattern=GLOB&arrays=0``: one JSON snapshot of the same (``radloggerd watch``).

One payload is built per interval and shared by every client, so a second browser costs a
write, not a second walk over the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any

from ..graph import build_graph
from ..losses import BY_DESIGN
from ..topics import pattern_matches
from .tap import ViewerTap

__all__ = ["ViewerTap", "add_routes", "PUBLIC_PATHS", "STATIC_FILES", "Feed"]

#: files served under /dashboard/ (and / for the page)
STATIC_FILES = {"index.html": "text/html", "app.js": "application/javascript",
                "style.css": "text/css"}
#: paths served without the token: the page and its assets, no data
PUBLIC_PATHS = ("/", *(f"/dashboard/{f}" for f in STATIC_FILES))


def graph_json(pipeline: Any, status: Any) -> dict[str, Any]:
    g = build_graph(pipeline, status)
    return {"nodes": [vars(n) for n in g.nodes.values()], "edges": g.edges}


class Feed:
    """Builds the pushed payload at most once per ``interval``; shared by all clients."""

    def __init__(self, pipeline: Any, tracker: Any, tap: ViewerTap, interval: float) -> None:
        self.pipeline = pipeline
        self.tracker = tracker
        self.tap = tap
        self.interval = interval
        self._t = 0.0
        self._since = 0.0
        self._payload = ""
        self.built = 0
        self.clients = 0

    def full(self) -> str:
        """Everything kept (a client's first event)."""
        return self._build(0.0)

    def latest(self) -> str:
        now = time.monotonic()
        if now - self._t >= self.interval * 0.9 or not self._payload:
            since, self._since = self._since, time.time()
            self._payload = self._build(since)
            self._t = now
        return self._payload

    def _build(self, since: float) -> str:
        self.built += 1
        status = self.tracker.update(self.pipeline)
        return json.dumps({"t": time.time(), "interval": self.interval,
                           "status": status.to_dict(), "graph": graph_json(self.pipeline, status),
                           "view": self.tap.view(since), "viewer": self.tap.name,
                           "by_design": sorted(BY_DESIGN),
                           "inboxes": {n: e.inbox.size
                                       for n, e in list(self.pipeline.endpoints.items())}},
                          default=str, separators=(",", ":"))


def add_routes(app: Any, pipeline: Any, tracker: Any, tap: ViewerTap,
               interval: float = 1.0) -> Feed:
    """The dashboard's routes on an aiohttp application (the control API's)."""
    from aiohttp import web

    feed = Feed(pipeline, tracker, tap, interval)
    static = resources.files(__package__).joinpath("static")

    def asset(name: str) -> Any:
        body = static.joinpath(name).read_bytes()

        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=STATIC_FILES[name],
                                headers={"Cache-Control": "no-cache"})
        return serve

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        feed.clients += 1
        try:
            await resp.write(f"data: {feed.full()}\n\n".encode())
            while True:
                await asyncio.sleep(interval)
                await resp.write(f"data: {feed.latest()}\n\n".encode())
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            feed.clients -= 1
        return resp

    async def live(request: web.Request) -> web.Response:
        pattern = request.query.get("pattern", "")
        arrays = request.query.get("arrays", "1") not in ("0", "no", "false")
        status = tracker.update(pipeline)
        view = tap.view(0.0, arrays)
        if pattern:
            for key in ("topics", "series", "recent", "arrays"):
                view[key] = {t: v for t, v in view[key].items() if pattern_matches(pattern, t)}
        return web.Response(text=json.dumps({"t": time.time(), "status": status.to_dict(),
                                             "view": view, "viewer": tap.name,
                                             "by_design": sorted(BY_DESIGN)}, default=str),
                            content_type="application/json")

    app.router.add_get("/", asset("index.html"))
    for name in STATIC_FILES:
        app.router.add_get(f"/dashboard/{name}", asset(name))
    app.router.add_get("/events", events)
    app.router.add_get("/live", live)
    return feed
