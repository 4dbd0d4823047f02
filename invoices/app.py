"""The aiohttp application: routes, middlewares, static files and lifetimes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from durable import Engine
from durable.web import WEBHOOK_PREFIX, add_inspector, make_app, make_webhook_app

from .correction import correct_invoices
from .correction_routes import add_correction_routes
from .errors import error_middleware
from .keys import engine_key, hub_key, store_key
from .requirements import require_sqlite
from .review_routes import add_review_routes
from .routes import BILLING_QUEUE, MAX_BODY_BYTES, routes
from .security import add_security_headers, host_guard, is_loopback_bind, origin_guard, token_guard
from .sse import SseHub
from .static import static_routes
from .store import InvoiceStore
from .workflow import generate_invoices

__all__ = ["DEFAULT_STATIC_DIR", "create_app"]

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def _to_inspector(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/workflows/")


def create_app(
    db_path: str | os.PathLike[str],
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    static_dir: str | os.PathLike[str] | None = None,
    sse_keepalive: float = 15.0,
    sse_write_timeout: float = 30.0,
) -> web.Application:
    """The invoicing service on the SQLite file ``db_path``.

    ``host`` is the address the server binds to: when it is loopback, requests
    for any other host name are refused (DNS rebinding). ``token``, when set,
    is required on every ``/api/`` and ``/workflows/`` route but the run inspector's
    pages and their files (which ask for it). The engine opens when the app starts and
    closes when it is cleaned up; open SSE responses end at shutdown. Webhooks are
    served at the root (``/.well-known/workflow/v1/webhook/{token}``), hooks at
    ``/workflows/hooks/{token}``, the run inspector at ``/workflows/``.
    """
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[
            error_middleware,
            host_guard(loopback_only=is_loopback_bind(host)),
            token_guard(token or None),
            origin_guard,
        ],
    )
    hub = SseHub(keepalive=sse_keepalive, write_timeout=sse_write_timeout)
    app[hub_key] = hub
    app.add_routes(routes)
    add_correction_routes(app)
    add_review_routes(app)  # approve / reject a batch waiting for approval
    app.add_routes(static_routes(Path(static_dir) if static_dir is not None else DEFAULT_STATIC_DIR))
    app.on_response_prepare.append(add_security_headers)
    engine = Engine(db_path, workflows=[generate_invoices, correct_invoices])
    # One batch per account at a time, in start order: invoice numbers follow batch order.
    engine.queue(BILLING_QUEUE, per_key_concurrency=1)
    store = InvoiceStore(engine)
    engine.resources = store  # before opening: opening resumes unfinished runs
    # The engine's routes: hooks under the API's token and Origin rules, webhooks at the
    # root with their unguessable token as the only credential.
    workflows = make_app(engine, max_body_bytes=MAX_BODY_BYTES)
    add_inspector(workflows, engine)  # the run inspector: pages, JSON, cancel/resume/fork
    app.router.add_get("/workflows", _to_inspector)  # before the sub-app, which claims its bare prefix too
    app.add_subapp("/workflows/", workflows)
    app.add_subapp(WEBHOOK_PREFIX, make_webhook_app(engine, max_body_bytes=MAX_BODY_BYTES))

    @asynccontextmanager
    async def engine_lifetime(app: web.Application) -> AsyncIterator[None]:
        require_sqlite()  # before the engine creates or migrates the file and resumes runs
        async with engine:
            await store.create_schema()
            app[engine_key] = engine
            app[store_key] = store
            try:
                yield
            finally:
                await hub.close()

    async def end_streams(app: web.Application) -> None:
        await hub.close()

    app.cleanup_ctx.append(engine_lifetime)
    # on_shutdown runs before the server waits for handlers to finish, so
    # open SSE responses end at once instead of holding shutdown up.
    app.on_shutdown.append(end_streams)
    return app
