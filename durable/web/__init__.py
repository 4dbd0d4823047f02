"""HTTP for durable workflows: aiohttp sub-applications that any app can mount.

    app.add_subapp("/workflows/", durable.web.make_app(engine))           # /workflows/hooks/{token}, ...
    app.add_subapp(durable.web.WEBHOOK_PREFIX, durable.web.make_webhook_app(engine))   # webhooks at the root

``make_app`` serves ``/.well-known/workflow/v1/webhook/{token}`` (any method) and
``POST /hooks/{token}`` under its mount point; ``add_inspector(app, engine)`` adds the
run inspector's pages and JSON routes to it (or to any sub-application). Webhook URLs usually live at the
root of a site, where a prefix cannot mount an application: ``make_webhook_app``
serves the webhook route alone, to mount at ``WEBHOOK_PREFIX``.
"""

from __future__ import annotations

from aiohttp import web

from .._engine import Engine
from .._webhooks import DEFAULT_RESPONSE_TIMEOUT, WEBHOOK_PATH
from ._hooks import DEFAULT_MAX_BODY_BYTES, HookRoutes, hook_json
from ._inspector import add_inspector

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RESPONSE_TIMEOUT",
    "WEBHOOK_PREFIX",
    "add_inspector",
    "hook_json",
    "make_app",
    "make_webhook_app",
]

WEBHOOK_PREFIX = WEBHOOK_PATH.rstrip("/")  # /.well-known/workflow/v1/webhook


def make_app(
    engine: Engine,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
) -> web.Application:
    """The engine's HTTP routes as an application to mount with ``add_subapp``.

    ``max_body_bytes`` bounds request bodies (413 beyond); ``response_timeout`` is how
    long a manual webhook's caller waits for the workflow's response (then 504).
    """
    app = web.Application()
    routes = HookRoutes(engine, max_body_bytes=max_body_bytes, response_timeout=response_timeout)
    routes.add_webhook_route(app.router, WEBHOOK_PATH + "{token}")
    routes.add_hook_route(app.router, "/hooks/{token}")
    return app


def make_webhook_app(
    engine: Engine,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
) -> web.Application:
    """The webhook route alone, at ``/{token}``: mount it at ``WEBHOOK_PREFIX``."""
    app = web.Application()
    routes = HookRoutes(engine, max_body_bytes=max_body_bytes, response_timeout=response_timeout)
    routes.add_webhook_route(app.router, "/{token}")
    return app
