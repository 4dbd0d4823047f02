"""Helpers for the control-panel tests: Chromium's settings and a page driver."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ServerProcess
from playwright.async_api import ConsoleMessage, Error, Locator, Page, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def usd(cents: int) -> str:
    """An amount as the panel shows it in the en-US locale."""
    return f"${cents / 100:,.2f}"


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions of a page (CSP violations show up here)."""

    messages: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            text = f"console: {msg.text} @ {msg.location.get('url')}"
            if not any(p.search(text) for p in self.allowed):
                self.messages.append(text)

    def on_page_error(self, exc: Error) -> None:
        self.messages.append(f"pageerror: {exc}")


STATUS_SENTENCE = re.compile(r"^(Completed|Cancelled after|Failed after):? (\d+) of (\d+)")


@dataclass
class Panel:
    """Drives the control panel page of one server."""

    page: Page
    server: ServerProcess
    problems: PageProblems

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(self.server.base + "/" + fragment)
        await expect(self.page.locator("html")).to_have_attribute("data-ready", "true")

    async def fill_form(self, account_id: str, total: int | str, delay: str) -> None:
        await self.page.get_by_label("Account id").fill(account_id)
        await self.page.get_by_label("Invoices", exact=True).fill(str(total))
        await self.page.get_by_label("Delay", exact=True).fill(delay)

    async def start_batch(self, account_id: str, total: int, delay: str) -> str:
        """Submit the form; return the new run's id, read from the URL."""
        await self.fill_form(account_id, total, delay)
        await self.page.get_by_role("button", name="Start batch").click()
        await expect(self.page).to_have_url(re.compile(r"#run=."))
        return await self.run_id_from_url()

    async def expect_run_in_url(self, run_id: str) -> None:
        await expect(self.page).to_have_url(re.compile(re.escape(f"#run={run_id}") + "$"))

    async def run_id_from_url(self) -> str:
        hash_: str = await self.page.evaluate("location.hash")
        run_id = hash_.removeprefix("#run=")
        assert run_id and run_id != hash_, hash_
        return run_id

    @property
    def rows(self) -> Locator:
        return self.page.locator("#invoice-rows tr")

    async def table_rows(self) -> list[tuple[str, str, str]]:
        """(invoice id, customer, amount) as shown, newest first; the id cell must match the row's id."""
        rows: list[list[str]] = await self.rows.evaluate_all(
            "rows => rows.map(r => [r.dataset.invoiceId, ...[...r.cells].map(c => c.textContent)])"
        )
        for row in rows:
            assert row[0] == row[1], row
        return [(row[1], row[2], row[3]) for row in rows]

    async def row_ids(self) -> list[str]:
        """Invoice ids in the table, newest first as shown."""
        return [row[0] for row in await self.table_rows()]

    async def wait_rows_at_least(self, n: int) -> None:
        # No wait_for_function: its polling evaluates strings, which the page's CSP forbids.
        await expect(self.rows.nth(n - 1)).to_be_attached()

    async def progress(self) -> tuple[int, int]:
        value, maximum = await self.page.locator("#progress").evaluate("p => [p.value, p.max]")
        return int(value), int(maximum)

    async def layout(self) -> Any:
        """Page height and the boxes of the table and the history card."""
        return await self.page.evaluate(
            """() => [document.documentElement.scrollHeight,
                ...['.table-wrap', '.history-card', '.run-actions'].map(sel => {
                    const r = document.querySelector(sel).getBoundingClientRect();
                    return [r.x, r.y, r.width, r.height];
                })]"""
        )

    async def wait_stream_closed(self) -> None:
        """Wait until the page has seen the run's terminal event and closed its EventSource."""
        await expect(self.page.locator("#run-panel")).to_have_attribute("data-stream", "closed")

    async def final_count(self) -> tuple[str, int, int]:
        text = (await self.page.locator("#run-status").text_content() or "").strip()
        match = STATUS_SENTENCE.match(text)
        assert match, f"no final count in status line {text!r}"
        return match.group(1), int(match.group(2)), int(match.group(3))

    async def api(self, path: str) -> Any:
        response = await self.page.request.get(self.server.base + path)
        assert response.ok, f"GET {path}: {response.status} {await response.text()}"
        return await response.json()

    async def api_post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.page.request.post(self.server.base + path, data=body)
        assert response.ok, f"POST {path}: {response.status} {await response.text()}"
        return await response.json()

    async def screenshot(self, path: Path) -> None:
        await self.page.screenshot(path=str(path), full_page=True)
