"""The control panel in headless Chromium against a real `server.py`."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import ServerFactory, ServerProcess, until
from playwright.async_api import Browser, Request, Route, expect

from .conftest import close_panel, open_panel
from .panel import Panel, usd

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def invoice_ids(account_id: str, n: int) -> list[str]:
    return [f"INV-{account_id}-{i:04d}" for i in range(1, n + 1)]


async def test_cancel_mid_batch_shows_final_count(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    run_id = await panel.start_batch("acct_cancel", 30, "100ms")

    # Rows arrive and the progress bar advances while the batch runs.
    await panel.wait_rows_at_least(2)
    seen, maximum = await panel.progress()
    assert maximum == 30
    assert seen >= 2
    layout_before = await panel.layout()
    await panel.wait_rows_at_least(seen + 1)
    assert (await panel.progress())[0] > seen
    # Rows arriving move nothing on the page.
    assert await panel.layout() == layout_before
    await expect(panel.page.locator("#run-badge")).to_have_text("running")
    await expect(panel.page.locator("#run-started")).not_to_have_text("—")

    await panel.page.get_by_role("button", name="Cancel batch").click()
    await expect(panel.page.locator("#run-badge")).to_have_text("cancelled")
    await panel.wait_stream_closed()
    await expect(panel.page.get_by_role("button", name="Cancel batch")).to_be_hidden()
    await expect(panel.page.locator("#run-completed")).not_to_have_text("—")

    outcome, k, total = await panel.final_count()
    status = await panel.api(f"/api/status?runId={run_id}")
    assert (outcome, total) == ("Cancelled after", 30)
    assert status["status"] == "cancelled"
    assert status["current"] == k
    assert 2 <= k < 30

    # Exactly the issued invoices are listed, newest first, and counted.
    assert await panel.row_ids() == invoice_ids("acct_cancel", k)[::-1]
    await expect(panel.page.locator("#invoice-count")).to_have_attribute("data-count", str(k))
    assert await panel.progress() == (k, 30)
    await expect(panel.page.locator("#progress-text")).to_have_text(f"{k} / 30")
    stored = await panel.api(f"/api/runs/{run_id}/invoices")
    assert [inv["invoiceId"] for inv in stored["invoices"]] == invoice_ids("acct_cancel", k)

    # The CSV offered for correction holds the same k invoices.
    csv_link = panel.page.get_by_role("link", name="Download CSV")
    await expect(csv_link).to_be_visible()
    href = await csv_link.get_attribute("href")
    assert href is not None
    response = await panel.page.request.get(panel.server.base + href)
    assert response.ok
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert len(rows) == k + 1, rows[:3]

    await panel.screenshot(tmp_path / "cancelled.png")


async def test_reload_mid_run_neither_loses_nor_doubles_rows(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    run_id = await panel.start_batch("acct_reload", 30, "100ms")
    await panel.wait_rows_at_least(5)
    before = await panel.row_ids()

    await panel.page.reload()
    await expect(panel.page.locator("html")).to_have_attribute("data-ready", "true")
    assert await panel.run_id_from_url() == run_id
    await panel.wait_rows_at_least(len(before) + 1)
    after = await panel.row_ids()
    # Every row seen before the reload is still there, once, in order.
    assert after[-len(before) :] == before
    assert len(set(after)) == len(after)
    assert after == invoice_ids("acct_reload", len(after))[::-1]
    await panel.screenshot(tmp_path / "after-reload.png")

    await expect(panel.page.locator("#run-badge")).to_have_text("completed", timeout=30_000)
    await panel.wait_stream_closed()
    stored = await panel.api(f"/api/runs/{run_id}/invoices")
    stored_ids = [inv["invoiceId"] for inv in stored["invoices"]]
    assert stored_ids == invoice_ids("acct_reload", 30)
    # What the person saw live is what was stored: ids, customers and amounts.
    expected = [(inv["invoiceId"], inv["customer"], usd(inv["totalCents"])) for inv in stored["invoices"]]
    assert await panel.table_rows() == expected[::-1]
    assert await panel.final_count() == ("Completed", 30, 30)
    await expect(panel.page.locator("#run-completed")).not_to_have_text("—")
    await panel.screenshot(tmp_path / "completed.png")


async def test_bad_input_is_refused_before_submit(panel: Panel, tmp_path: Path) -> None:
    start_requests: list[str] = []
    panel.page.on("request", lambda r: start_requests.append(r.url) if "/api/start" in r.url else None)
    await panel.open()
    account = panel.page.get_by_label("Account id")
    await account.fill("bad id!")
    await account.press("Tab")

    # The field error shows as soon as the field is left, tied to the field for screen readers.
    error = panel.page.locator("#accountId-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_text('Only letters, digits, _ . and - are allowed (found a space, "!").')
    await expect(account).to_have_attribute("aria-invalid", "true")
    await expect(account).to_have_accessible_description(re.compile("Only letters, digits"))

    await panel.page.get_by_label("Invoices", exact=True).fill("0")
    await panel.page.get_by_label("Delay", exact=True).fill("25h")
    await panel.page.get_by_role("button", name="Start batch").click()
    await expect(account).to_be_focused()
    await expect(error).to_be_visible()
    await expect(panel.page.locator("#total-error")).to_have_text("Must be from 1 to 10000, got 0.")
    await expect(panel.page.locator("#delay-error")).to_have_text("Must be at most 24h, got 25h.")
    await panel.screenshot(tmp_path / "field-errors.png")

    await expect(panel.page.locator("#run-panel")).to_have_attribute("data-status", "none")
    assert await panel.page.evaluate("location.hash") == ""
    assert start_requests == []
    assert (await panel.api("/api/runs"))["runs"] == []

    # Fixing the values clears the errors.
    await account.fill("acct_ok")
    await expect(error).to_be_hidden()
    await expect(account).not_to_have_attribute("aria-invalid", "true")
    await panel.page.get_by_label("Invoices", exact=True).fill("10")
    await expect(panel.page.locator("#total-error")).to_be_hidden()


async def test_api_refusal_is_shown_beside_the_field(panel: Panel, tmp_path: Path) -> None:
    # Client and server share the rules, so make the request invalid on its way
    # out to see how the page shows the real server's refusal.
    async def tamper(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        await route.continue_(post_data=json.dumps({**body, "total": 10001}))

    await panel.page.route("**/api/start", tamper)
    # The refused request itself is logged by the browser as a failed resource.
    panel.problems.allowed.append(re.compile(r"status of 400"))
    await panel.open()
    await panel.fill_form("acct_refused", 5, "1s")
    await panel.page.get_by_role("button", name="Start batch").click()

    message = "total must be an integer from 1 to 10000, got 10001"
    await expect(panel.page.locator("#form-error")).to_have_text(f"Not started: {message}")
    await expect(panel.page.locator("#total-error")).to_have_text(message)
    await expect(panel.page.get_by_label("Invoices", exact=True)).to_be_focused()
    await expect(panel.page.get_by_role("button", name="Start batch")).to_be_enabled()
    assert (await panel.api("/api/runs"))["runs"] == []
    await panel.screenshot(tmp_path / "api-refusal.png")


async def test_history_opens_a_running_run_and_follows_it(panel: Panel, tmp_path: Path) -> None:
    done = await panel.api_post("/api/start", {"accountId": "acct_done", "total": 3, "delay": "0s"})
    live = await panel.api_post("/api/start", {"accountId": "acct_live", "total": 25, "delay": "200ms"})

    async def live_is_running() -> bool:
        return bool((await panel.api(f"/api/status?runId={live['runId']}"))["status"] == "running")

    await until(live_is_running, what="the live run to be running")  # 25 invoices 200 ms apart: still running
    await panel.open()

    items = panel.page.locator("#history .history-item")
    await expect(items).to_have_count(2)
    live_item = items.filter(has_text="acct_live")
    await expect(live_item.locator(".badge")).to_have_text("running")

    # Keyboard: focus the entry and press Enter.
    await live_item.focus()
    await panel.page.keyboard.press("Enter")
    await panel.expect_run_in_url(live["runId"])
    await expect(live_item).to_have_attribute("aria-current", "true")
    await expect(panel.page.locator("#run-badge")).to_have_text("running")
    await panel.wait_rows_at_least(1)
    await expect(panel.page.get_by_role("button", name="Cancel batch")).to_be_visible()
    await panel.screenshot(tmp_path / "following.png")
    await expect(panel.page.locator("#run-badge")).to_have_text("completed", timeout=30_000)
    await panel.wait_stream_closed()
    assert await panel.row_ids() == invoice_ids("acct_live", 25)[::-1]
    await expect(live_item.locator(".badge")).to_have_text("completed")

    # A finished run shows its outcome and its invoices.
    await items.filter(has_text="acct_done").click()
    await panel.expect_run_in_url(done["runId"])
    await panel.wait_stream_closed()
    assert await panel.row_ids() == invoice_ids("acct_done", 3)[::-1]
    assert await panel.final_count() == ("Completed", 3, 3)
    await expect(panel.page.get_by_role("button", name="Cancel batch")).to_be_hidden()


@pytest.mark.parametrize(("width", "height"), [(375, 812), (1280, 900)], ids=["phone", "desktop"])
async def test_layout_fits_phone_and_desktop(
    browser: Browser, server: ServerProcess, tmp_path: Path, width: int, height: int
) -> None:
    panel = await open_panel(browser, server, width, height)
    try:
        await panel.open()
        await panel.start_batch("acct_layout", 30, "10ms")
        await expect(panel.page.locator("#run-badge")).to_have_text("completed", timeout=30_000)
        await panel.wait_stream_closed()
        await expect(panel.page.locator("#history .history-item")).to_have_count(1)
        await expect(panel.page.locator("#history .badge")).to_have_text("completed")

        # Nothing is wider than the viewport, and the table keeps a fixed height.
        overflow = await panel.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width
        box = await panel.page.locator(".table-wrap").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        await panel.screenshot(tmp_path / f"panel-{width}px.png")
    finally:
        await close_panel(panel)


async def test_large_batch_shows_latest_rows_and_full_count(panel: Panel, tmp_path: Path) -> None:
    await panel.open()
    run_id = await panel.start_batch("acct_big", 260, "0s")
    await expect(panel.page.locator("#run-badge")).to_have_text("completed", timeout=60_000)
    await panel.wait_stream_closed()
    # The DOM holds the latest 200 rows; the count covers all of them.
    assert await panel.row_ids() == invoice_ids("acct_big", 260)[:-201:-1]
    await expect(panel.page.locator("#invoice-count")).to_have_attribute("data-count", "260")
    await expect(panel.page.locator("#invoice-count")).to_contain_text("latest 200 shown")
    assert await panel.progress() == (260, 260)
    status = await panel.api(f"/api/status?runId={run_id}")
    assert (status["status"], status["current"]) == ("completed", 260)
    await panel.screenshot(tmp_path / "large-batch.png")


async def test_token_is_asked_once_and_kept_for_the_tab(browser: Browser, make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server("--token", "s3cret-token")
    await server.start()
    panel = await open_panel(browser, server, 1280, 900)
    # The first API calls are refused until the token is given.
    panel.problems.allowed.append(re.compile(r"status of 401"))
    try:
        await panel.open()
        dialog = panel.page.get_by_role("dialog", name="Access token required")
        token_input = panel.page.get_by_label("Token", exact=True)
        await expect(dialog).to_be_visible()
        await expect(token_input).to_be_focused()
        await panel.screenshot(tmp_path / "token-dialog.png")

        # Dismissed: the page says what is missing and does not nag.
        await panel.page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await expect(panel.page.locator("#history-error")).to_have_text("Could not load runs: An access token is required.")

        # Asking again is the person's choice; a wrong token is refused and asked for again.
        await panel.page.get_by_role("button", name="Refresh").click()
        await expect(dialog).to_be_visible()
        await token_input.fill("wrong-token")
        await token_input.press("Enter")
        await expect(panel.page.locator("#token-error")).to_have_text("That token was refused. Try again.")
        await token_input.fill("s3cret-token")
        await panel.page.get_by_role("button", name="Use token").click()
        await expect(dialog).to_be_hidden()
        await expect(panel.page.locator("#history-empty")).to_be_visible()
        await expect(panel.page.locator("#history-error")).to_be_hidden()

        # The event stream (which cannot send headers) works with the token too.
        await panel.start_batch("acct_token", 5, "10ms")
        await expect(panel.page.locator("#run-badge")).to_have_text("completed")
        await panel.wait_stream_closed()
        assert await panel.row_ids() == invoice_ids("acct_token", 5)[::-1]

        stored = await panel.page.evaluate("[sessionStorage.length, localStorage.length]")
        assert stored == [1, 0]
        await panel.page.reload()
        await expect(panel.page.locator("#run-badge")).to_have_text("completed")
        await expect(panel.rows).to_have_count(5)
        await expect(dialog).to_be_hidden()
        await panel.screenshot(tmp_path / "token.png")
    finally:
        await close_panel(panel)


async def test_server_restart_mid_run_resumes_stream_exactly(browser: Browser, server: ServerProcess, tmp_path: Path) -> None:
    panel = await open_panel(browser, server, 1280, 900)
    # While the server is down the browser logs failed connections; nothing else may fail.
    panel.problems.allowed.extend(
        [
            re.compile(r"net::ERR_CONNECTION_REFUSED"),
            re.compile(r"Failed to load resource: the server responded with a status of 503"),
        ]
    )
    stream_requests: list[Request] = []
    panel.page.on("request", lambda r: stream_requests.append(r) if "/api/stream/" in r.url else None)
    try:
        await panel.open()
        run_id = await panel.start_batch("acct_restart", 30, "150ms")
        await panel.wait_rows_at_least(3)

        assert await server.stop() == 0
        await expect(panel.page.locator("#connection")).to_be_visible()
        await expect(panel.page.locator("#run-panel")).to_have_attribute("data-stream", "reconnecting")
        await panel.screenshot(tmp_path / "reconnecting.png")
        await server.start()  # on the same port: the page reconnects to the URL it knows

        await expect(panel.page.locator("#run-badge")).to_have_text("completed", timeout=30_000)
        await panel.wait_stream_closed()
        await expect(panel.page.locator("#connection")).to_be_hidden()
        stored = await panel.api(f"/api/runs/{run_id}/invoices")
        assert [inv["invoiceId"] for inv in stored["invoices"]] == invoice_ids("acct_restart", 30)
        assert await panel.row_ids() == invoice_ids("acct_restart", 30)[::-1]
        await panel.screenshot(tmp_path / "resumed.png")

        # Reconnects asked for what came after the last event seen, not for everything again.
        assert len(stream_requests) >= 2
        assert "startIndex" not in stream_requests[0].url
        resumes = []
        for request in stream_requests[1:]:
            headers = await request.all_headers()
            query = parse_qs(urlsplit(request.url).query)
            resumes.append(int(headers.get("last-event-id") or query.get("startIndex", ["0"])[0]))
        assert min(resumes) >= 2, resumes
    finally:
        await close_panel(panel)
