"""Correcting what went out, over HTTP: credit notes, replacements, rollback, cancel.

A real aiohttp server on 127.0.0.1 and a real SQLite file per test, as in
``test_http.py``. Expected values are computed independently of the service:
what invoice n of an account bills is ``price_invoice(account, n, prices)``,
so the replacement of invoice n at version 2 bills ``price_invoice(account, n, v2)``.
Failures are real: a trigger the test creates on the database file refuses
the write, as ``test_storage_faults.py`` does.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from app_client import AppClient, open_client, serving
from harness import SseEvent, sql_rows, sse_events, until

from durable import Run, RunStatus
from invoices.correction import correct_invoices
from invoices.keys import engine_key
from invoices.pricing import CATALOG, SEED_PRICES, PriceList, Product, price_invoice

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
V2 = PriceList(2, "USD", 825, tuple(Product(p.sku, p.description, p.unit_price_cents + 100) for p in CATALOG))
REPLACE = "invoices.correction.issue_replacement"
CREDIT = "invoices.correction.issue_credit_note"


class Api(AppClient):
    async def batch(self, account_id: str, total: int) -> str:
        """A batch at 0s, run to its end."""
        started = await self.json("POST", "/api/start", {"accountId": account_id, "total": total, "delay": "0s"})
        run_id: str = started["runId"]
        await self.events(run_id)
        return run_id

    async def raise_prices(self) -> None:
        """Store version 2: every seed price plus one dollar (``V2``)."""
        body = await self.json("PUT", "/api/prices", {"products": [p.to_json() for p in V2.products]})
        assert body["version"] == 2

    async def correct(self, run_id: str) -> dict[str, Any]:
        started: dict[str, Any] = await self.json("POST", f"/api/runs/{run_id}/correct", {})
        return started

    async def events(self, run_id: str) -> list[SseEvent]:
        response = await self.client.get(f"/api/stream/{run_id}")
        assert response.status == 200
        return [event async for event in sse_events(response)]

    async def data(self, run_id: str) -> list[dict[str, Any]]:
        return [data for _, data in await self.events(run_id)]


async def open_api(db: Path, statuses: list[int]) -> Api:
    return await open_client(Api, db, statuses)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(Api, tmp_path / "invoices.db") as instance:
        yield instance


def inv(account: str, n: int) -> str:
    return f"INV-{account}-{n:04d}"


def cn(account: str, n: int) -> str:
    return f"CN-{account}-{n:04d}"


def corrected(account: str, i: int, total: int, n: int, note: int, replacement: int) -> dict[str, Any]:
    """The stream event of invoice n's correction, the run's i-th, by credit note ``note`` and replacement ``replacement``."""
    old, new = price_invoice(account, n, SEED_PRICES), price_invoice(account, n, V2)
    return {
        "type": "correction",
        "current": i,
        "total": total,
        "accountId": account,
        "invoiceId": inv(account, n),
        "creditNoteId": cn(account, note),
        "replacementId": inv(account, replacement),
        "deltaCents": new.total_cents - old.total_cents,
        "message": f"Corrected {inv(account, n)} ({i} of {total}): credit note {cn(account, note)},"
        f" replacement {inv(account, replacement)}",
        "status": "corrected",
        "customer": old.customer,
        "currency": "USD",
        "originalTotalCents": old.total_cents,
        "totalCents": new.total_cents,
        "priceVersion": 2,
    }


def reverted(account: str, i: int, total: int, n: int, note: int) -> dict[str, Any]:
    old = price_invoice(account, n, SEED_PRICES)
    return {
        "type": "reverted",
        "current": i,
        "total": total,
        "accountId": account,
        "invoiceId": inv(account, n),
        "creditNoteId": cn(account, note),
        "replacementId": None,
        "deltaCents": 0,
        "message": f"Correction of {inv(account, n)} ({i} of {total}) rolled back: credit note {cn(account, note)} reverted,"
        " no replacement",
        "status": "reverted",
        "customer": old.customer,
        "currency": "USD",
        "originalTotalCents": old.total_cents,
        "totalCents": None,
        "priceVersion": None,
    }


def ending(kind: str, account: str, run_id: str, current: int, total: int, corrected_count: int, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "current": current,
        "total": total,
        "accountId": account,
        "correctsRunId": run_id,
        "invoicesCorrected": corrected_count,
        "message": message,
    }


def listed(account: str, run_c: str, i: int, n: int, note: int, replacement: int | None) -> dict[str, Any]:
    """An entry of GET /api/runs/<id>/corrections (``issuedAt`` aside); ``replacement`` None: reverted."""
    old, new = price_invoice(account, n, SEED_PRICES), price_invoice(account, n, V2)
    return {
        "invoiceId": inv(account, n),
        "creditNoteId": cn(account, note),
        "replacementId": None if replacement is None else inv(account, replacement),
        "deltaCents": 0 if replacement is None else new.total_cents - old.total_cents,
        "status": "reverted" if replacement is None else "corrected",
        "accountId": account,
        "customer": old.customer,
        "currency": "USD",
        "originalTotalCents": old.total_cents,
        "creditNoteTotalCents": -old.total_cents,
        "replacementTotalCents": None if replacement is None else new.total_cents,
        "originalPriceVersion": 1,
        "priceVersion": None if replacement is None else 2,
        "correctionRunId": run_c,
        "i": i,
    }


def without_issued_at(entry: dict[str, Any]) -> dict[str, Any]:
    assert ISO_MS.fullmatch(entry["issuedAt"]), entry["issuedAt"]
    return {key: value for key, value in entry.items() if key != "issuedAt"}


def refuse_replacement_of(invoice_id: str) -> str:
    """A trigger refusing the replacement of one invoice (``RAISE(ABORT)``: an IntegrityError in the step)."""
    return (
        f"CREATE TRIGGER refuse_replacement BEFORE INSERT ON invoices WHEN NEW.replaces = '{invoice_id}'"
        " BEGIN SELECT RAISE(ABORT, 'replacement refused by the test'); END"
    )


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def invoice_states(api: Api, account: str) -> list[tuple[str, str, str | None, str | None, int]]:
    return [
        (str(a), str(b), c, d, int(e))
        for a, b, c, d, e in api.rows(
            "SELECT invoice_id, status, voided_by, replaces, price_version FROM invoices WHERE account_id = ? ORDER BY n",
            (account,),
        )
    ]


def credit_note_states(api: Api, account: str) -> list[tuple[str, int, str, str]]:
    return [
        (str(a), int(b), str(c), str(d))
        for a, b, c, d in api.rows(
            "SELECT credit_note_id, n, invoice_id, status FROM credit_notes WHERE account_id = ? ORDER BY n", (account,)
        )
    ]


def numbers(api: Api, account: str) -> list[int]:
    """The account's invoice numbers taken in the ledger, in order: gapless means 1..N."""
    return [int(n) for (n,) in api.rows("SELECT n FROM run_invoices WHERE account_id = ? ORDER BY n", (account,))]


