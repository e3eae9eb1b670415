"""Farm errors a client can cause; each carries the HTTP status the API answers with."""

from __future__ import annotations

from radlogger.errors import ProtocolError

__all__ = ["FarmError", "BadRequest", "Unauthorized", "NotFound", "Conflict"]


class FarmError(ProtocolError):
    status = 400


class BadRequest(FarmError):
    status = 400


class Unauthorized(FarmError):
    status = 401


class NotFound(FarmError):
    status = 404


class Conflict(FarmError):
    status = 409
