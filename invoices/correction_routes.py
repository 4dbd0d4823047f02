"""The HTTP routes of corrections.

- ``POST /api/runs/{id}/correct``: start a correction run of a run that ended;
- ``GET /api/runs/{id}/corrections``: the corrections of its invoices, JSON or
  ``?format=csv``;
- ``GET /api/credit-notes/{id}``: one credit note.

A correction run is a run like a batch: ``/api/status``, ``/api/stream``,
``/api/cancel`` and ``/api/runs/{id}/invoices`` (its replacements) serve it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any

from aiohttp import web

from durable import Engine, RunStatus

from .correction import correct_invoices
from .corrections_store import Correction, CorrectionRun, CorrectionStore
from .errors import ApiError
from .keys import engine_key, store_key
from .responses import json_response
from .routes import BILLING_QUEUE, _cell, _run_id, read_json_object
from .store import Invoice
from .timestamps import now_iso_ms
from .validation import ACCOUNT_ID_RE

__all__ = ["add_correction_routes"]

_CREDIT_NOTE_ID_RE = re.compile(r"CN-(" + ACCOUNT_ID_RE.pattern + r")-[0-9]{4,16}")

#: Held from the check for a running correction to its record: two requests
#: cannot both start a correction of one run (one process serves the file).
start_lock_key = web.AppKey("correction_start_lock", asyncio.Lock)

routes = web.RouteTableDef()


def add_correction_routes(app: web.Application) -> None:
    """Register the correction routes (and their state) on the app."""
    app[start_lock_key] = asyncio.Lock()
    app.add_routes(routes)


def to_correct(invoices: list[Invoice], current_version: int) -> list[Invoice]:
    """The invoices a correction would void and replace: issued, and priced at a superseded version."""
    return [invoice for invoice in invoices if invoice.status == "issued" and invoice.price_version < current_version]


def _nothing_to_correct(run_id: str, invoices: list[Invoice], version: int) -> str:
    if not invoices:
        return f"Run {run_id} issued no invoices: there is nothing to correct"
    return (
        f"Every invoice of run {run_id} is already at the current price list (version {version}) or corrected:"
        " there is nothing to correct; change a price with PUT /api/prices first"
    )


async def _running_correction(engine: Engine, runs: list[CorrectionRun]) -> tuple[str, RunStatus] | None:
    for run in runs:
        status = await engine.get_run(run.run_id).status()
        if not status.is_terminal:
            return run.run_id, status
    return None


@routes.post("/api/runs/{runId}/correct")
async def start_correction(request: web.Request) -> web.Response:
    """Start a correction run of a run that ended: 200 with its id, 409 when there is nothing (more) to do."""
    run_id = _run_id(request.match_info["runId"], "path")
    await read_json_object(request)  # no fields yet; the JSON content type keeps plain forms out
    engine, store = request.app[engine_key], request.app[store_key]
    status = await engine.get_run(run_id).status()  # 404 for unknown runs
    if not status.is_terminal:
        raise ApiError(
            409,
            f"Run {run_id} is still {status}: correct its invoices once it has ended (or cancel it first)",
            currentStatus=str(status),
        )
    corrections = CorrectionStore(store)
    async with request.app[start_lock_key]:
        running = await _running_correction(engine, await corrections.runs_correcting(run_id))
        if running is not None:
            raise ApiError(
                409,
                f"Correction run {running[0]} of run {run_id} is still {running[1]}: follow it at /api/stream/{running[0]}",
                correctionRunId=running[0],
            )
        prices = await store.latest_price_list()
        invoices = await store.list_for_run(run_id)
        todo = to_correct(invoices, prices.version)
        if not todo:
            raise ApiError(409, _nothing_to_correct(run_id, invoices, prices.version), priceVersion=prices.version)
        account_id = todo[0].account_id
        ids = [invoice.invoice_id for invoice in todo]
        # The list is decided here and passed as input, so a replay corrects the same invoices.
        # It queues with the account's batches: numbers are taken one run at a time.
        options = correct_invoices.with_options(queue=BILLING_QUEUE, queue_key=account_id)
        run = await engine.start(options, run_id, account_id, prices.version, ids)
        await corrections.record_run(CorrectionRun(run.run_id, run_id, account_id, prices.version, len(ids), now_iso_ms()))
    return json_response(
        {
            "correctionRunId": run.run_id,
            "runId": run_id,
            "priceVersion": prices.version,
            "toCorrect": len(ids),
            "accountId": account_id,
            "message": f"Correction started: {len(ids)} invoices to void and replace at price list version {prices.version}",
        }
    )


_CSV_COLUMNS = (
    "invoice_id",
    "credit_note_id",
    "replacement_id",
    "status",
    "account_id",
    "customer",
    "currency",
    "original_total_cents",
    "credit_note_total_cents",
    "replacement_total_cents",
    "delta_cents",
    "original_price_version",
    "price_version",
    "correction_run_id",
    "credit_note_issued_at",
)


def _csv(corrections: list[Correction]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for c in corrections:
        writer.writerow(
            (
                c.invoice_id,
                c.credit_note_id,
                c.replacement_id or "",
                c.state,
                _cell(c.account_id),
                _cell(c.customer),
                c.currency,
                c.original_total_cents,
                -c.original_total_cents,
                "" if c.replacement_total_cents is None else c.replacement_total_cents,
                c.delta_cents,
                c.original_price_version,
                "" if c.price_version is None else c.price_version,
                c.correction_run_id,
                c.issued_at,
            )
        )
    return out.getvalue()


async def _runs_json(engine: Engine, runs: list[CorrectionRun]) -> list[dict[str, Any]]:
    return [
        {
            "runId": run.run_id,
            "status": str(await engine.get_run(run.run_id).status()),
            "priceVersion": run.price_version,
            "total": run.total,
            "createdAt": run.created_at,
        }
        for run in runs
    ]


@routes.get("/api/runs/{runId}/corrections")
async def list_corrections(request: web.Request) -> web.Response:
    """The corrections of a run's invoices, in credit-note order: JSON, or a CSV download with ``?format=csv``."""
    run_id = _run_id(request.match_info["runId"], "path")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, f"format must be json or csv, got {fmt[:40]!r}")
    engine, store = request.app[engine_key], request.app[store_key]
    await engine.get_run(run_id).status()  # 404 for unknown runs
    corrections = CorrectionStore(store)
    found = await corrections.corrections_of(run_id)
    if fmt == "csv":
        return web.Response(
            text=_csv(found),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="corrections-{run_id}.csv"'},
        )
    version = (await store.latest_price_list()).version
    runs = await corrections.runs_correcting(run_id)
    return json_response(
        {
            "runId": run_id,
            "priceVersion": version,
            "toCorrect": len(to_correct(await store.list_for_run(run_id), version)),
            "count": len(found),
            "deltaCents": sum(c.delta_cents for c in found),
            "correctionRuns": await _runs_json(engine, runs),
            "corrections": [c.to_json() for c in found],
        }
    )


@routes.get("/api/credit-notes/{creditNoteId}")
async def credit_note_detail(request: web.Request) -> web.Response:
    """One credit note with its (negated) line items."""
    credit_note_id = request.match_info["creditNoteId"]
    valid = _CREDIT_NOTE_ID_RE.fullmatch(credit_note_id) is not None
    note = await CorrectionStore(request.app[store_key]).credit_note(credit_note_id) if valid else None
    if note is None:
        raise ApiError(404, f"Credit note {credit_note_id[:100]!r} not found")
    return json_response(note.to_json())