# -- the whole story ---------------------------------------------------------------------------------


async def test_a_correction_voids_each_invoice_and_replaces_it_at_the_current_prices(api: Api) -> None:
    account = "acct_c"
    run_id = await api.batch(account, 3)
    await api.raise_prices()

    started = await api.correct(run_id)
    run_c = started["correctionRunId"]
    assert started == {
        "correctionRunId": run_c,
        "runId": run_id,
        "priceVersion": 2,
        "toCorrect": 3,
        "accountId": account,
        "message": "Correction started: 3 invoices to void and replace at price list version 2",
    }
    events = await api.events(run_c)
    assert [index for index, _ in events] == [0, 1, 2, 3]
    assert [data for _, data in events] == [
        corrected(account, 1, 3, 1, 1, 4),
        corrected(account, 2, 3, 2, 2, 5),
        corrected(account, 3, 3, 3, 3, 6),
        ending("complete", account, run_id, 3, 3, 3, "Correction completed: 3 of 3 invoices corrected"),
    ]

    # The correction run is a run: status, kind, what it corrects, its invoices (the replacements).
    status = await api.json("GET", f"/api/status?runId={run_c}")
    assert ISO_MS.fullmatch(status["completedAt"])
    assert status == {
        "runId": run_c,
        "kind": "correction",
        "status": "completed",
        "createdAt": status["createdAt"],
        "startedAt": status["startedAt"],
        "completedAt": status["completedAt"],
        "accountId": account,
        "total": 3,
        "delay": None,
        "priceVersion": 2,
        "current": 3,
        "error": None,
        "queuePosition": None,
        "reviewFirst": None,
        "approvalTimeout": None,
        "waitingFor": None,
        "correctsRunId": run_id,
    }
    assert (await api.json("GET", f"/api/status?runId={run_id}"))["kind"] == "batch"
    listing = await api.json("GET", "/api/runs")
    assert [(run["runId"], run["kind"]) for run in listing["runs"]] == [(run_c, "correction"), (run_id, "batch")]
    assert await api.json("POST", "/api/cancel", {"runId": run_c}, status=409) == {
        "error": f"Cannot cancel workflow run {run_c} with status completed",
        "currentStatus": "completed",
    }

    # The originals: voided, each by its credit note; their lines and amounts unchanged.
    originals = (await api.json("GET", f"/api/runs/{run_id}/invoices"))["invoices"]
    assert [(i["invoiceId"], i["status"], i["voidedBy"], i["replaces"], i["totalCents"]) for i in originals] == [
        (inv(account, n), "voided", cn(account, n), None, price_invoice(account, n).total_cents) for n in (1, 2, 3)
    ]
    # The replacements: the next numbers, the same customer and lines (sku, quantity) at version 2.
    replacements = (await api.json("GET", f"/api/runs/{run_c}/invoices"))["invoices"]
    for n, replacement in enumerate(replacements, start=1):
        draft = price_invoice(account, n, V2)
        assert ISO_MS.fullmatch(replacement["issuedAt"])
        assert replacement == {
            "invoiceId": inv(account, 3 + n),
            "runId": run_c,
            "accountId": account,
            "n": 3 + n,
            "customer": draft.customer,
            "priceVersion": 2,
            "lineItems": [item.to_json() for item in draft.items],
            "currency": "USD",
            "subtotalCents": draft.subtotal_cents,
            "taxCents": draft.tax_cents,
            "totalCents": draft.total_cents,
            "issuedAt": replacement["issuedAt"],
            "status": "issued",
            "voidedBy": None,
            "replaces": inv(account, n),
        }
    assert len(replacements) == 3

    # A credit note: the invoice's lines and amounts negated, at the invoice's price version.
    note = await api.json("GET", f"/api/credit-notes/{cn(account, 2)}")
    old = price_invoice(account, 2)
    assert ISO_MS.fullmatch(note["issuedAt"])
    assert note == {
        "creditNoteId": cn(account, 2),
        "runId": run_c,
        "accountId": account,
        "n": 2,
        "invoiceId": inv(account, 2),
        "replacementId": inv(account, 5),
        "customer": old.customer,
        "priceVersion": 1,
        "lineItems": [{**item.to_json(), "quantity": -item.quantity, "amountCents": -item.amount_cents} for item in old.items],
        "currency": "USD",
        "subtotalCents": -old.subtotal_cents,
        "taxCents": -old.tax_cents,
        "totalCents": -old.total_cents,
        "issuedAt": note["issuedAt"],
        "status": "issued",
        "revertedAt": None,
    }

    # The corrections of the batch, as JSON and CSV.
    body = await api.json("GET", f"/api/runs/{run_id}/corrections")
    deltas = [price_invoice(account, n, V2).total_cents - price_invoice(account, n).total_cents for n in (1, 2, 3)]
    assert [without_issued_at(entry) for entry in body.pop("corrections")] == [
        listed(account, run_c, n, n, n, 3 + n) for n in (1, 2, 3)
    ]
    assert ISO_MS.fullmatch(body["correctionRuns"][0].pop("createdAt"))
    assert body == {
        "runId": run_id,
        "priceVersion": 2,
        "toCorrect": 0,
        "count": 3,
        "deltaCents": sum(deltas),
        "correctionRuns": [{"runId": run_c, "status": "completed", "priceVersion": 2, "total": 3}],
    }
    response = await api.client.get(f"/api/runs/{run_id}/corrections", params={"format": "csv"})
    assert (response.status, response.content_type, response.charset) == (200, "text/csv", "utf-8")
    assert response.headers["Content-Disposition"] == f'attachment; filename="corrections-{run_id}.csv"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    text = await response.text()
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    issued_at = [entry["issuedAt"] for entry in (await api.json("GET", f"/api/runs/{run_id}/corrections"))["corrections"]]
    assert rows == [
        [
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
        ],
        *[
            [
                inv(account, n),
                cn(account, n),
                inv(account, 3 + n),
                "corrected",
                account,
                price_invoice(account, n).customer,
                "USD",
                str(price_invoice(account, n).total_cents),
                str(-price_invoice(account, n).total_cents),
                str(price_invoice(account, n, V2).total_cents),
                str(deltas[n - 1]),
                "1",
                "2",
                run_c,
                issued_at[n - 1],
            ]
            for n in (1, 2, 3)
        ],
    ]

    # The invoices CSVs say which invoice was voided by which note, and which replaces which.
    for run, expected in (
        (run_id, [("voided", cn(account, n), "") for n in (1, 2, 3)]),
        (run_c, [("issued", "", inv(account, n)) for n in (1, 2, 3)]),
    ):
        text = await (await api.client.get(f"/api/runs/{run}/invoices", params={"format": "csv"})).text()
        assert [(r["status"], r["voided_by"], r["replaces"]) for r in csv.DictReader(io.StringIO(text))] == expected

    # Both sequences are gapless, and the next batch continues the invoice numbering.
    assert credit_note_states(api, account) == [(cn(account, n), n, inv(account, n), "issued") for n in (1, 2, 3)]
    later = await api.batch(account, 1)
    assert [i["invoiceId"] for i in (await api.json("GET", f"/api/runs/{later}/invoices"))["invoices"]] == [inv(account, 7)]
    assert numbers(api, account) == list(range(1, 8))

    # Nothing left to correct: every invoice is voided, the replacements are at the current version.
    assert await api.json("POST", f"/api/runs/{run_id}/correct", {}, status=409) == {
        "error": f"Every invoice of run {run_id} is already at the current price list (version 2) or corrected:"
        " there is nothing to correct; change a price with PUT /api/prices first",
        "priceVersion": 2,
    }


