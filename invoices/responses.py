"""JSON responses and timestamps as the HTTP API writes them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["JSON_CONTENT_TYPE", "json_error", "json_response"]

JSON_CONTENT_TYPE = "application/json"


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response whose body is ``data`` encoded by orjson."""
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


def json_error(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """``{"error": message, **extra}`` with the given status."""
    return json_response({"error": message, **extra}, status=status, headers=headers)
