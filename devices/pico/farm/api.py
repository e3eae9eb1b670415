"""The farm's HTTP JSON API (aiohttp).

=====================================  =========================================================
``GET  /api/health``                   liveness, farm and worker name
``GET  /api/available[?kind=K]``       ``{"available": n, "serials": [...]}``
``GET  /api/devices``                  every board: status, worker, reservation, driver counters
``POST /api/reserve``                  ``{"client", "kind", "amount" | "serials", "args"?,
                                       "duration"?}`` -> ``{"reservations": [...]}``
``POST /api/extend``                   ``{"client", "serials"?, "duration"?}``
``POST /api/end``                      ``{"client", "serials"}`` -> ``{"ended": [...]}``
``POST /api/end-all``                  ``{"client"}``
``POST /api/boards/<serial>/<method>`` a state method: ``{"client", ...params}``
``GET  /api/events?client=C&after=N``  long-poll (``timeout`` s, default 30) for events
``POST /api/workers/<name>/heartbeat`` ``{"url", "boards": [{"serial", "firmware", "ok"}]}``
``DELETE /api/boards/<serial>``        forget a board that is not reserved
=====================================  =========================================================

Served by the project's one HTTP stack (:mod:`radlogger.web`) on its own thread and loop.
Every error is ``{"error": "<one line naming the field or thing and the fix>"}`` with a 4xx
status (nested or non-UTF-8 bodies too); with a ``token`` configured every ``/api/`` request
needs ``Authorization: Bearer <token>`` (401 otherwise; iCEFARM's root routes and Socket.IO
have none).  Farm operations run in the default executor, never on the loop (issue 14: a
500-board heartbeat blocked the API); the long-poll is asyncio-native.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from radlogger.web import WebServer

from ..protocol import FIRMWARES
from .control import Farm
from .db import STATUSES
from .errors import BadRequest, FarmError, Unauthorized
from .roles import worker_release as release

__all__ = ["make_app", "start_api"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TYPES = {int: "an integer", float: "a number", str: "a string", list: "a list",
          dict: "an object", bool: "true or false"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _field(body: dict[str, Any], key: str, kind: type, required: bool = False,
           default: Any = None) -> Any:
    """A typed field of a JSON body; 400 naming the field when it has the wrong type."""
    if key not in body or body[key] is None:
        if required:
            raise BadRequest(f"missing field '{key}' ({_TYPES[kind]})")
        return default
    value = body[key]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise BadRequest(f"field '{key}' must be {_TYPES[kind]}, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise BadRequest(f"field '{key}' must not be empty")
    return value


def _str_list(body: dict[str, Any], key: str) -> list[str] | None:
    values = _field(body, key, list)
    if values is not None and not all(isinstance(v, str) and v for v in values):
        raise BadRequest(f"field '{key}' must be a list of strings")
    return values


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads((await request.read()).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"malformed JSON body: {type(exc).__name__}: "
                         f"{str(exc)[:200]}".replace("\n", " ")) from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Database work in the default executor: never on the loop (issue 14)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def make_app(farm: Farm, token: str = "", max_body: int = 64 << 20,
             initialized: Callable[[str, list[str]], None] | None = None) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if token and request.path.startswith("/api/"):
                given = request.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    raise Unauthorized("missing or wrong token: send 'Authorization: Bearer "
                                       "<token>' as configured in the farm's token option")
            return await handler(request)
        except FarmError as exc:
            return _error(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and is logged
            log.exception("farm API %s %s failed", request.method, request.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    routes = web.RouteTableDef()

    @routes.get("/api/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "farm": farm.name, "worker": farm.worker})

    @routes.get("/api/available")
    async def available(request: web.Request) -> web.Response:
        kind = request.query.get("kind") or None
        serials = farm.db.available(kind)
        return web.json_response({"available": len(serials), "serials": serials})

    @routes.get("/api/devices")
    async def devices(request: web.Request) -> web.Response:
        return web.json_response({"devices": farm.devices()})

    @routes.post("/api/reserve")
    async def reserve(request: web.Request) -> web.Response:
        b = await _body(request)
        rows = await _off_loop(farm.reserve, _field(b, "client", str, True),
                               _field(b, "kind", str, True), _field(b, "amount", int),
                               _str_list(b, "serials"), _field(b, "duration", float),
                               _field(b, "args", dict))
        return web.json_response({"reservations": rows})

    @routes.post("/api/extend")
    async def extend(request: web.Request) -> web.Response:
        b = await _body(request)
        rows = await _off_loop(farm.extend, _field(b, "client", str, True),
                               _str_list(b, "serials"), _field(b, "duration", float))
        return web.json_response({"reservations": rows})

    @routes.post("/api/end")
    async def end(request: web.Request) -> web.Response:
        b = await _body(request)
        serials = _str_list(b, "serials")
        if not serials:
            raise BadRequest("missing field 'serials' (use /api/end-all to end every "
                             "reservation of a client)")
        return web.json_response({"ended": await _off_loop(
            farm.end, _field(b, "client", str, True), serials)})

    @routes.post("/api/end-all")
    async def end_all(request: web.Request) -> web.Response:
        b = await _body(request)
        return web.json_response({"ended": await _off_loop(
            farm.end, _field(b, "client", str, True))})

    @routes.post("/api/boards/{serial}/{method}")
    async def call(request: web.Request) -> web.Response:
        b = await _body(request)
        client = _field(b, "client", str, True)
        params = {k: v for k, v in b.items() if k != "client"}
        result = await _off_loop(farm.call, client, request.match_info["serial"],
                                 request.match_info["method"], params)
        return web.json_response(result)

    @routes.delete("/api/boards/{serial}")
    async def delete(request: web.Request) -> web.Response:
        farm.db.delete_board(request.match_info["serial"])
        return web.json_response({"deleted": request.match_info["serial"]})

    @routes.get("/api/events")
    async def events(request: web.Request) -> web.Response:
        q = request.query
        client = q.get("client", "").strip()
        if not client:
            raise BadRequest("missing query parameter 'client'")
        try:
            after = int(q.get("after", "0"))
            timeout = float(q.get("timeout", "30"))
            if not 0.0 <= timeout <= 300.0:  # NaN fails this too
                raise ValueError(timeout)
        except ValueError:
            raise BadRequest("query parameters 'after' (integer) and 'timeout' (seconds, "
                             "0 to 300) must be numbers") from None
        evs = await farm.hub.wait(client, after, timeout)
        return web.json_response({"events": evs, "last": farm.hub.last(client),
                                  "dropped": farm.hub.dropped.get(client, 0)})

    @routes.post("/api/workers/{name}/heartbeat")
    async def heartbeat(request: web.Request) -> web.Response:
        b = await _body(request)
        boards = []
        for item in _field(b, "boards", list, default=[]):
            if not isinstance(item, dict):
                raise BadRequest("field 'boards' must be a list of objects")
            fw = _field(item, "firmware", str, default="pulsecount")
            if fw not in FIRMWARES:
                raise BadRequest(f"board firmware '{fw}': one of {', '.join(FIRMWARES)}")
            status = _field(item, "status", str, default="")
            if status and status not in STATUSES:
                raise BadRequest(f"board status '{status}': one of {', '.join(STATUSES)}")
            boards.append({"serial": _field(item, "serial", str, True), "firmware": fw,
                           "ok": _field(item, "ok", bool, default=True), "status": status})
        refused = await _off_loop(farm.heartbeat, request.match_info["name"],
                                  _field(b, "url", str, default=""), boards,
                                  _field(b, "boot", str, default=""))
        if refused:
            return web.json_response({"error": f"board(s) {', '.join(refused)} are held by "
                                      "another live worker; claim refused", "refused": refused},
                                     status=409)
        return web.json_response({"ok": True})

    @routes.get("/api/worker/heartbeat")
    async def worker_heartbeat(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "worker": farm.worker})

    @routes.post("/api/worker/reserve")
    async def worker_reserve(request: web.Request) -> web.Response:
        b = await _body(request)
        client = _field(b, "client", str, True)
        rows = await _off_loop(farm.reserve, client, _field(b, "kind", str, True), None,
                               [_field(b, "serial", str, True)], _field(b, "duration", float),
                               _field(b, "args", dict))
        if initialized is not None:
            initialized(client, [r["serial"] for r in rows])
        return web.json_response({"reservations": rows})

    @routes.post("/api/worker/release")
    async def worker_release(request: web.Request) -> web.Response:
        b = await _body(request)
        ended = await _off_loop(release, farm, _field(b, "serial", str, True),
                                _field(b, "client", str, True), _field(b, "reason", str,
                                                                        default="ended"))
        return web.json_response({"ended": ended})

    @routes.post("/api/worker/reboot")
    async def worker_reboot(request: web.Request) -> web.Response:
        b = await _body(request)
        if initialized is not None:
            initialized(_field(b, "client", str, True), [_field(b, "serial", str, True)])
        return web.json_response({"ok": True})

    async def bind_events(app: web.Application) -> None:
        farm.hub.bind_loop(asyncio.get_running_loop())

    async def release_polls(app: web.Application) -> None:
        farm.hub.bind_loop(None)
        farm.hub.wake_all()

    app = web.Application(middlewares=[guard], client_max_size=max_body)
    app.add_routes(routes)
    app.on_startup.append(bind_events)
    app.on_shutdown.append(release_polls)
    return app


def start_api(farm: Farm, host: str = "127.0.0.1", port: int = 8470, token: str = "",
              max_body: int = 64 << 20,
              extend: Callable[[WebServer], Callable[[str, list[str]], None] | None]
              | None = None) -> WebServer:
    """Serve the farm's app on the shared HTTP stack (:class:`radlogger.web.WebServer`).

    The app is ours (JSON errors, a body limit sized for bitstream batches, the token checked
    by :func:`make_app` so a 401 is JSON too); the thread, loop, binding and stop are the
    stack's.  Raises :class:`radlogger.web.WebError` when the port cannot be bound.
    """
    server = WebServer(host, port, token=None, name=f"farm:{farm.name}")
    init: list[Callable[[str, list[str]], None]] = []
    server.app = make_app(farm, token, max_body, lambda c, s: init[0](c, s) if init else None)
    if extend is not None:  # the iCEFARM interface: Socket.IO and the root routes
        hook = extend(server)
        if hook is not None:
            init.append(hook)
    server.start()
    return server
