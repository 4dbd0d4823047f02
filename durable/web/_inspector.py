"""The run inspector: pages and JSON endpoints of an aiohttp sub-application.

``add_inspector(sub, engine)`` adds, relative to where ``sub`` is mounted:

- ``GET /`` the run list page, ``GET /run?id=ID`` a run's page, ``GET /static/NAME`` their files;
- ``GET /runs.json?status=&workflow=&limit=&after=`` runs newest first (keyset paging: ``after``
  is the ``next`` of the previous page), ``GET /workflows.json`` the workflow names;
- ``GET /runs/{id}.json`` a run with its timeline, streams and hooks;
- ``GET /runs/{id}/stream?namespace=&from=`` its stream as Server-Sent Events;
- ``POST /runs/{id}/cancel``, ``/resume``, ``/fork`` (JSON body ``{"from_seq": N}``).

Reads go through a read-only connection of their own on a thread (``AsyncJournalReader``);
changes go through the engine. The sub-application adds no authentication of its own: the
app that mounts it guards it as it guards its other routes (token, Origin, CSP). POST
requires ``Content-Type: application/json``, which plain cross-site HTML forms cannot send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .._engine import Engine
from .._errors import CannotCancel, CannotResume, EngineClosed, RunNotFound, UnreadableJournal
from .._inspect_view import hook_json, listed_json, run_json
from .._journal_read import MAX_PAGE, AsyncJournalReader, JournalReader, RunPage
from .._models import RunStatus

__all__ = ["add_inspector"]

log = logging.getLogger("durable.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGES = {"/": "index.html", "/run": "run.html"}
MAX_ID = 200
KEEPALIVE_S = 15.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class _Refused(Exception):
    """A request the inspector answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (RunNotFound, 404),
    (CannotCancel, 409),
    (CannotResume, 409),
    (EngineClosed, 503),
    (UnreadableJournal, 503),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Known refusals as JSON errors, whatever app mounts the inspector."""
    try:
        return await handler(request)
    except _Refused as exc:
        return _json({"error": str(exc)}, exc.status)
    except (RunNotFound, CannotCancel, CannotResume, EngineClosed, UnreadableJournal) as exc:
        status = next(code for kind, code in _ERROR_STATUS if isinstance(exc, kind))
        return _json({"error": str(exc)}, status)


class _Inspector:
    """The state of one mounted inspector: where its engine is, its reader, its open streams."""

    def __init__(self, source: Engine | web.AppKey[Engine]) -> None:
        self._source = source
        self._reader: AsyncJournalReader | None = None
        self.streams: set[asyncio.Task[None]] = set()

    def engine(self, request: web.Request) -> Engine:
        if isinstance(self._source, Engine):
            return self._source
        engine = request.config_dict.get(self._source)
        if engine is None:
            raise _Refused(503, "The engine is not open yet: try again in a moment")
        return engine

    def reader(self, request: web.Request) -> AsyncJournalReader:
        if self._reader is None:
            self._reader = AsyncJournalReader(self.engine(request).path)
        return self._reader

    async def shutdown(self, app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    async def cleanup(self, app: web.Application) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()


_STATE = web.AppKey("durable_inspector", _Inspector)


def _state(request: web.Request) -> _Inspector:
    return request.app[_STATE]


# -- request values ------------------------------------------------------------------


def _run_id(request: web.Request) -> str:
    run_id = request.match_info["run_id"]
    if not run_id or len(run_id) > MAX_ID:
        raise RunNotFound(run_id[:MAX_ID])
    return run_id


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _Refused(400, f"{name} must be an integer from {low} to {high}, got {raw[:40]!r}")
    return int(raw)


def _status_query(request: web.Request) -> str | None:
    raw = request.query.get("status") or None
    if raw is not None and raw not in {s.value for s in RunStatus}:
        raise _Refused(400, f"status must be one of {', '.join(s.value for s in RunStatus)}, got {raw[:40]!r}")
    return raw


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise _Refused(415, f"Content-Type must be application/json, got {request.content_type!r}")
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Refused(400, "Request body must be a JSON object")
    return body


# -- pages and files ----------------------------------------------------------------------


# Fixed, not guessed from the machine's MIME tables: module scripts need a JavaScript type.
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _file(name: str) -> web.FileResponse:
    kind = _TYPES.get(Path(name).suffix, "application/octet-stream")
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache", "Content-Type": f"{kind}; charset=utf-8"})


def _static_files() -> frozenset[str]:
    """The files that may be served: exactly those in ``static/``, fixed at startup."""
    return frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


# -- reads -----------------------------------------------------------------------------------


async def _runs(request: web.Request) -> web.Response:
    status, workflow = _status_query(request), request.query.get("workflow") or None
    limit = _int_query(request, "limit", 50, 1, MAX_PAGE)
    after = request.query.get("after") or None

    def read(reader: JournalReader) -> RunPage:
        return reader.list_runs(status, workflow, limit, after)

    try:
        page = await _state(request).reader(request).call(read)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None
    return _json({"runs": [listed_json(run) for run in page.runs], "next": page.next})


async def _workflows(request: web.Request) -> web.Response:
    names = await _state(request).reader(request).call(lambda reader: reader.workflow_names())
    return _json({"workflows": names})


def _read_run(run_id: str) -> Any:
    def read(reader: JournalReader) -> dict[str, Any] | None:
        detail = reader.run(run_id)
        if detail is None:
            return None
        return run_json(detail, reader.timeline(run_id), reader.streams(run_id), reader.hooks(run_id))

    return read


async def _run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    data = await _state(request).reader(request).call(_read_run(run_id))
    if data is None:
        raise RunNotFound(run_id)
    return _json(data)


async def _hooks(request: web.Request) -> web.Response:
    run_id = request.query.get("run") or None
    rows = await _state(request).reader(request).call(lambda reader: reader.hooks(run_id))
    return _json({"hooks": [hook_json(row) for row in rows]})


# -- changes ------------------------------------------------------------------------------------


async def _cancel(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    await _json_body(request)
    previous = await _state(request).engine(request).get_run(run_id).cancel()
    return _json({"run_id": run_id, "previous_status": previous.value, "status": RunStatus.CANCELLED.value})


async def _resume(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    await _json_body(request)
    engine = _state(request).engine(request)
    previous = await engine.resume_run(run_id)
    status = await engine.get_run(run_id).status()
    return _json({"run_id": run_id, "previous_status": previous.value, "status": status.value})


async def _fork(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    from_seq = (await _json_body(request)).get("from_seq")
    if isinstance(from_seq, bool) or not isinstance(from_seq, int) or not 0 <= from_seq < 2**53:
        raise _Refused(400, f"from_seq must be an integer >= 0 (the step to run again), got {from_seq!r}")
    fork = await _state(request).engine(request).fork(run_id, from_seq)
    status = await fork.status()
    return _json({"run_id": fork.run_id, "forked_from": run_id, "forked_at_seq": from_seq, "status": status.value})


# -- the stream ------------------------------------------------------------------------------------


async def _watch(request: web.Request, response: web.StreamResponse, pump: asyncio.Task[None]) -> None:
    """Keep-alive comments; end the pump when the client has gone (aiohttp does not tell handlers)."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(1.0)
        transport = request.transport
        if transport is None or transport.is_closing():
            pump.cancel()
            return
        if loop.time() - last >= KEEPALIVE_S:
            try:
                await response.write(b": keep-alive\n\n")
            except (ConnectionError, RuntimeError):  # the client left between two checks
                pump.cancel()
                return
            last = loop.time()


