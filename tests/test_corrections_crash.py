"""A correction survives SIGKILL of a real ``python server.py``.

After every crash and restart, on the server's own SQLite file: each invoice
of the batch has exactly one credit note and one replacement (or, after a
cancel, a pair that is whole or rolled back, never half), the credit-note and
the invoice numbers of the account are both 1..N without a gap or a
duplicate, and the stream has exactly one event per invoice. The random
moments come from one seed per test (printed, replay with
``RELIABILITY_SEED=<seed>``), as in ``test_numbering_crash.py``.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import Api, ServerProcess, integrity_check, mid_batch_target, sql_rows, until

from invoices.pricing import CATALOG

pytestmark = pytest.mark.slow


async def batch_then_new_prices(api: Api, account: str, total: int) -> str:
    """A batch of ``total`` at version 1, then version 2 of the prices; the batch's run id."""
    run_id = await api.start(account, total, "0s")
    assert (await api.wait_terminal(run_id))["status"] == "completed"
    products = [{**p.to_json(), "unitPriceCents": p.unit_price_cents + 100} for p in CATALOG]
    status, body = await api.request("PUT", "/api/prices", {"products": products})
    assert (status, body["version"]) == (200, 2)
    return run_id


async def start_correction(api: Api, run_id: str, total: int) -> str:
    status, body = await api.request("POST", f"/api/runs/{run_id}/correct", {})
    assert (status, body["toCorrect"], body["priceVersion"]) == (200, total, 2), body
    correction_run_id: str = body["correctionRunId"]
    return correction_run_id


async def corrected_at_least(api: Api, run_id: str, target: int) -> bool:
    return int((await api.status(run_id))["current"]) >= target


def pairs(db: Path, run_c: str) -> list[tuple[int, str, str, str, str | None]]:
    """(i, credit note, invoice voided, note status, replacement stored) of each pair, by i."""
    rows = sql_rows(
        db,
        "SELECT c.i, c.credit_note_id, c.invoice_id, c.status, r.invoice_id FROM credit_notes AS c"
        " LEFT JOIN run_invoices AS l ON l.run_id = c.run_id AND l.k = c.i"
        " LEFT JOIN invoices AS r ON r.invoice_id = l.invoice_id WHERE c.run_id = ? ORDER BY c.i",
        (run_c,),
    )
    return [(int(i), str(note), str(invoice), str(state), replacement) for i, note, invoice, state, replacement in rows]


def assert_sequences_gapless(db: Path, account: str, invoices: int, notes: int) -> None:
    """Invoice numbers 1..invoices, each taken once with its invoice; credit notes 1..notes."""
    assert [n for (n,) in sql_rows(db, "SELECT n FROM run_invoices WHERE account_id = ? ORDER BY n", (account,))] == list(
        range(1, invoices + 1)
    )
    assert sql_rows(db, "SELECT n, invoice_id FROM invoices WHERE account_id = ? ORDER BY n", (account,)) == [
        (n, f"INV-{account}-{n:04d}") for n in range(1, invoices + 1)
    ]
    assert sql_rows(db, "SELECT n, credit_note_id FROM credit_notes WHERE account_id = ? ORDER BY n", (account,)) == [
        (n, f"CN-{account}-{n:04d}") for n in range(1, notes + 1)
    ]


def assert_invoices_match_pairs(db: Path, account: str, pair_rows: list[tuple[int, str, str, str, str | None]]) -> None:
    """An invoice is voided exactly by its pair's issued note, and a replacement replaces exactly its pair's invoice."""
    voided = {invoice: note for _, note, invoice, state, _ in pair_rows if state == "issued"}
    replaced = {replacement: invoice for _, _, invoice, _, replacement in pair_rows if replacement is not None}
    rows = sql_rows(db, "SELECT invoice_id, status, voided_by, replaces FROM invoices WHERE account_id = ?", (account,))
    assert {i: (s, v) for i, s, v, _ in rows if s == "voided"} == {i: ("voided", note) for i, note in voided.items()}
    assert {i: r for i, _, _, r in rows if r is not None} == replaced


async def stream_of(api: Api, run_c: str) -> list[dict[str, Any]]:
    return [data for _, data in await api.stream(run_c)]


