"""iCEFARM's control routes (GET at the root, JSON arguments) on the farm's aiohttp app.

Every route takes its arguments as a JSON body (``Content-Type: application/json``) or as
``?json=<urlencoded JSON>``, as iCEFARM's client sends them.  A missing or mistyped argument
answers 400, a handler result of ``True``/``None`` 200 with an empty body, ``False`` 500, any
other result 200 with JSON -- iCEFARM's rules, except that 400 and 500 carry a one-line JSON
``{"error": ...}`` naming the argument (the client ignores bodies that are not 200).  Nested or
non-UTF-8 input is a 400 too, never a 500 with a traceback (issue 14).

Database work runs in the default executor, never on the loop (issue 14: a long heartbeat
blocked the API).  There is no token here: iCEFARM's client sends none, so the device refuses
to serve these routes off loopback unless ``allow_unauthenticated = yes``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import BadRequest, FarmError

__all__ = ["add_control_routes", "parse_arguments", "ROUTES"]

log = logging.getLogger(__name__)

#: route -> its JSON arguments and their types (iCEFARM's signatures)
ROUTES: dict[str, dict[str, type]] = {
    "/available": {}, "/devices": {},
    "/reserve": {"amount": int, "name": str, "kind": str, "args": dict},
    "/reserveserials": {"name": str, "kind": str, "args": dict, "serials": list},
    "/extend": {"name": str, "serials": list}, "/extendall": {"name": str},
    "/end": {"name": str, "serials": list}, "/endall": {"name": str},
    "/reboot": {"serials": list}, "/delete": {"serials": list}, "/clear-workers": {},
    "/log": {"name": str, "logs": list},
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message.replace("\n", " ")}, status=status)


async def arguments(request: web.Request, spec: dict[str, type]) -> dict[str, Any]:
    """The route's arguments from the body or ``?json=``; :class:`BadRequest` naming the fix."""
    if not spec:
        return {}
    if request.content_type == "application/json":
        return parse_arguments(await request.read(), spec)
    return parse_arguments(request.query.get("json"), spec)


def parse_arguments(raw: bytes | str | None, spec: dict[str, type]) -> dict[str, Any]:
    """Decode and type-check; any input at all gives a dict or :class:`BadRequest`."""
    if raw is None:
        raise BadRequest("send the arguments as a JSON body (Content-Type: application/json) "
                         "or as ?json=<JSON>")
    try:
        body = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise BadRequest(f"the arguments are not JSON in UTF-8: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise BadRequest("the arguments must be a JSON object")
    out = {}
    for key, kind in spec.items():
        value = body.get(key)
        if value is None:
            raise BadRequest(f"missing argument '{key}' ({kind.__name__})")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadRequest(f"argument '{key}' must be {kind.__name__}, got "
                             f"{type(value).__name__}")
        if kind is list and key == "serials" and not all(isinstance(v, str) for v in value):
            raise BadRequest("argument 'serials' must be a list of strings")
        out[key] = value
    return out


def add_control_routes(app: web.Application, ops: Any) -> None:
    """Add the routes; ``ops`` has one method per route (:class:`.roles.ControlOps`)."""

    def route(path: str, fn: Callable[..., Any]) -> None:
        spec = ROUTES[path]

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                args = await arguments(request, spec)
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, functools.partial(fn, **args))
            except FarmError as exc:
                return _error(exc.status if exc.status == 400 else 500, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug: logged, one line to the client
                log.exception("iCEFARM route %s failed", path)
                return _error(500, f"internal error: {type(exc).__name__}")
            if result is True or result is None:
                return web.Response(status=200)
            if result is False:
                return _error(500, f"{path[1:]} failed")
            return web.json_response(result)

        app.router.add_get(path, handler)

    for path in ROUTES:
        name = path[1:].replace("-", "_")
        route(path, getattr(ops, name))
