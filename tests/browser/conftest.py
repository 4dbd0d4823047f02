"""Fixtures for the control-panel tests: a real server subprocess and Debian's Chromium.

The browser is not optional: if Chromium cannot start, the `browser` fixture
raises and the test fails. Nothing here skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from harness import ServerProcess
from playwright.async_api import Browser, async_playwright, expect

from .panel import CHROMIUM, CHROMIUM_ARGS, PageProblems, Panel

# Generous for a busy CI machine; every wait is for a page condition, so a
# passing run never spends it.
expect.set_options(timeout=10_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_panel(browser: Browser, server: ServerProcess, width: int, height: int) -> Panel:
    context = await browser.new_context(viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15_000)
    page = await context.new_page()
    problems = PageProblems()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    return Panel(page=page, server=server, problems=problems)


async def close_panel(panel: Panel) -> None:
    await panel.page.context.close()
    assert panel.problems.messages == [], "the page logged errors:\n" + "\n".join(panel.problems.messages)


@pytest.fixture
async def panel(browser: Browser, server: ServerProcess) -> AsyncIterator[Panel]:
    """The panel at desktop size; console errors (CSP violations among them) fail the test."""
    panel = await open_panel(browser, server, 1280, 900)
    yield panel
    await close_panel(panel)
