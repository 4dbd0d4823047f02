"""Correcting a batch from the control panel, in headless Chromium.

A price edited in the price card makes the ended batch's invoices superseded:
the run card offers "Correct 3 invoices"; the correction is followed live
(held mid-way by a real SQLite trigger refusing one credit note until the
test drops it); each corrected invoice is struck through with links to its
credit note and replacement, whose lines open below the row exactly as the
API stored them; the corrections CSV is offered; a reload shows the same.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, expect

from invoices.pricing import price_invoice

from .panel import Panel, usd

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ACCOUNT = "acct_fix"
ROWS_TEXT = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"


def inv(n: int) -> str:
    return f"INV-{ACCOUNT}-{n:04d}"


def cn(n: int) -> str:
    return f"CN-{ACCOUNT}-{n:04d}"


def execute(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


def row(panel: Panel, invoice_id: str) -> Locator:
    return panel.page.locator(f'#invoice-rows tr[data-invoice-id="{invoice_id}"]')


async def expect_corrected(panel: Panel, n: int, note: int, replacement: int) -> None:
    """Row n struck through, with links to its credit note and its replacement."""
    tr = row(panel, inv(n))
    await expect(tr).to_have_attribute("data-status", "voided")
    await expect(tr).to_have_class(re.compile(r"\bvoided\b"))
    await expect(tr.locator(".void-note")).to_have_text(f"Voided by {cn(note)}, replaced by {inv(replacement)}")
    await expect(tr.get_by_role("link", name=cn(note))).to_have_attribute("href", f"/api/credit-notes/{cn(note)}")
    await expect(tr.get_by_role("link", name=inv(replacement))).to_have_attribute("href", f"/api/invoices/{inv(replacement)}")
    decorations = await tr.evaluate(
        "tr => [tr.querySelector('.row-toggle'), tr.querySelector('.customer-name'), tr.querySelector('td.num')]"
        ".map(el => getComputedStyle(el).textDecorationLine)"
    )
    assert decorations == ["line-through", "line-through", "line-through"]


async def expect_lines(panel: Panel, tr: Locator, doc_id: str, doc: dict[str, Any]) -> None:
    table = panel.page.locator(f'[id="detail-{doc_id}"] table.line-items')
    await expect(table.locator("caption")).to_have_text(f"Line items of {doc_id}, priced at price list v{doc['priceVersion']}")
    assert await table.locator("tbody tr").evaluate_all(ROWS_TEXT) == [
        [item["sku"], item["description"], str(item["quantity"]), usd(item["unitPriceCents"]), usd(item["amountCents"])]
        for item in doc["lineItems"]
    ]
    assert await table.locator("tfoot tr").evaluate_all(ROWS_TEXT) == [
        ["Subtotal", usd(doc["subtotalCents"])],
        ["Tax", usd(doc["taxCents"])],
        ["Total", usd(doc["totalCents"])],
    ]


async def test_a_batch_is_corrected_from_the_panel_live_with_struck_through_rows_and_links(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    run_id = await panel.start_batch(ACCOUNT, 3, "0s")
    await expect(panel.page.locator("#run-badge")).to_have_text("completed")
    await panel.wait_stream_closed()
    correction = panel.page.locator("#correction")
    await expect(correction).to_be_hidden()  # every invoice is at the current prices

    # Edit a price in the price card: version 2 supersedes the batch's version 1.
    sku = price_invoice(ACCOUNT, 1).items[0].sku
    await panel.page.get_by_role("button", name="Edit prices").click()
    await panel.page.get_by_label(f"Unit price of {sku}").fill("999.00")
    await panel.page.get_by_role("button", name="Save as new version").click()
    await expect(panel.page.locator("#prices-status")).to_contain_text("Saved as version 2.")
    button = panel.page.get_by_role("button", name="Correct 3 invoices")
    await expect(button).to_be_visible()
    await expect(panel.page.locator("#correction-summary")).to_have_text(
        "3 invoices of this run are priced at a superseded price list; the current one is v2."
    )

    # Hold the correction after its first invoice: the second credit note is refused until the test allows it.
    execute(
        panel.server.db,
        f"CREATE TRIGGER hold_note BEFORE INSERT ON credit_notes WHEN NEW.invoice_id = '{inv(2)}'"
        " BEGIN SELECT RAISE(ABORT, 'held by the test'); END",
    )
    await button.click()
    await expect(panel.page.locator("#correction-text")).to_have_text("1 / 3")
    await expect(panel.page.locator("#correction-status")).to_have_text("Correcting: 1 of 3 invoices corrected so far.")
    await expect_corrected(panel, 1, 1, 4)
    await expect(row(panel, inv(2))).to_have_attribute("data-status", "issued")
    await expect(panel.page.get_by_role("button", name="Cancel correction")).to_be_visible()
    await expect(button).to_be_hidden()
    assert await panel.page.locator("#correction-progress").evaluate("p => [p.value, p.max]") == [1, 3]
    execute(panel.server.db, "DROP TRIGGER hold_note")

    await expect(panel.page.locator("#correction-text")).to_have_text("3 / 3", timeout=20_000)
    await expect(panel.page.locator("#correction-status")).to_have_text(
        "Corrected 3 of 3 invoices: each has a credit note and a replacement at the current prices."
    )
    await expect(correction).to_have_attribute("data-state", "completed")
    await expect(correction).to_have_attribute("data-stream", "closed")
    for n in (1, 2, 3):
        await expect_corrected(panel, n, n, 3 + n)
    await expect(panel.page.get_by_role("button", name="Cancel correction")).to_be_hidden()
    await expect(panel.page.get_by_role("button", name=re.compile(r"^Correct \d"))).to_be_hidden()
    await expect(panel.page.locator("#correction-summary")).to_have_text(
        "3 invoices voided and replaced. Every invoice is at the current price list (v2) or corrected."
    )
    await panel.screenshot(tmp_path / "corrected.png")

    # What the page shows is what the API stored.
    stored = await panel.api(f"/api/runs/{run_id}/corrections")
    assert [(c["invoiceId"], c["creditNoteId"], c["replacementId"], c["status"]) for c in stored["corrections"]] == [
        (inv(n), cn(n), inv(3 + n), "corrected") for n in (1, 2, 3)
    ]

    # A link opens the linked document's lines below the row; the other link replaces them.
    tr = row(panel, inv(2))
    await tr.get_by_role("link", name=cn(2)).click()
    note = await panel.api(f"/api/credit-notes/{cn(2)}")
    assert note["totalCents"] == -price_invoice(ACCOUNT, 2).total_cents
    await expect_lines(panel, tr, cn(2), note)
    await tr.get_by_role("link", name=inv(5)).click()
    await expect(panel.page.locator(f'[id="detail-{cn(2)}"]')).to_have_count(0)
    replacement = await panel.api(f"/api/invoices/{inv(5)}")
    assert (replacement["replaces"], replacement["priceVersion"]) == (inv(2), 2)
    await expect_lines(panel, tr, inv(5), replacement)
    await panel.screenshot(tmp_path / "replacement-lines.png")

    # The corrections CSV.
    link = panel.page.get_by_role("link", name="Download CSV of the corrections")
    await expect(link).to_have_attribute("href", f"/api/runs/{run_id}/corrections?format=csv")
    await expect(link).to_have_attribute("download", f"corrections-{run_id}.csv")
    async with panel.page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    path = await download.path()
    rows = list(csv.reader(io.StringIO(await asyncio.to_thread(Path(path).read_text))))
    assert [r[:4] for r in rows] == [
        ["invoice_id", "credit_note_id", "replacement_id", "status"],
        *[[inv(n), cn(n), inv(3 + n), "corrected"] for n in (1, 2, 3)],
    ]

    # A reload shows the same from the API.
    await panel.page.reload()
    await expect(panel.page.locator("html")).to_have_attribute("data-ready", "true")
    await panel.wait_stream_closed()
    for n in (1, 2, 3):
        await expect_corrected(panel, n, n, 3 + n)
    await expect(panel.page.get_by_role("link", name="Download CSV of the corrections")).to_be_visible()

    # The correction run itself, opened from the history, lists the replacements it issued.
    run_c = stored["correctionRuns"][0]["runId"]
    entry = panel.page.locator(f'#history a[data-run-id="{run_c}"]')
    await expect(entry.locator(".history-account")).to_have_text(f"{ACCOUNT} · correction")
    await entry.click()
    await panel.expect_run_in_url(run_c)
    await panel.wait_stream_closed()
    await expect(panel.page.locator("#run-corrects")).to_have_text(run_id)
    assert await panel.row_ids() == [inv(6), inv(5), inv(4)]
    await expect(panel.page.locator("#run-status")).to_have_text("Completed: 3 of 3 invoices corrected.")