async def test_a_correction_run_can_itself_be_corrected_after_the_next_price_change(api: Api) -> None:
    account = "acct_cc"
    run_id = await api.batch(account, 2)
    await api.raise_prices()
    first = (await api.correct(run_id))["correctionRunId"]
    await api.events(first)
    v3 = [{**p.to_json(), "unitPriceCents": p.unit_price_cents + 250} for p in V2.products]
    assert (await api.json("PUT", "/api/prices", {"products": v3, "taxBasisPoints": 1000}))["version"] == 3

    assert (await api.json("GET", f"/api/runs/{first}/corrections"))["toCorrect"] == 2
    second = await api.correct(first)
    assert (second["runId"], second["priceVersion"], second["toCorrect"]) == (first, 3, 2)
    await api.events(second["correctionRunId"])
    prices3 = PriceList(3, "USD", 1000, tuple(Product(p["sku"], p["description"], p["unitPriceCents"]) for p in v3))
    assert invoice_states(api, account) == [
        (inv(account, 1), "voided", cn(account, 1), None, 1),
        (inv(account, 2), "voided", cn(account, 2), None, 1),
        (inv(account, 3), "voided", cn(account, 3), inv(account, 1), 2),
        (inv(account, 4), "voided", cn(account, 4), inv(account, 2), 2),
        (inv(account, 5), "issued", None, inv(account, 3), 3),
        (inv(account, 6), "issued", None, inv(account, 4), 3),
    ]
    # The lines stay those of the first invoice, priced at version 3.
    last = await api.json("GET", f"/api/invoices/{inv(account, 5)}")
    draft = price_invoice(account, 1, prices3)
    assert (last["lineItems"], last["totalCents"]) == ([item.to_json() for item in draft.items], draft.total_cents)


