"""``durable.fetch``: an HTTP request that is a step of its own in a workflow body.

The request runs in a step named ``durable.fetch``: connection errors,
timeouts, 5xx and 429 answers are retried (a ``Retry-After`` header sets the
delay), and the response is journaled, so a replay gets it back without a
request. Bodies cross the journal as base64.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ._context import current_run, current_step
from ._errors import FatalError, RetryableError
from ._registry import DEFAULT_MAX_RETRIES, StepFunction

STEP_NAME = "durable.fetch"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """A stored HTTP response (header names lower-cased)."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def to_value(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": base64.b64encode(self.body).decode(), "url": self.url}

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> FetchResponse:
        return cls(value["status"], dict(value["headers"]), base64.b64decode(value["body"]), value["url"])


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date), ``None`` if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _joined(headers: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        names[key] = f"{names[key]}, {value}" if key in names else value
    return names


async def _request(url: str, method: str, headers: dict[str, str], body: bytes | None, timeout: float) -> FetchResponse:
    """One request; connection errors and timeouts are ``RetryableError``."""
    # Imported here: the aiohttp client costs about 0.2 s to import, which every
    # ``python -m durable`` command and every engine that never fetches would pay.
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url, headers=headers, data=body) as response,
        ):
            data = await response.read()
            return FetchResponse(response.status, _joined(response.headers), data, str(response.url))
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
        raise RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise FatalError(f"{method} {url}: {exc}") from exc


async def _fetch_step(url: str, method: str, headers: dict[str, str], body: str | None, timeout: float) -> dict[str, Any]:
    response = await _request(url, method, headers, None if body is None else base64.b64decode(body), timeout)
    if response.status >= 500 or response.status == 429:
        delay = retry_after(response.headers.get("retry-after"), time.time())
        raise RetryableError(f"{method} {url}: HTTP {response.status}", retry_after=delay)
    return response.to_value()


def _settle(step: asyncio.Future[Any], outer: asyncio.Future[FetchResponse]) -> None:
    if outer.done():
        return
    if step.cancelled():
        outer.cancel()
    elif step.exception() is not None:
        outer.set_exception(step.exception())  # type: ignore[arg-type]
    else:
        outer.set_result(FetchResponse.from_value(step.result()))


def fetch(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Awaitable[FetchResponse]:
    """An HTTP request; in a workflow body a journaled, retried step whose response replays without a request.

    Retried on connection errors, timeouts, 5xx and 429 (honouring ``Retry-After``);
    after ``max_retries`` retries the workflow gets ``StepFailed``. Other answers,
    4xx included, are responses. Outside a workflow body (or in a step) it is one request.
    """
    data = body.encode() if isinstance(body, str) else body
    names = dict(headers or {})
    run = current_run.get()
    if run is None or current_step.get() is not None:
        return _request(url, method.upper(), names, data, timeout)
    encoded = None if data is None else base64.b64encode(data).decode()
    step = StepFunction(_fetch_step, STEP_NAME, max_retries)
    pending = run.call_step(step, (url, method.upper(), names, encoded, timeout), {})
    outer: asyncio.Future[FetchResponse] = asyncio.get_running_loop().create_future()
    pending.add_done_callback(lambda done: _settle(done, outer))
    outer.add_done_callback(lambda done: pending.cancel() if done.cancelled() else None)  # the body gave up on it
    return outer