@pytest.mark.parametrize("trial", range(2))
async def test_sigkill_mid_correction_each_invoice_gets_one_credit_note_and_one_replacement(
    server: ServerProcess, api: Api, rng: random.Random, trial: int
) -> None:
    account, total = f"crash_fix_{trial}", 300
    run_id = await batch_then_new_prices(api, account, total)
    run_c = await start_correction(api, run_id, total)
    target = mid_batch_target(rng, total)
    await until(lambda: corrected_at_least(api, run_c, target), timeout=60, interval=0.005, what=f"{target} corrections")
    await server.kill()
    assert target <= len(pairs(server.db, run_c)) <= total

    await server.start()
    final = await api.wait_terminal(run_c, timeout=90)
    assert (final["status"], final["current"]) == ("completed", total)
    rows = pairs(server.db, run_c)
    expected = [
        (i, f"CN-{account}-{i:04d}", f"INV-{account}-{i:04d}", "issued", f"INV-{account}-{total + i:04d}")
        for i in range(1, total + 1)
    ]
    assert rows == expected
    assert_invoices_match_pairs(server.db, account, rows)
    assert_sequences_gapless(server.db, account, 2 * total, total)
    events = await stream_of(api, run_c)
    assert [(e["type"], e["current"], e["invoiceId"], e["creditNoteId"], e["replacementId"]) for e in events[:-1]] == [
        ("correction", i, invoice, note, replacement) for i, note, invoice, _, replacement in expected
    ]
    assert (events[-1]["type"], events[-1]["invoicesCorrected"]) == ("complete", total)
    code = await server.stop()
    assert code == 0
    assert integrity_check(server.db) == "ok"


async def _cancel_soon(api: Api, run_id: str) -> None:
    try:
        await api.cancel(run_id)
    except aiohttp.ClientError:
        pass  # the server died under it


@pytest.mark.parametrize("trial", range(2))
async def test_sigkill_during_a_cancel_of_a_correction_leaves_no_pair_half_done(
    server: ServerProcess, api: Api, rng: random.Random, trial: int
) -> None:
    account, total = f"crash_fix_cancel_{trial}", 300
    run_id = await batch_then_new_prices(api, account, total)
    run_c = await start_correction(api, run_id, total)
    target = mid_batch_target(rng, total)
    await until(lambda: corrected_at_least(api, run_c, target), timeout=60, interval=0.005, what=f"{target} corrections")
    cancelling = asyncio.create_task(_cancel_soon(api, run_c))
    await asyncio.sleep(rng.uniform(0.0, 0.006))  # a random moment to crash at, not a wait for something
    await server.kill()
    await cancelling

    await server.start()
    # A cancelled run unwinds (settling its pairs) just after the restart; its stream ends when it has.
    events = await stream_of(api, run_c)
    final = await api.wait_terminal(run_c, timeout=60)
    rows = pairs(server.db, run_c)
    done = [row for row in rows if row[4] is not None]
    assert final["status"] in ("cancelled", "completed")
    assert int(final["current"]) == len(done)
    # Every pair is whole or rolled back: an issued note has its replacement, a reverted one none.
    assert [(state, replacement is not None) for _, _, _, state, replacement in rows] == [
        ("issued", True) if replacement is not None else ("reverted", False) for *_, replacement in rows
    ]
    assert [i for i, *_ in rows] == list(range(1, len(rows) + 1))
    assert [invoice for _, _, invoice, _, _ in rows] == [f"INV-{account}-{i:04d}" for i in range(1, len(rows) + 1)]
    assert_invoices_match_pairs(server.db, account, rows)
    assert_sequences_gapless(server.db, account, total + len(done), len(rows))
    # One event per pair that ended, then the end, whose count is the store's.
    kinds = {"issued": "correction", "reverted": "reverted"}
    assert [(e["type"], e["current"], e["creditNoteId"]) for e in events[:-1]] == [
        (kinds[state], i, note) for i, note, _, state, _ in rows
    ]
    assert (events[-1]["type"], events[-1]["invoicesCorrected"]) in (("cancelled", len(done)), ("complete", len(done)))
    # The invoices left are corrected by the next correction, continuing both sequences.
    if final["status"] == "cancelled":
        rest = await start_correction(api, run_id, total - len(done))
        assert (await api.wait_terminal(rest, timeout=90))["status"] == "completed"
        assert_sequences_gapless(server.db, account, 2 * total, len(rows) + total - len(done))
    code = await server.stop()
    assert code == 0