async def test_an_invoice_another_correction_voided_meanwhile_is_skipped_not_voided_twice(api: Api) -> None:
    """Two corrections of one invoice: the route refuses the second, and the store would skip it too."""
    account = "acct_skip"
    run_id = await api.batch(account, 2)
    await api.raise_prices()
    first = await api.correct(run_id)
    await api.events(first["correctionRunId"])
    run = await api.app[engine_key].start(correct_invoices, run_id, account, 2, [inv(account, 1)])
    assert await api.data(run.run_id) == [
        {
            "type": "skipped",
            "current": 1,
            "total": 1,
            "accountId": account,
            "invoiceId": inv(account, 1),
            "creditNoteId": cn(account, 1),
            "replacementId": None,
            "deltaCents": 0,
            "message": f"Skipped {inv(account, 1)} (1 of 1): already voided by {cn(account, 1)}",
        },
        ending("complete", account, run_id, 1, 1, 0, "Correction completed: 0 of 1 invoices corrected"),
    ]
    assert credit_note_states(api, account) == [(cn(account, n), n, inv(account, n), "issued") for n in (1, 2)]
    assert numbers(api, account) == [1, 2, 3, 4]


# -- refusals -------------------------------------------------------------------------------------------


async def test_what_cannot_be_corrected_is_refused_with_the_reason(api: Api) -> None:
    missing = await api.json("POST", "/api/runs/wrun_nope/correct", {}, status=404)
    assert missing == {"error": "Workflow run wrun_nope not found"}
    assert (await api.json("GET", "/api/runs/wrun_nope/corrections", status=404))["error"] == "Workflow run wrun_nope not found"
    for bad in ("CN-acct_x-0001", "CN-..-0001", "INV-acct_x-0001"):
        assert await api.json("GET", f"/api/credit-notes/{bad}", status=404) == {"error": f"Credit note {bad!r} not found"}

    sleeping = (await api.json("POST", "/api/start", {"accountId": "acct_r", "total": 3, "delay": "1h"}))["runId"]

    async def sleeps() -> bool:
        status = await api.json("GET", f"/api/status?runId={sleeping}")
        return (status["status"], status["current"]) == ("running", 1)

    await until(sleeps, what="the batch to sleep after its first invoice")
    assert await api.json("POST", f"/api/runs/{sleeping}/correct", {}, status=409) == {
        "error": f"Run {sleeping} is still running: correct its invoices once it has ended (or cancel it first)",
        "currentStatus": "running",
    }
    plain = await api.client.post(f"/api/runs/{sleeping}/correct", data=b"{}", headers={"Content-Type": "text/plain"})
    assert (plain.status, (await plain.json())["error"]) == (415, "Content-Type must be application/json, got 'text/plain'")
    await api.json("POST", "/api/cancel", {"runId": sleeping})
    assert await api.json("POST", f"/api/runs/{sleeping}/correct", {}, status=409) == {
        "error": f"Every invoice of run {sleeping} is already at the current price list (version 1) or corrected:"
        " there is nothing to correct; change a price with PUT /api/prices first",
        "priceVersion": 1,
    }
    bad_format = await api.json("GET", f"/api/runs/{sleeping}/corrections?format=xml", status=400)
    assert bad_format == {"error": "format must be json or csv, got 'xml'"}
    assert api.rows("SELECT COUNT(*) FROM credit_notes") == [(0,)]
    assert api.rows("SELECT COUNT(*) FROM correction_runs") == [(0,)]