async def _pump(request: web.Request, response: web.StreamResponse, run_id: str, namespace: str, start: int) -> None:
    run = _state(request).engine(request).get_run(run_id)
    async with contextlib.aclosing(run.chunks(start, namespace)) as chunks:
        async for chunk in chunks:
            data = orjson.dumps({"index": chunk.index, "value": chunk.value})
            await response.write(b"id: %d\ndata: %s\n\n" % (chunk.index, data))
    await response.write(b"event: end\ndata: {}\n\n")


def _start_index(request: web.Request) -> int:
    last = request.headers.get("Last-Event-ID", "")
    if last.isdigit():
        return int(last) + 1
    return _int_query(request, "from", 0, 0, 2**53)


async def _stream(request: web.Request) -> web.StreamResponse:
    state, run_id = _state(request), _run_id(request)
    start = _start_index(request)
    await state.engine(request).get_run(run_id).status()  # unknown: a 404 before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.force_close()
    await response.prepare(request)
    pump = asyncio.create_task(_pump(request, response, run_id, request.query.get("namespace", ""), start))
    state.streams.add(pump)
    watch = asyncio.create_task(_watch(request, response, pump))
    try:
        await asyncio.wait({pump})  # cancelled by shutdown or by the watcher: a normal end
    finally:
        state.streams.discard(pump)
        for task in (watch, pump):
            task.cancel()
        await asyncio.wait({watch, pump})
    error = None if pump.cancelled() else pump.exception()
    if error is not None and not isinstance(error, ConnectionError | RuntimeError):  # not just a client that left
        log.error("the stream of run %s failed", run_id, exc_info=error)
    return response


def add_inspector(app: web.Application, engine: Engine | web.AppKey[Engine]) -> None:
    """Add the inspector's routes to ``app`` (meant to be mounted, e.g. at ``/workflows/``).

    ``engine`` is the engine, or the key under which the mounting app stores it once
    it has opened it (an app whose engine opens in its ``cleanup_ctx``).
    """
    state = _Inspector(engine)
    app[_STATE] = state
    app.middlewares.append(_errors)
    files = _static_files()

    async def static(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return _file(name)

    for path, name in PAGES.items():
        app.router.add_get(path, _page_for(name))
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/runs.json", _runs)
    app.router.add_get("/workflows.json", _workflows)
    app.router.add_get("/hooks.json", _hooks)
    app.router.add_get("/runs/{run_id}.json", _run)
    app.router.add_get("/runs/{run_id}/stream", _stream)
    app.router.add_post("/runs/{run_id}/cancel", _cancel)
    app.router.add_post("/runs/{run_id}/resume", _resume)
    app.router.add_post("/runs/{run_id}/fork", _fork)
    app.on_shutdown.append(state.shutdown)
    app.on_cleanup.append(state.cleanup)


def _page_for(name: str) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return _file(name)

    return page
