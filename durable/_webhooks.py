"""Webhooks: hooks resumed by an HTTP request, which get a response back.

The engine knows no HTTP: ``durable.web`` turns a request into
``resume_webhook``, whose ``WebhookResponse`` it sends back. The response is
202 with an empty body, the static one given at creation, or, for
``respond_with="manual"``, the one the workflow gives with
``request.respond_with(...)`` (the caller waits for it, bounded, else 504).
Request bodies cross the journal as base64 inside the JSON payload.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ._context import current_run, current_step
from ._hook_registry import HookRegistry
from ._hooks import Hook, new_hook
from ._registry import StepFunction

if TYPE_CHECKING:
    from ._runtime import RunContext

WEBHOOK_PATH = "/.well-known/workflow/v1/webhook/"
MANUAL = "manual"
DEFAULT_RESPONSE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What the HTTP caller of a webhook gets back."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


NO_RESPONSE = WebhookResponse(504)  # a manual response did not come in time
NOT_ANSWERED = WebhookResponse(500)  # the run ended without giving its manual response


def _body_bytes(body: str | bytes) -> bytes:
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    raise TypeError(f"a webhook response body is str or bytes, got {type(body).__name__}")


def make_response(status: int = 200, headers: Mapping[str, str] | None = None, body: str | bytes = b"") -> WebhookResponse:
    """A checked ``WebhookResponse``."""
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"a webhook response status is an integer from 100 to 599, got {status!r}")
    names = dict(headers or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise TypeError("webhook response headers map str names to str values")
    return WebhookResponse(status, names, _body_bytes(body))


def _stored_config(respond_with: Any) -> Any:
    """``respond_with`` as the journal keeps it; ValueError for anything but None, "manual" or a response."""
    if respond_with is None or respond_with == MANUAL:
        return respond_with
    if isinstance(respond_with, WebhookResponse):
        respond_with = {"status": respond_with.status, "headers": respond_with.headers, "body": respond_with.body}
    if not isinstance(respond_with, Mapping) or not set(respond_with) <= {"status", "headers", "body"}:
        raise ValueError(
            f"respond_with must be None, 'manual', or a mapping with 'status', 'headers' and 'body', got {respond_with!r:.100}"
        )
    response = make_response(respond_with.get("status", 200), respond_with.get("headers"), respond_with.get("body", b""))
    return {"status": response.status, "headers": response.headers, "body": base64.b64encode(response.body).decode()}


def _static_response(config: Any) -> WebhookResponse:
    if config is None or config == MANUAL:
        return WebhookResponse()
    return WebhookResponse(config["status"], dict(config["headers"]), base64.b64decode(config["body"]))


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The HTTP request that resumed a webhook (header names lower-cased)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    token: str
    request_id: str  # which request of which webhook: where a manual response goes
    manual: bool

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    async def respond_with(self, status: int = 200, headers: Mapping[str, str] | None = None, body: str | bytes = b"") -> bool:
        """Answer the HTTP request of a ``respond_with="manual"`` webhook; whether its caller still waited.

        In a step it answers at once. In the workflow body it runs as a step of its
        own, so a replay does not answer twice.
        """
        if not self.manual:
            raise RuntimeError(f"webhook {self.token!r} answers by itself: create it with respond_with='manual' to respond")
        response = make_response(status, headers, body)
        run = current_run.get()
        if run is None:
            raise RuntimeError("respond_with() must be called in a workflow body or a step")
        if current_step.get() is None:
            answered: bool = await _respond_step(
                self.request_id, response.status, response.headers, base64.b64encode(response.body).decode()
            )
            return answered
        return _respond(run, self.request_id, response)


def _run_of(request_id: str) -> str:
    return request_id.rsplit(":", 2)[0]


def _respond(run: RunContext, request_id: str, response: WebhookResponse) -> bool:
    return run.host.hooks.respond(_run_of(request_id), request_id, response)


async def _respond_in_step(request_id: str, status: int, headers: dict[str, str], body: str) -> bool:
    run = current_run.get()
    assert run is not None
    return _respond(run, request_id, WebhookResponse(status, headers, base64.b64decode(body)))


# A step of the engine's own: answering from the body is an effect a replay must not repeat.
_respond_step = StepFunction(_respond_in_step, "durable.webhook.respond", max_retries=0)


class Webhook(Hook[WebhookRequest]):
    """A hook resumed over HTTP at ``/.well-known/workflow/v1/webhook/{token}``: ``await webhook`` gives the request."""

    kind = "webhook"

    @property
    def path(self) -> str:
        """The webhook's path on an app that mounts ``durable.web`` at its root."""
        return WEBHOOK_PATH + self.token

    def convert(self, value: Any, index: int) -> WebhookRequest:
        return WebhookRequest(
            value["method"],
            value["url"],
            dict(value["headers"]),
            base64.b64decode(value["body"]),
            self.token,
            f"{self.run.run_id}:{self.seq}:{index}",
            self.config == MANUAL,
        )


def create_webhook(token: str | None = None, respond_with: Any = None, metadata: Any = None) -> Webhook:
    """A webhook of this workflow run; ``respond_with``: None (202, empty), a response mapping, or "manual".

    The default token carries 192 random bits: it is the webhook URL's only credential.
    """
    hook = new_hook(Webhook, token, metadata, _stored_config(respond_with), None)
    assert isinstance(hook, Webhook)
    return hook


def _request_payload(method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    names: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        names[key] = f"{names[key]}, {value}" if key in names else value
    return {"method": method.upper(), "url": url, "headers": names, "body": base64.b64encode(body).decode()}


async def resume_webhook(
    registry: HookRegistry,
    token: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
) -> WebhookResponse:
    """Deliver an HTTP request to the webhook holding ``token``; the response for its caller."""
    entry = registry.active(token, "webhook")
    payload = _request_payload(method, url, headers, body)
    request_id = ""
    waiting: asyncio.Future[Any] | None = None

    def expect(index: int) -> None:
        nonlocal request_id, waiting
        if entry.respond_with == MANUAL:
            request_id = f"{entry.run_id}:{entry.seq}:{index}"
            waiting = registry.expect_response(entry.run_id, request_id)

    try:
        await registry.resume(token, "webhook", payload, None, expect)
        if waiting is None:
            return _static_response(entry.respond_with)
        try:
            response = await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            return NO_RESPONSE
        return NOT_ANSWERED if response is None else response
    finally:
        if waiting is not None:
            registry.forget_response(entry.run_id, request_id)
            waiting.cancel()