async def test_a_second_correction_while_one_runs_is_refused_and_names_it(api: Api) -> None:
    account = "acct_twice"
    run_id = await api.batch(account, 2)
    await api.raise_prices()
    execute(api.db, refuse_replacement_of(inv(account, 1)))  # the first pair waits to retry its replacement
    run_c = (await api.correct(run_id))["correctionRunId"]

    async def retrying() -> bool:
        timeline = (await api.json("GET", f"/api/runs/{run_c}"))["timeline"]
        return any(op["name"] == REPLACE and op["status"] == "retrying" for op in timeline)

    await until(retrying, what="the replacement to wait for its retry")
    assert await api.json("POST", f"/api/runs/{run_id}/correct", {}, status=409) == {
        "error": f"Correction run {run_c} of run {run_id} is still running: follow it at /api/stream/{run_c}",
        "correctionRunId": run_c,
    }
    execute(api.db, "DROP TRIGGER refuse_replacement")
    assert [data["type"] for data in await api.data(run_c)] == ["correction", "correction", "complete"]
    assert api.rows("SELECT COUNT(*) FROM correction_runs") == [(1,)]
    assert credit_note_states(api, account) == [(cn(account, n), n, inv(account, n), "issued") for n in (1, 2)]


# -- a failure mid-way rolls the pair back -----------------------------------------------------------------


