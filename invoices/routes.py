"""The HTTP API's handlers.

Handlers raise ``ApiError`` for client mistakes; ``errors.error_middleware``
renders it and every other failure as JSON.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from durable import CannotCancel, Engine, Run, RunConflict, RunInfo, RunStatus

from .correction import correction_input
from .errors import ApiError
from .keys import engine_key, hub_key, store_key
from .pricing import SEED_PRICE_VERSION
from .responses import JSON_CONTENT_TYPE, json_response
from .review import APPROVAL, waiting_for, waiting_runs
from .sse import stream_run
from .store import Invoice
from .timestamps import iso_ms
from .validation import ACCOUNT_ID_RE, DEFAULT_APPROVAL_TIMEOUT, StartRequest, ValidationError, validate_prices, validate_start
from .workflow import generate_invoices

__all__ = ["BILLING_QUEUE", "MAX_BODY_BYTES", "cancelled_json", "read_json_object", "route_run_id", "routes", "status_json"]

MAX_BODY_BYTES = 64 * 1024
MAX_LIST_LIMIT = 500
_MAX_INDEX = 2**53  # beyond any real stream; keeps SQLite integers in range
_RUN_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_INT_RE = re.compile(r"[0-9]{1,16}")
_INVOICE_ID_RE = re.compile(r"INV-(" + ACCOUNT_ID_RE.pattern + r")-[0-9]{4,16}")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

#: The engine queue of batches (declared in app.py): one batch per account at a time,
#: so a second batch of an account waits, pending, and its invoices follow the first's.
BILLING_QUEUE = "billing"

routes = web.RouteTableDef()


# -- request helpers ------------------------------------------------------------


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 415, 413 or 400 otherwise."""
    if request.content_type != JSON_CONTENT_TYPE:
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {request.content_type!r}",
        )
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, f"Request body too large: {length} bytes, the limit is 64 KiB")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "Request body too large: the limit is 64 KiB") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _run_id(value: object, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"runId is required ({source}), as a non-empty string")
    if _RUN_ID_RE.fullmatch(value) is None:
        # Not an id the engine could have made: unknown, without a database trip.
        raise ApiError(404, f"Workflow run {value[:128]!r} not found")
    return value


#: The run id of a request, for routes in other modules: 400 when missing, 404 when no run could have it.
route_run_id = _run_id


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if _INT_RE.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}, got {raw[:40]!r}")
    return int(raw)


def _start_index(request: web.Request) -> int:
    # Last-Event-ID wins over ?startIndex=: a browser's EventSource reconnects
    # to the same URL and says in this header what it already has.
    last = request.headers.get("Last-Event-ID", "").strip()
    if last:
        if _INT_RE.fullmatch(last) is None or int(last) >= _MAX_INDEX:
            raise ApiError(400, f"Last-Event-ID must be a non-negative integer, got {last[:40]!r}")
        return int(last) + 1
    return _query_int(request, "startIndex", 0, 0, _MAX_INDEX)


# -- response shapes ------------------------------------------------------------------


class BatchInput(NamedTuple):
    """A batch's arguments as its run stored them (the workflow's defaults for those it lacks)."""

    account_id: Any
    total: Any
    delay: Any
    price_version: Any
    review_first: Any
    approval_timeout: Any


# Batches started before prices were versioned have no price_version argument: they
# bill at the seed's prices, version 1; batches started before reviews review nothing.
_BATCH_DEFAULTS = BatchInput(None, None, None, SEED_PRICE_VERSION, 0, DEFAULT_APPROVAL_TIMEOUT)


def _batch_input(info: RunInfo) -> BatchInput:
    values: list[Any] = list(_BATCH_DEFAULTS)
    for position, value in enumerate(info.args[: len(values)]):
        values[position] = value
    for position, name in enumerate(BatchInput._fields):
        if name in info.kwargs:
            values[position] = info.kwargs[name]
    return BatchInput(*values)


def _run_input(info: RunInfo) -> tuple[Any, ...]:
    """(account, total, delay, price version, reviewFirst, approvalTimeout) of a batch or a correction run."""
    correction = correction_input(info)
    if correction is None:
        return _batch_input(info)
    return correction.account_id, correction.total, None, correction.price_version, None, None


