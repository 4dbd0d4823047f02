"""The hook routes of ``durable.web``: webhooks by token, and ``POST /hooks/{token}`` with a JSON payload.

The webhook route answers what the engine's ``resume_webhook`` gives: 202 with
an empty body, the webhook's static response, or the workflow's manual one
(504 when it does not come in time). An unknown token is a 404 with an empty
body: the token is the route's only credential, and the answer says nothing
about which tokens exist. ``POST /hooks/{token}`` answers JSON: 200 with the
hook, or ``{"error": "..."}`` with 400, 404, 409, 413, 415, or 503 while the engine shuts down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from .._engine import Engine
from .._errors import EngineClosed, HookNotFound
from .._hook_registry import HookInfo

__all__ = ["DEFAULT_MAX_BODY_BYTES", "HookRoutes", "hook_json"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


def _iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def hook_json(info: HookInfo) -> dict[str, Any]:
    """A hook as the HTTP routes show it."""
    return {
        "token": info.token,
        "runId": info.run_id,
        "kind": info.kind,
        "metadata": info.metadata,
        "createdAt": _iso_ms(info.created_at),
    }


def _json(status: int, data: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit`` bytes (read no further)."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class HookRoutes:
    """Handlers bound to one engine."""

    def __init__(self, engine: Engine, *, max_body_bytes: int, response_timeout: float) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.response_timeout = response_timeout

    def add_webhook_route(self, router: web.UrlDispatcher, path: str) -> None:
        router.add_route("*", path, self.webhook)

    def add_hook_route(self, router: web.UrlDispatcher, path: str) -> None:
        router.add_post(path, self.resume_hook)

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        """Any method: the request resumes the webhook holding the token; its response goes back."""
        body = await read_body(request, self.max_body_bytes)
        if body is None:
            return web.Response(status=413)
        try:
            response = await self.engine.resume_webhook(
                request.match_info["token"],
                method=request.method,
                url=str(request.url),
                headers=request.headers,
                body=body,
                timeout=self.response_timeout,
            )
        except HookNotFound:
            return web.Response(status=404)
        except EngineClosed:  # shutting down: the caller may try again
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.Response(status=response.status, headers=response.headers, body=response.body)

    async def resume_hook(self, request: web.Request) -> web.StreamResponse:
        """``POST /hooks/{token}``: the JSON body is the payload; ``Idempotency-Key`` is honoured."""
        if request.content_type != "application/json":
            return _error(415, f"Content-Type must be application/json, got {request.content_type!r}")
        raw = await read_body(request, self.max_body_bytes)
        if raw is None:
            return _error(413, f"Request body too large: the limit is {self.max_body_bytes} bytes")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"Request body is not valid JSON: {exc}")
        token = request.match_info["token"]
        try:
            info = await self.engine.resume_hook(token, payload, idempotency_key=request.headers.get("Idempotency-Key"))
        except HookNotFound as exc:
            return await self._not_a_hook(token, exc)
        except ValueError as exc:  # a typed hook refused the payload
            return _error(400, str(exc))
        except EngineClosed:  # shutting down: the caller may try again
            return _error(503, "The engine is shutting down: try again in a moment")
        return _json(200, hook_json(info))

    async def _not_a_hook(self, token: str, exc: HookNotFound) -> web.Response:
        try:
            other = await self.engine.get_hook_by_token(token)
        except HookNotFound:
            other = None
        if other is None or other.kind != "webhook":
            return _error(404, str(exc))
        return _error(409, f"Token {token[:100]!r} belongs to a {other.kind}: send the request to its webhook URL instead")