async def test_a_failed_replacement_rolls_its_pair_back_and_a_new_correction_finishes_the_job(api: Api) -> None:
    account = "acct_f"
    run_id = await api.batch(account, 3)
    await api.raise_prices()
    execute(api.db, refuse_replacement_of(inv(account, 2)))
    run_c = (await api.correct(run_id))["correctionRunId"]

    failure = "Step invoices.correction.issue_replacement failed: IntegrityError: replacement refused by the test"
    assert await api.data(run_c) == [
        corrected(account, 1, 3, 1, 1, 4),
        reverted(account, 2, 3, 2, 2),
        ending("error", account, run_id, 2, 3, 1, f"Correction failed after 1 of 3 invoices: {failure}"),
    ]
    status = await api.json("GET", f"/api/status?runId={run_c}")
    assert (status["status"], status["current"], status["error"]) == ("failed", 1, f"StepFailed: {failure}")
    # The rollback is a step of its own, after the replacement failed for good (3 attempts).
    timeline = (await api.json("GET", f"/api/runs/{run_c}"))["timeline"]
    assert [(op["name"], op["status"], len(op["attempts"])) for op in timeline] == [
        ("invoices.correction.begin_correction", "completed", 1),
        (CREDIT, "completed", 1),
        (REPLACE, "completed", 1),
        (CREDIT, "completed", 1),
        (REPLACE, "failed", 3),
        ("invoices.correction.revert_correction", "completed", 1),
    ]
    # Pair 1 complete, pair 2 reverted (its note kept under its number), invoice 3 untouched;
    # the number the failed replacement took was given back.
    assert credit_note_states(api, account) == [
        (cn(account, 1), 1, inv(account, 1), "issued"),
        (cn(account, 2), 2, inv(account, 2), "reverted"),
    ]
    assert invoice_states(api, account) == [
        (inv(account, 1), "voided", cn(account, 1), None, 1),
        (inv(account, 2), "issued", None, None, 1),
        (inv(account, 3), "issued", None, None, 1),
        (inv(account, 4), "issued", None, inv(account, 1), 2),
    ]
    assert numbers(api, account) == [1, 2, 3, 4]
    note = await api.json("GET", f"/api/credit-notes/{cn(account, 2)}")
    assert (note["status"], note["replacementId"], bool(ISO_MS.fullmatch(note["revertedAt"]))) == ("reverted", None, True)

    # Once the fault is gone, a new correction takes the two invoices left.
    execute(api.db, "DROP TRIGGER refuse_replacement")
    again = await api.correct(run_id)
    assert again["toCorrect"] == 2
    run_d = again["correctionRunId"]
    assert await api.data(run_d) == [
        corrected(account, 1, 2, 2, 3, 5),
        corrected(account, 2, 2, 3, 4, 6),
        ending("complete", account, run_id, 2, 2, 2, "Correction completed: 2 of 2 invoices corrected"),
    ]
    body = await api.json("GET", f"/api/runs/{run_id}/corrections")
    assert [without_issued_at(entry) for entry in body["corrections"]] == [
        listed(account, run_c, 1, 1, 1, 4),
        listed(account, run_c, 2, 2, 2, None),
        listed(account, run_d, 1, 2, 3, 5),
        listed(account, run_d, 2, 3, 4, 6),
    ]
    assert [(run["runId"], run["status"]) for run in body["correctionRuns"]] == [(run_c, "failed"), (run_d, "completed")]
    assert body["toCorrect"] == 0
    assert numbers(api, account) == [1, 2, 3, 4, 5, 6]
    assert [n for _, n, _, _ in credit_note_states(api, account)] == [1, 2, 3, 4]