def run_json(info: RunInfo, current: int, waiting: str | None = None) -> dict[str, Any]:
    """The status body of a run (a batch, or a correction run whose ``current`` counts its replacements);
    ``waiting`` is what it waits for (``"approval"``), if anything."""
    correction = correction_input(info)
    account_id, total, delay, price_version, review_first, approval_timeout = _run_input(info)
    body = {
        "runId": info.run_id,
        "kind": "batch" if correction is None else "correction",
        "status": str(info.status),
        "createdAt": iso_ms(info.created_at),
        "startedAt": iso_ms(info.started_at),
        "completedAt": iso_ms(info.completed_at),
        "accountId": account_id,
        "total": total,
        "delay": delay,
        "priceVersion": price_version,
        "current": current,
        "error": info.error,
        "queuePosition": info.queue_position,
        "reviewFirst": review_first,
        "approvalTimeout": approval_timeout,
        "waitingFor": waiting,
    }
    if correction is not None:
        body["correctsRunId"] = correction.corrects_run_id
    return body


async def status_json(request: web.Request, run_id: str) -> dict[str, Any]:
    """The status body of a run, read now; ``RunNotFound`` (404) for an unknown one."""
    engine = request.app[engine_key]
    info = await engine.get_run(run_id).describe()
    current = await request.app[store_key].count_for_run(run_id)
    return run_json(info, current, await waiting_for(engine, run_id))


def cancelled_json(run_id: str, previous: RunStatus, issued: int, message: str) -> dict[str, Any]:
    """The answer of a cancel (and of a rejection): ``invoicesIssued`` is final."""
    return {
        "runId": run_id,
        "message": message,
        "previousStatus": str(previous),
        "currentStatus": str(RunStatus.CANCELLED),
        "invoicesIssued": issued,
    }


# -- routes -----------------------------------------------------------------------------


def _request_id(body: dict[str, Any]) -> str | None:
    """The optional idempotency key of a start; 400 when it is there but not 1-64 of A-Z a-z 0-9 _ . -."""
    if "requestId" not in body:
        return None
    value = body["requestId"]
    if not isinstance(value, str) or _REQUEST_ID_RE.fullmatch(value) is None:
        shown = repr(value[:40]) if isinstance(value, str) else ("null" if value is None else type(value).__name__)
        raise ApiError(400, f"requestId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -, got {shown}")
    return value


async def _start_batch(engine: Engine, request_id: str | None, batch: StartRequest, version: int) -> tuple[Run, int]:
    """Queue the batch behind the account's earlier ones; a repeated requestId gives its first run (and its price version)."""
    options = generate_invoices.with_options(
        run_id=None if request_id is None else f"req-{request_id}", queue=BILLING_QUEUE, queue_key=batch.account_id
    )
    args = (batch.account_id, batch.total, batch.delay, version, batch.review_first, batch.approval_timeout)
    try:
        run = await engine.start(options, *args)
    except RunConflict:
        raise ApiError(409, f"requestId {request_id!r} is taken by a run of another kind: send a new requestId") from None
    if request_id is not None:
        first = _batch_input(await run.describe())
        if first._replace(price_version=version) != args:
            # Like Stripe's idempotency keys: a key names one request; reusing it for another is a client bug.
            raise ApiError(
                409,
                f"requestId {request_id!r} was already used for another batch (accountId {first.account_id}, total"
                f" {first.total}, delay {first.delay}, reviewFirst {first.review_first}, approvalTimeout"
                f" {first.approval_timeout}): send a new requestId for a new batch",
                runId=run.run_id,
            )
        version = first.price_version
    return run, version


