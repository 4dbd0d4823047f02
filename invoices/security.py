"""Protections for a control panel that listens on the user's own machine.

A page on any web site can make the user's browser send requests to
``http://127.0.0.1:3000``. These guards keep such pages from changing state or
reading data:

- **DNS rebinding** (``host_guard``): when the server is bound to loopback, a
  request whose ``Host`` is not a loopback name or address (``localhost``,
  ``127.x.x.x``, ``[::1]``, any port) gets 421. A rebinding attacker's page
  reaches us under its own host name, so it is refused.
- **Cross-site requests** (``origin_guard``): a state-changing request whose
  ``Origin`` header is present and not the server's own origin gets 403, and so
  does one a browser marks ``Sec-Fetch-Site: cross-site``. Requiring
  ``Content-Type: application/json`` on POST (415, checked where the body is
  read) also rules out the "simple" cross-site form posts that skip CORS
  preflight.
- **Optional bearer token** (``token_guard``): every ``/api/`` and ``/workflows/``
  route requires ``Authorization: Bearer <token>``, but the run inspector's pages
  and their files (they ask for it); the event streams (``GET /api/stream/...``,
  ``GET /workflows/runs/<id>/stream``) also take ``?token=`` because
  ``EventSource`` cannot send headers.
- **Webhooks** (``/.well-known/workflow/v1/webhook/{token}``) are called by other
  systems: their unguessable token is their credential, so neither the bearer
  token nor the Origin rule applies to them. The Host rule does.
- **Security headers** (``add_security_headers``) on every response: a CSP
  without inline script, ``nosniff``, no referrer, no framing.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .responses import json_error

__all__ = [
    "SECURITY_HEADERS",
    "add_security_headers",
    "host_guard",
    "is_loopback_bind",
    "is_loopback_host",
    "needs_token",
    "origin_guard",
    "token_guard",
]

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_GUARDED_PREFIXES = ("/api/", "/workflows/")  # what the bearer token protects
WEBHOOK_PREFIX = "/.well-known/workflow/v1/webhook/"  # credential: the webhook's own token


def _is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_bind(host: str) -> bool:
    """Whether a bind address (``127.0.0.1``, ``::1``, ``localhost``) is loopback only."""
    return _is_loopback_name(host.strip().lower().strip("[]"))


def _is_bracketed_loopback(value: str) -> bool:
    """``[::1]`` or ``[::1]:3000``: brackets only hold IPv6."""
    end = value.find("]")
    if end == -1:
        return False
    name, rest = value[1:end], value[end + 1 :]
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return False
    return _is_loopback_name(name) and ":" in name


@functools.lru_cache(maxsize=256)  # a server sees a handful of distinct Host values
def is_loopback_host(value: str) -> bool:
    """Whether a ``Host`` header value names a loopback host, with or without a port."""
    value = value.strip().lower()
    if value.startswith("["):
        return _is_bracketed_loopback(value)
    name, sep, port = value.rpartition(":")
    if not sep:
        name = port
    elif not port.isdigit() or ":" in name:
        return False
    return _is_loopback_name(name) and ":" not in name


def host_guard(*, loopback_only: bool) -> Middleware:
    """421 for a ``Host`` that is not loopback, when the server is bound to loopback."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        # HTTP/1.0 clients may omit Host; browsers (the rebinding vector) never do.
        if loopback_only and host is not None and not is_loopback_host(host):
            return json_error(
                421,
                f"Misdirected request: this server answers only to localhost, 127.0.0.1 or [::1], not to Host {host[:100]!r}",
            )
        return await handler(request)

    return guard


def _bearer(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def _same(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


INSPECTOR = "/workflows/"
_INSPECTOR_PAGES = frozenset({INSPECTOR, INSPECTOR + "run"})


def needs_token(request: web.Request) -> bool:
    """The API and the engine's routes; not the inspector's pages and files, which ask for the token."""
    path = request.path
    if not path.startswith(_GUARDED_PREFIXES):
        return False
    public = path in _INSPECTOR_PAGES or path.startswith(INSPECTOR + "static/")
    return not (public and request.method in ("GET", "HEAD"))


def _is_event_stream(path: str) -> bool:
    return path.startswith("/api/stream/") or (path.startswith(INSPECTOR + "runs/") and path.endswith("/stream"))


def token_guard(token: str | None) -> Middleware:
    """401 for ``/api/`` and ``/workflows/`` requests without the bearer token, when one is configured."""
    expected = token.encode("utf-8") if token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or not needs_token(request):
            return await handler(request)
        header = request.headers.get("Authorization")
        given = _bearer(header) if header is not None else None
        if given is None and _is_event_stream(request.path):
            given = request.query.get("token")  # EventSource cannot send headers
        if given is None or not _same(given, expected):
            return json_error(
                401,
                "Missing or wrong token: send the header Authorization: Bearer <token> (the token the server was started with)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return guard


@web.middleware
async def origin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a state-changing request sent by another site's page (webhooks excepted)."""
    if request.method not in _SAFE_METHODS and not request.path.startswith(WEBHOOK_PREFIX):
        origin = request.headers.get("Origin")
        own = f"{request.scheme}://{request.headers.get('Host', '')}".lower()
        if origin is not None and origin.strip().lower() != own:
            return json_error(
                403,
                f"Cross-origin request refused: Origin {origin[:100]!r} is not this server ({own})",
            )
        if origin is None and request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            return json_error(403, "Cross-site request refused")
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: security headers on every response, HTML and SSE too."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
