"""Review before billing in the control panel, in headless Chromium.

The story of a wrong price: a wrong price went into the list; a batch
started with a review shows its first invoices with their unit prices, the
person spots the price and rejects; fixes it in the price editor; starts
again and approves. Every number on screen is compared with the API's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Request, expect

from invoices.pricing import CATALOG, price_invoice

from .panel import Panel, usd
from .test_prices_panel import api_put, assert_shows_invoice, seed_price

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ACCOUNT = "acct_review"


async def start_with_review(panel: Panel, total: int, review_first: int) -> str:
    """Submit the form with a review; the new run's id, once the URL names it (not the run shown before)."""
    before: str = await panel.page.evaluate("location.hash")
    await panel.fill_form(ACCOUNT, total, "0s")
    await panel.page.get_by_label("Review first").fill(str(review_first))
    await panel.page.get_by_role("button", name="Start batch").click()
    await expect(panel.page).to_have_url(re.compile(r"#run=(?!" + re.escape(before.removeprefix("#run=")) + r"$)."))
    return await panel.run_id_from_url()


async def expect_review_of(panel: Panel, run_id: str, k: int, total: int) -> list[dict[str, Any]]:
    """The banner shows exactly the run's stored invoices, with their line items; returns them."""
    page = panel.page
    banner = page.locator("#approval")
    await expect(banner).to_be_visible()
    await expect(page.locator("#run-status")).to_have_text(f"Waiting for approval after {k} of {total} invoices.")
    await expect(page.locator("#run-badge")).to_have_text("waiting for approval")
    status = await panel.api(f"/api/status?runId={run_id}")
    assert (status["status"], status["current"], status["waitingFor"], status["reviewFirst"]) == ("running", k, "approval", k)
    stored = (await panel.api(f"/api/runs/{run_id}/invoices"))["invoices"]
    assert len(stored) == k
    await expect(page.locator("#approval-text")).to_have_text(
        f"The first {k} invoices of {total} are issued. Check their unit prices: Approve issues the remaining {total - k};"
        " Reject cancels the batch."
    )
    articles = banner.locator("article.approval-invoice")
    await expect(articles).to_have_count(k)
    for index, invoice in enumerate(stored):
        article = articles.nth(index)
        await expect(article).to_have_attribute("data-invoice-id", invoice["invoiceId"])
        await expect(article.locator("h4")).to_have_text(
            f"{invoice['invoiceId']}{invoice['customer']}{usd(invoice['totalCents'])}"
        )
        await assert_shows_invoice(article.locator("table.line-items"), invoice)
    await expect(page.locator("#progress-text")).to_have_text(f"{k} / {total}")
    return list(stored)