# -- cancel mid-correction ---------------------------------------------------------------------------------

REFUSE_NOTE_RESULT = """CREATE TRIGGER refuse_note_result BEFORE INSERT ON ops
    WHEN NEW.name = 'invoices.correction.issue_credit_note' AND NEW.state = 'completed'
     AND json_extract(CAST(NEW.result AS TEXT), '$.creditNoteId') = '{note}'
    BEGIN SELECT RAISE(ABORT, 'credit note result refused by the test'); END"""


async def _status_is(run: Run, status: RunStatus) -> bool:
    return await run.status() is status


async def _cancel_while_the_credit_note_step_is_in_flight(api: Api, run_c: str, note: str) -> ClientResponse:
    """Hold the credit-note step of ``note`` in flight and cancel meanwhile (as ``test_http`` holds batch steps).

    The trigger refuses that step's result, so the run stops on the write fault as
    after a crash, the note issued but the step unjournaled. The test then holds the
    write lock and drops the trigger in that transaction; the engine resumes the run,
    whose re-executed step blocks on its first write; the cancel comes while it does.
    Releasing the lock lets the step finish, then the run unwind.
    """
    engine = api.app[engine_key]
    run = engine.get_run(run_c)
    lock = sqlite3.connect(api.db, isolation_level=None)
    try:
        await until(lambda: engine.stats()["active_runs"] == 0, what=f"the run to stop on {note}'s refused result")
        assert await run.status() is RunStatus.RUNNING
        await engine.execute("SELECT 1")  # every write the stopped run had queued has been tried
        lock.execute("BEGIN IMMEDIATE")
        lock.execute("DROP TRIGGER refuse_note_result")
        await until(lambda: engine.stats()["tasks"] == 2, what="the resumed credit-note step to wait for the write lock")
        cancelling = asyncio.create_task(api.send("POST", "/api/cancel", {"runId": run_c}))
        await until(lambda: _status_is(run, RunStatus.CANCELLED), what="the cancel to be requested")
        assert not cancelling.done()
        lock.execute("COMMIT")
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.execute("DROP TRIGGER IF EXISTS refuse_note_result")
        lock.close()
    return await cancelling


@pytest.mark.parametrize("replaceable", [True, False], ids=["completed", "rolled-back"])
async def test_a_cancel_during_a_pair_completes_or_rolls_it_back_and_nothing_follows(
    tmp_path: Path, api: Api, replaceable: bool
) -> None:
    account = "acct_x"
    run_id = await api.batch(account, 5)
    await api.raise_prices()
    execute(api.db, REFUSE_NOTE_RESULT.format(note=cn(account, 3)))
    if not replaceable:
        execute(api.db, refuse_replacement_of(inv(account, 3)))
    run_c = (await api.correct(run_id))["correctionRunId"]

    response = await _cancel_while_the_credit_note_step_is_in_flight(api, run_c, cn(account, 3))
    done = 3 if replaceable else 2
    assert response.status == 200
    assert await response.json() == {
        "runId": run_c,
        "message": "Workflow cancelled successfully",
        "previousStatus": "running",
        "currentStatus": "cancelled",
        "invoicesIssued": done,
        "invoicesCorrected": done,
    }
    third = corrected(account, 3, 5, 3, 3, 8) if replaceable else reverted(account, 3, 5, 3, 3)
    expected_events = [
        corrected(account, 1, 5, 1, 1, 6),
        corrected(account, 2, 5, 2, 2, 7),
        third,
        ending("cancelled", account, run_id, 3, 5, done, f"Correction cancelled after {done} of 5 invoices"),
    ]
    assert await api.data(run_c) == expected_events
    # The pair in flight ended while the run unwound: its replacement step never ran.
    timeline = (await api.json("GET", f"/api/runs/{run_c}"))["timeline"]
    assert [op["name"] for op in timeline][-2:] == [REPLACE, CREDIT]
    assert sql_rows(api.db, "SELECT status, unwound FROM runs WHERE run_id = ?", (run_c,)) == [("cancelled", 1)]

    def assert_final() -> None:
        states = credit_note_states(api, account)
        assert states == [
            (cn(account, n), n, inv(account, n), "issued" if n < 3 or replaceable else "reverted") for n in (1, 2, 3)
        ]
        voided = invoice_states(api, account)
        assert [state[:3] for state in voided[:5]] == [
            *[(inv(account, n), "voided", cn(account, n)) for n in range(1, done + 1)],
            *[(inv(account, n), "issued", None) for n in range(done + 1, 6)],
        ]
        assert [(i, r) for i, _, _, r, _ in voided[5:]] == [(inv(account, 5 + n), inv(account, n)) for n in range(1, done + 1)]
        assert numbers(api, account) == list(range(1, 6 + done))

    assert_final()
    # Nothing is corrected after the cancel returned, also after a restart.
    await api.client.close()
    statuses: list[int] = []
    reopened = await open_api(api.db, statuses)
    try:
        assert (await reopened.json("GET", f"/api/status?runId={run_c}"))["status"] == "cancelled"
        assert await reopened.data(run_c) == expected_events
        assert_final()
        body = await reopened.json("GET", f"/api/runs/{run_id}/corrections")
        assert (body["count"], body["toCorrect"]) == (3, 5 - done)
    finally:
        await reopened.client.close()
    assert [status for status in statuses if status >= 500] == []


