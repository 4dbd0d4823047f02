"""Line items and the price list in the control panel, in headless Chromium.

What a person sees is compared with what the API stored: an opened invoice
row shows exactly the stored line items and amounts; an edited price becomes
a new version that the next batch bills; a bad price is refused beside its
field and nothing is stored; an edit of a list that changed meanwhile is
refused with a 409 the page explains.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Request, Route, expect

from invoices.pricing import CATALOG, price_invoice

from .panel import Panel, usd

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ROWS_TEXT = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"


def seed_price(sku: str) -> int:
    return next(product.unit_price_cents for product in CATALOG if product.sku == sku)


async def api_put(panel: Panel, body: dict[str, Any]) -> Any:
    response = await panel.page.request.put(panel.server.base + "/api/prices", data=body)
    assert response.ok, await response.text()
    return await response.json()


async def open_line_items(panel: Panel, invoice_id: str) -> Any:
    toggle = panel.page.get_by_role("button", name=f"{invoice_id} line items")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    table = panel.page.locator(f'[id="detail-{invoice_id}"] table.line-items')
    await expect(table).to_be_visible()
    return table


async def assert_shows_invoice(table: Any, invoice: dict[str, Any]) -> None:
    """The opened row shows exactly the stored invoice's lines and amounts."""
    await expect(table.locator("caption")).to_have_text(
        f"Line items of {invoice['invoiceId']}, priced at price list v{invoice['priceVersion']}"
    )
    assert await table.locator("tbody tr").evaluate_all(ROWS_TEXT) == [
        [item["sku"], item["description"], str(item["quantity"]), usd(item["unitPriceCents"]), usd(item["amountCents"])]
        for item in invoice["lineItems"]
    ]
    assert await table.locator("tfoot tr").evaluate_all(ROWS_TEXT) == [
        ["Subtotal", usd(invoice["subtotalCents"])],
        ["Tax", usd(invoice["taxCents"])],
        ["Total", usd(invoice["totalCents"])],
    ]