async def test_review_reject_fix_the_price_then_approve(panel: Panel, tmp_path: Path) -> None:
    page = panel.page
    # A typo went into the price list: the first invoice's first product at ten times its price.
    sku = price_invoice(ACCOUNT, 1).items[0].sku
    right = seed_price(sku)
    typo = [
        {"sku": p.sku, "description": p.description, "unitPriceCents": p.unit_price_cents * (10 if p.sku == sku else 1)}
        for p in CATALOG
    ]
    assert (await api_put(panel, {"products": typo, "baseVersion": 1}))["version"] == 2
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    await panel.open()

    # The form checks reviewFirst against total before sending anything.
    await panel.fill_form(ACCOUNT, 3, "0s")
    await page.get_by_label("Review first").fill("5")
    await page.get_by_role("button", name="Start batch").click()
    await expect(page.locator("#reviewFirst-error")).to_have_text("Must be at most the number of invoices (3), got 5.")
    await expect(page.get_by_label("Review first")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Review first")).to_be_focused()
    await page.get_by_label("Review first").fill("101")
    await expect(page.locator("#reviewFirst-error")).to_have_text("Must be a whole number from 0 to 100.")
    await page.get_by_label("Review first").fill("3")
    await page.get_by_label("Invoices", exact=True).fill("2")  # a smaller total makes it wrong again
    await expect(page.locator("#reviewFirst-error")).to_have_text("Must be at most the number of invoices (2), got 3.")
    assert posts == []

    # The first batch: its two reviewed invoices show the typo.
    first = await start_with_review(panel, 6, 2)
    reviewed = await expect_review_of(panel, first, 2, 6)
    assert [invoice["invoiceId"] for invoice in reviewed] == [f"INV-{ACCOUNT}-0001", f"INV-{ACCOUNT}-0002"]
    assert reviewed[0]["priceVersion"] == 2
    typo_row = page.locator(f'#approval article[data-invoice-id="INV-{ACCOUNT}-0001"] tbody tr[data-sku="{sku}"] td')
    await expect(typo_row.nth(3)).to_have_text(usd(right * 10))
    await expect(page.get_by_role("button", name="Cancel batch")).to_be_visible()
    await panel.screenshot(tmp_path / "review.png")

    await page.get_by_role("button", name="Reject").click()
    await expect(page.locator("#run-badge")).to_have_text("cancelled")
    await expect(page.locator("#approval")).to_be_hidden()
    await panel.wait_stream_closed()
    assert await panel.final_count() == ("Cancelled after", 2, 6)
    status = await panel.api(f"/api/status?runId={first}")
    assert (status["status"], status["current"], status["waitingFor"]) == ("cancelled", 2, None)
    assert await panel.row_ids() == [f"INV-{ACCOUNT}-0002", f"INV-{ACCOUNT}-0001"]
    assert await panel.progress() == (2, 6)

    # Fix the price in the editor: version 3.
    await page.get_by_role("button", name="Edit prices").click()
    await page.get_by_label(f"Unit price of {sku}").fill(f"{right / 100:.2f}")
    await page.get_by_role("button", name="Save as new version").click()
    await expect(page.locator("#prices-status")).to_have_text(
        "Saved as version 3. Batches started from now on bill at these prices."
    )
    prices = await panel.api("/api/prices")
    assert prices["version"] == 3
    assert prices["products"] == [p.to_json() for p in CATALOG]

    # Again: the next numbers, at the right prices; approved, the batch issues the rest.
    await page.get_by_label("Invoices", exact=True).fill("6")
    second = await start_with_review(panel, 6, 2)
    reviewed = await expect_review_of(panel, second, 2, 6)
    assert [(invoice["invoiceId"], invoice["priceVersion"]) for invoice in reviewed] == [
        (f"INV-{ACCOUNT}-0003", 3),
        (f"INV-{ACCOUNT}-0004", 3),
    ]
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator("#run-badge")).to_have_text("completed")
    await expect(page.locator("#approval")).to_be_hidden()
    await panel.wait_stream_closed()
    await panel.screenshot(tmp_path / "approved.png")

    status = await panel.api(f"/api/status?runId={second}")
    assert (status["status"], status["current"], status["total"], status["waitingFor"], status["priceVersion"]) == (
        "completed",
        6,
        6,
        None,
        3,
    )
    stored = (await panel.api(f"/api/runs/{second}/invoices"))["invoices"]
    assert [invoice["invoiceId"] for invoice in stored] == [f"INV-{ACCOUNT}-{n:04d}" for n in range(3, 9)]
    assert all(invoice["priceVersion"] == 3 for invoice in stored)
    assert await panel.final_count() == ("Completed", 6, 6)
    assert await panel.table_rows() == [
        (invoice["invoiceId"], invoice["customer"], usd(invoice["totalCents"])) for invoice in reversed(stored)
    ]
    assert await panel.progress() == (6, 6)
    await expect(page.locator("#progress-text")).to_have_text("6 / 6")
    await expect(page.locator("#invoice-count")).to_have_attribute("data-count", "6")
    await expect(page.locator("#invoice-count")).to_have_text("6 invoices")
    await expect(page.locator("#run-prices")).to_have_text("v3")
    await expect(page.locator("#run-account")).to_have_text(ACCOUNT)
    # Each stored line item as the opened row shows it.
    toggle = page.get_by_role("button", name=f"{stored[0]['invoiceId']} line items")
    await toggle.click()
    await assert_shows_invoice(page.locator(f'[id="detail-{stored[0]["invoiceId"]}"] table.line-items'), stored[0])

    # The history lists both batches as they ended, with their counts.
    history = page.locator("#history .history-item")
    await expect(history.nth(0)).to_have_attribute("data-run-id", second)
    await expect(history.nth(0).locator(".badge")).to_have_text("completed")
    await expect(history.nth(0).locator(".history-count")).to_have_text("6 / 6")
    await expect(history.nth(1).locator(".badge")).to_have_text("cancelled")
    await expect(history.nth(1).locator(".history-count")).to_have_text("2 / 6")
    decisions = [r.url.removeprefix(panel.server.base) for r in posts if "/api/runs/" in r.url]
    assert decisions == [f"/api/runs/{first}/reject", f"/api/runs/{second}/approve"]