@routes.post("/api/start")
async def start(request: web.Request) -> web.Response:
    """Start a batch: 200 with the run id (the same one for a repeated requestId), or 400 naming the bad field."""
    body = await read_json_object(request)
    try:
        batch = validate_start(body)
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    request_id = _request_id(body)
    # Decided here and passed as an argument, so that a replay prices at the same version.
    version = (await request.app[store_key].latest_price_list()).version
    run, version = await _start_batch(request.app[engine_key], request_id, batch, version)
    return json_response(
        {
            "runId": run.run_id,
            "accountId": batch.account_id,
            "total": batch.total,
            "delay": batch.delay,
            "priceVersion": version,
            "reviewFirst": batch.review_first,
            "approvalTimeout": batch.approval_timeout,
            "message": "Invoice workflow started",
        }
    )


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    """A run's status, times, batch input, invoices issued so far and place in the billing queue."""
    if "runId" not in request.query:
        raise ApiError(400, "runId query parameter is required: /api/status?runId=<id>")
    run_id = _run_id(request.query["runId"], "query parameter")
    return json_response(await status_json(request, run_id))


@routes.post("/api/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Cancel a run; the response counts the invoices issued (a correction's: corrected), final from then on."""
    body = await read_json_object(request)
    run_id = _run_id(body.get("runId"), "body field")
    run = request.app[engine_key].get_run(run_id)
    try:
        previous = await run.cancel()
    except CannotCancel:
        current = await run.status()
        raise ApiError(
            409,
            f"Cannot cancel workflow run {run_id} with status {current}",
            currentStatus=str(current),
        ) from None
    issued = await request.app[store_key].count_for_run(run_id)
    body = cancelled_json(run_id, previous, issued, "Workflow cancelled successfully")
    if correction_input(await run.describe()) is not None:
        body["invoicesCorrected"] = issued  # a correction run issues one replacement per invoice it corrected
    return json_response(body)


@routes.get("/api/stream/{runId}")
async def stream(request: web.Request) -> web.StreamResponse:
    """The run's events as Server-Sent Events, from ``startIndex`` or ``Last-Event-ID``."""
    run_id = _run_id(request.match_info["runId"], "path")
    start_index = _start_index(request)
    hub = request.app[hub_key]
    if hub.closing:
        raise ApiError(503, "The server is shutting down; reconnect in a moment")
    run = request.app[engine_key].get_run(run_id)
    await run.status()  # RunNotFound -> 404 JSON, before any header is sent
    return await stream_run(request, run, start_index, hub)


@routes.get("/api/runs")
async def list_runs(request: web.Request) -> web.Response:
    """Runs, newest first, optionally of one status."""
    raw_status = request.query.get("status", "")
    run_status: RunStatus | None = None
    if raw_status:
        try:
            run_status = RunStatus(raw_status)
        except ValueError:
            choices = ", ".join(str(s) for s in RunStatus)
            raise ApiError(400, f"status must be one of {choices}, got {raw_status[:40]!r}") from None
    limit = _query_int(request, "limit", 50, 1, MAX_LIST_LIMIT)
    engine = request.app[engine_key]
    infos = await engine.list_runs(status=run_status, limit=limit)
    counts = await request.app[store_key].counts_for_runs([info.run_id for info in infos])
    waiting = await waiting_runs(engine)
    runs = [run_json(info, counts.get(info.run_id, 0), APPROVAL if info.run_id in waiting else None) for info in infos]
    return json_response({"runs": runs})


@routes.get("/api/runs/{runId}")
async def run_detail(request: web.Request) -> web.Response:
    """A run's status plus its timeline: each step and sleep, each attempt, with times."""
    run_id = _run_id(request.match_info["runId"], "path")
    status = await status_json(request, run_id)
    operations = await request.app[engine_key].get_run(run_id).timeline()
    timeline = [
        {
            "seq": op.seq,
            "kind": op.kind,
            "name": op.name,
            "status": op.status,
            "startedAt": iso_ms(op.started_at),
            "completedAt": iso_ms(op.completed_at),
            "wakeAt": iso_ms(op.wake_at),
            "attempts": [
                {
                    "attempt": attempt.attempt,
                    "startedAt": iso_ms(attempt.started_at),
                    "endedAt": iso_ms(attempt.ended_at),
                    "error": attempt.error,
                    "stack": attempt.stack,
                }
                for attempt in op.attempts
            ],
        }
        for op in operations
    ]
    info = await request.app[engine_key].get_run(run_id).describe()
    error = {"errorType": info.error_type, "errorMessage": info.error_message, "errorStack": info.error_stack}
    return json_response({**status, **error, "timeline": timeline})


_CSV_COLUMNS = (
    "invoice_id",
    "n",
    "account_id",
    "customer",
    "currency",
    "subtotal_cents",
    "tax_cents",
    "total_cents",
    "issued_at",
    "issued_by_run",
    "price_version",
    "line_items",
    "status",
    "voided_by",
    "replaces",
)


def _cell(text: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(invoices: list[Invoice]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for invoice in invoices:
        items = "; ".join(
            f"{item.quantity} x [{item.sku}] {item.description} @ {item.unit_price_cents}" for item in invoice.line_items
        )
        writer.writerow(
            (
                invoice.invoice_id,
                invoice.n,
                _cell(invoice.account_id),
                _cell(invoice.customer),
                invoice.currency,
                invoice.subtotal_cents,
                invoice.tax_cents,
                invoice.total_cents,
                invoice.issued_at,
                invoice.run_id,
                invoice.price_version,
                _cell(items),
                invoice.status,
                invoice.voided_by or "",
                invoice.replaces or "",
            )
        )
    return out.getvalue()


@routes.get("/api/runs/{runId}/invoices")
async def run_invoices(request: web.Request) -> web.Response:
    """The invoices a run issued, ordered by n: JSON, or a CSV download with ``?format=csv``."""
    run_id = _run_id(request.match_info["runId"], "path")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, f"format must be json or csv, got {fmt[:40]!r}")
    await request.app[engine_key].get_run(run_id).status()  # 404 for unknown runs
    invoices = await request.app[store_key].list_for_run(run_id)
    if fmt == "csv":
        return web.Response(
            text=_csv(invoices),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="invoices-{run_id}.csv"'},
        )
    return json_response(
        {
            "runId": run_id,
            "count": len(invoices),
            "totalCents": sum(invoice.total_cents for invoice in invoices),
            "invoices": [invoice.to_json() for invoice in invoices],
        }
    )


@routes.get("/api/invoices/{invoiceId}")
async def invoice_detail(request: web.Request) -> web.Response:
    """One invoice with its line items (what the panel shows when a row is opened)."""
    invoice_id = request.match_info["invoiceId"]
    invoice = await request.app[store_key].get(invoice_id) if _INVOICE_ID_RE.fullmatch(invoice_id) else None
    if invoice is None:
        raise ApiError(404, f"Invoice {invoice_id[:100]!r} not found")
    return json_response(invoice.to_json())


# -- price lists ------------------------------------------------------------------------------


@routes.get("/api/prices")
async def get_prices(request: web.Request) -> web.Response:
    """The current price list, or version ``?version=N``."""
    store = request.app[store_key]
    raw = request.query.get("version", "")
    if raw == "":
        return json_response((await store.latest_price_list()).to_json())
    if _INT_RE.fullmatch(raw) is None or int(raw) < 1:
        raise ApiError(400, f"version must be an integer of at least 1, got {raw[:40]!r}")
    prices = await store.price_list(int(raw))
    if prices is None:
        latest = (await store.latest_price_list()).version
        raise ApiError(404, f"Price list version {int(raw)} not found: the versions are 1 to {latest}")
    return json_response(prices.to_json())


@routes.put("/api/prices")
async def put_prices(request: web.Request) -> web.Response:
    """Store a whole new price list as the next version: 200 with it, 400 naming the bad field, 409 if stale."""
    body = await read_json_object(request)
    try:
        update = validate_prices(body)
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    store = request.app[store_key]
    stored = await store.add_price_list(update)
    if stored is None:
        latest = (await store.latest_price_list()).version
        raise ApiError(
            409,
            f"baseVersion {update.base_version} is not the latest price list version ({latest}): the list changed"
            " meanwhile; load the latest version and apply your change to it",
            currentVersion=latest,
        )
    return json_response(stored.to_json())


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, with counters that show leaks (they return to 0 when idle)."""
    engine = request.app[engine_key]
    await engine.fetchall("SELECT 1")
    stats = engine.stats()
    return json_response(
        {
            "status": "ok",
            "activeRuns": stats["active_runs"],
            "streamSubscribers": stats["stream_subscribers"],
            "queuedChunks": stats["queued_chunks"],
            "openStreams": len(request.app[hub_key]),
        }
    )