async def test_a_cancel_before_the_first_pair_corrects_nothing(api: Api) -> None:
    account = "acct_early"
    run_id = await api.batch(account, 2)
    await api.raise_prices()
    # The first credit note is refused, so the step retries; the cancel interrupts its wait.
    execute(
        api.db,
        "CREATE TRIGGER refuse_note BEFORE INSERT ON credit_notes"
        " BEGIN SELECT RAISE(ABORT, 'credit note refused by the test'); END",
    )
    run_c = (await api.correct(run_id))["correctionRunId"]

    async def retrying() -> bool:
        timeline = (await api.json("GET", f"/api/runs/{run_c}"))["timeline"]
        return any(op["name"] == CREDIT and op["status"] == "retrying" for op in timeline)

    await until(retrying, what="the credit note to wait for its retry")
    cancelled = await api.json("POST", "/api/cancel", {"runId": run_c})
    assert (cancelled["invoicesIssued"], cancelled["invoicesCorrected"]) == (0, 0)
    execute(api.db, "DROP TRIGGER refuse_note")
    assert await api.data(run_c) == [
        ending("cancelled", account, run_id, 0, 2, 0, "Correction cancelled after 0 of 2 invoices"),
    ]
    assert api.rows("SELECT COUNT(*) FROM credit_notes") == [(0,)]
    assert [state[1] for state in invoice_states(api, account)] == ["issued", "issued"]


# -- older files ----------------------------------------------------------------------------------------------


async def test_a_file_from_before_corrections_gains_the_columns_and_can_be_corrected(tmp_path: Path) -> None:
    db = tmp_path / "invoices.db"
    statuses: list[int] = []
    api = await open_api(db, statuses)
    run_id = await api.batch("acct_old", 2)
    await api.client.close()
    # What the previous release wrote: invoices without the correction columns, no correction tables.
    execute(
        db,
        "DROP TABLE credit_notes",
        "DROP TABLE correction_runs",
        "ALTER TABLE invoices DROP COLUMN status",
        "ALTER TABLE invoices DROP COLUMN voided_by",
        "ALTER TABLE invoices DROP COLUMN replaces",
    )
    api = await open_api(db, statuses)
    try:
        columns = [row[1] for row in api.rows("PRAGMA table_info(invoices)")]
        assert columns[-3:] == ["status", "voided_by", "replaces"]
        assert invoice_states(api, "acct_old") == [(inv("acct_old", n), "issued", None, None, 1) for n in (1, 2)]
        await api.raise_prices()
        run_c = (await api.correct(run_id))["correctionRunId"]
        assert await api.data(run_c) == [
            corrected("acct_old", 1, 2, 1, 1, 3),
            corrected("acct_old", 2, 2, 2, 2, 4),
            ending("complete", "acct_old", run_id, 2, 2, 2, "Correction completed: 2 of 2 invoices corrected"),
        ]
    finally:
        await api.client.close()
    assert [status for status in statuses if status >= 500] == []