async def test_an_invoice_row_opens_to_its_line_items_as_stored(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    run_id = await panel.start_batch("acct_lines", 3, "0s")
    await expect(panel.page.locator("#run-badge")).to_have_text("completed")
    await panel.wait_stream_closed()
    await expect(panel.page.locator("#run-prices")).to_have_text("v1")
    stored = (await panel.api(f"/api/runs/{run_id}/invoices"))["invoices"]
    assert [invoice["invoiceId"] for invoice in stored] == [f"INV-acct_lines-{n:04d}" for n in (1, 2, 3)]

    second = stored[1]
    table = await open_line_items(panel, second["invoiceId"])
    await assert_shows_invoice(table, second)
    # The row's amount is the opened invoice's total.
    row = panel.page.locator(f'#invoice-rows tr[data-invoice-id="{second["invoiceId"]}"]')
    await expect(row.locator("td.num")).to_have_text(usd(second["totalCents"]))
    await panel.screenshot(tmp_path / "line-items.png")

    # Keyboard: another row opens with Enter; each shows its own invoice.
    await panel.page.get_by_role("button", name=f"{stored[0]['invoiceId']} line items").focus()
    await panel.page.keyboard.press("Enter")
    await assert_shows_invoice(panel.page.locator(f'[id="detail-{stored[0]["invoiceId"]}"] table.line-items'), stored[0])

    # Closing removes the lines again; the table still lists the three invoices.
    await panel.page.get_by_role("button", name=f"{second['invoiceId']} line items").click()
    await expect(panel.page.locator(f'[id="detail-{second["invoiceId"]}"]')).to_have_count(0)
    ids = await panel.page.locator("#invoice-rows tr[data-invoice-id]").evaluate_all("rows => rows.map(r => r.dataset.invoiceId)")
    assert ids == [invoice["invoiceId"] for invoice in stored][::-1]


async def test_an_edited_price_is_a_new_version_that_the_next_batch_bills(panel: Panel, tmp_path: Path) -> None:
    account = "acct_newprice"
    sku = price_invoice(account, 1).items[0].sku  # what the next batch's first invoice bills
    old_cents = seed_price(sku)
    await panel.open()
    meta = panel.page.locator("#prices-meta")
    await expect(meta).to_contain_text("Version 1 of 1 (current)")
    await expect(meta).to_contain_text("tax 8.25 % · USD")
    rows = panel.page.locator("#price-rows tr")
    assert await rows.evaluate_all(ROWS_TEXT) == [[p.sku, p.description, usd(p.unit_price_cents)] for p in CATALOG]

    await panel.page.get_by_role("button", name="Edit prices").click()
    price = panel.page.get_by_label(f"Unit price of {sku}")
    await expect(price).to_have_value(f"{old_cents / 100:.2f}")
    await expect(panel.page.get_by_label("Tax rate (%)")).to_have_value("8.25")
    await price.fill("123.45")
    await panel.page.get_by_label("Tax rate (%)").fill("10")
    await panel.screenshot(tmp_path / "editing.png")
    await panel.page.get_by_role("button", name="Save as new version").click()

    await expect(panel.page.locator("#prices-status")).to_have_text(
        "Saved as version 2. Batches started from now on bill at these prices."
    )
    await expect(meta).to_contain_text("Version 2 of 2 (current)")
    await expect(meta).to_contain_text("tax 10.00 %")
    await expect(panel.page.get_by_label("Version", exact=True)).to_have_value("2")
    await expect(panel.page.locator(f'#price-rows tr[data-sku="{sku}"] td.num')).to_have_text("$123.45")
    stored = await panel.api("/api/prices")
    assert (stored["version"], stored["taxBasisPoints"]) == (2, 1000)
    assert stored["products"] == [
        {"sku": p.sku, "description": p.description, "unitPriceCents": 12345 if p.sku == sku else p.unit_price_cents}
        for p in CATALOG
    ]

    # The old version stays readable, and only the current one can be edited.
    await panel.page.get_by_label("Version", exact=True).select_option("1")
    await expect(meta).to_contain_text("Version 1 of 2, superseded")
    await expect(panel.page.locator(f'#price-rows tr[data-sku="{sku}"] td.num')).to_have_text(usd(old_cents))
    await expect(panel.page.get_by_role("button", name="Edit prices")).to_be_hidden()

    # A batch started now bills at version 2.
    run_id = await panel.start_batch(account, 1, "0s")
    await expect(panel.page.locator("#run-badge")).to_have_text("completed")
    await panel.wait_stream_closed()
    await expect(panel.page.locator("#run-prices")).to_have_text("v2")
    [invoice] = (await panel.api(f"/api/runs/{run_id}/invoices"))["invoices"]
    assert invoice["priceVersion"] == 2
    assert invoice["lineItems"][0]["sku"] == sku and invoice["lineItems"][0]["unitPriceCents"] == 12345
    table = await open_line_items(panel, invoice["invoiceId"])
    await assert_shows_invoice(table, invoice)
    await expect(table.locator(f'tbody tr[data-sku="{sku}"] td').nth(3)).to_have_text("$123.45")
    await panel.screenshot(tmp_path / "new-version-billed.png")


async def test_a_bad_price_is_refused_beside_its_field_and_nothing_is_stored(panel: Panel, tmp_path: Path) -> None:
    puts: list[Request] = []
    panel.page.on("request", lambda r: puts.append(r) if r.method == "PUT" else None)
    await panel.open()
    before = await panel.api("/api/prices")
    await panel.page.get_by_role("button", name="Edit prices").click()

    seat = panel.page.get_by_label("Unit price of SEAT")
    await seat.fill("-5")
    await seat.press("Tab")
    error = panel.page.locator("#price-unitPriceCents-3-error")
    await expect(error).to_have_text("Use an amount such as 49.00: digits, at most 2 decimals, no sign (got -5).")
    await expect(seat).to_have_attribute("aria-invalid", "true")
    await expect(seat).to_have_accessible_description(re.compile("Use an amount such as 49.00"))
    await panel.page.get_by_label("Description of SEAT").fill("   ")
    await panel.page.get_by_label("Tax rate (%)").fill("100.5")
    await panel.page.get_by_role("button", name="Save as new version").click()
    await expect(panel.page.locator("#price-description-3-error")).to_have_text("Required.")
    await expect(panel.page.locator("#tax-rate-error")).to_have_text(
        "Must be a percentage from 0 to 100 with at most 2 decimals, got 100.5."
    )
    await expect(panel.page.get_by_label("Tax rate (%)")).to_be_focused()  # the first bad field
    await panel.screenshot(tmp_path / "bad-price.png")
    assert puts == []
    assert await panel.api("/api/prices") == before

    # Client and server share the rules, so make the request bad on its way out
    # to see how the page shows the real server's refusal.
    async def tamper(route: Route) -> None:
        if route.request.method != "PUT":
            await route.continue_()
            return
        body = json.loads(route.request.post_data or "{}")
        body["products"][2]["unitPriceCents"] = -5
        await route.continue_(post_data=json.dumps(body))

    await panel.page.route("**/api/prices*", tamper)
    panel.problems.allowed.append(re.compile(r"status of 400"))
    await seat.fill("12.00")
    await panel.page.get_by_label("Description of SEAT").fill("Extra user seat")
    await panel.page.get_by_label("Tax rate (%)").fill("8.25")
    await panel.page.get_by_role("button", name="Save as new version").click()

    message = "products[2].unitPriceCents must be an integer from 0 to 100000000, got -5"
    await expect(panel.page.locator("#prices-error")).to_have_text(f"Not saved: {message}")
    await expect(panel.page.locator("#price-unitPriceCents-2-error")).to_have_text(message)
    await expect(panel.page.get_by_label("Unit price of SUPPORT-PREM")).to_be_focused()
    # What the person typed is still there to correct.
    await expect(seat).to_have_value("12.00")
    await expect(panel.page.get_by_role("button", name="Save as new version")).to_be_enabled()
    assert len(puts) == 1
    assert await panel.api("/api/prices") == before
    assert (await panel.api("/api/prices?version=1")) == before


async def test_an_edit_of_a_list_changed_meanwhile_is_refused_and_explained(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    await panel.page.get_by_role("button", name="Edit prices").click()
    await panel.page.get_by_label("Unit price of SEAT").fill("15.00")
    # Someone else saves a list while this one is being edited.
    elsewhere = [{"sku": p.sku, "description": p.description, "unitPriceCents": p.unit_price_cents + 1} for p in CATALOG]
    theirs = await api_put(panel, {"products": elsewhere, "baseVersion": 1})
    assert theirs["version"] == 2

    panel.problems.allowed.append(re.compile(r"status of 409"))
    await panel.page.get_by_role("button", name="Save as new version").click()
    await expect(panel.page.locator("#prices-error")).to_have_text(
        "Not saved: the price list changed meanwhile (version 2 is now the current one). "
        "Your changes are still shown here; load the latest version and apply them to it."
    )
    load_latest = panel.page.get_by_role("button", name="Load the latest version")
    await expect(load_latest).to_be_focused()
    await expect(panel.page.get_by_role("button", name="Save as new version")).to_be_disabled()
    await expect(panel.page.get_by_label("Unit price of SEAT")).to_have_value("15.00")
    await panel.screenshot(tmp_path / "conflict.png")
    assert await panel.api("/api/prices") == theirs  # nothing of the refused edit was stored

    await load_latest.click()
    await expect(panel.page.locator("#prices-meta")).to_contain_text("Version 2 of 2 (current)")
    await expect(panel.page.locator('#price-rows tr[data-sku="SEAT"] td.num')).to_have_text(usd(seed_price("SEAT") + 1))
    await expect(panel.page.locator("#prices-error")).to_be_hidden()
    await expect(panel.page.get_by_role("button", name="Edit prices")).to_be_visible()
