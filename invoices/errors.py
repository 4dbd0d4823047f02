"""HTTP errors as JSON, and the middleware that guarantees every error is one.

``ApiError`` is what handlers raise for a client mistake. ``error_middleware``
turns it, aiohttp's own HTTP errors (404, 405, 413 ...), engine errors and
storage faults into ``{"error": "..."}`` responses:

- ``RunNotFound`` -> 404
- ``sqlite3`` operational/database errors (disk full, read-only file, locked)
  and ``EngineClosed`` (shutting down) -> 503: the request was fine, the
  service cannot serve it right now
- anything else -> 500, logged with its traceback. This is a last resort:
  every known failure has a 4xx or 503 above it, and the tests check that no
  request produces a 500.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from durable import EngineClosed, RunNotFound

from .responses import json_error

__all__ = ["ApiError", "error_middleware"]

log = logging.getLogger("invoices.http")


class ApiError(Exception):
    """A request the API refuses; becomes ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        return json_error(self.status, self.message, headers=self.headers, **self.extra)


_HTTP_MESSAGES = {
    404: "Not found: no route or file at this path",
    405: "Method not allowed",
    413: "Request body too large: the limit is 64 KiB",
}


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    headers = {}
    allow = exc.headers.get("Allow")
    if allow is not None:
        headers["Allow"] = allow
    message = _HTTP_MESSAGES.get(exc.status, exc.reason)
    if exc.status == 405 and allow:
        message = f"Method not allowed: use {allow}"
    return json_error(exc.status, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: every failure leaves as a JSON error response."""
    try:
        response = await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except RunNotFound as exc:
        return json_error(404, str(exc))
    except EngineClosed:
        return json_error(503, "The service is shutting down; try again in a moment")
    except sqlite3.DatabaseError as exc:  # OperationalError is a subclass
        log.warning("storage fault on %s %s: %s", request.method, request.path, exc)
        return json_error(503, f"Storage unavailable: {exc}. Try again when the fault is cleared.")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_error(500, "Internal error: the server logged the details")
    return response
