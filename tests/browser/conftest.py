"""Fixtures for the control-panel tests: a real server subprocess and Debian's Chromium.

The browser is not optional: if Chromium cannot start, the `browser` fixture
raises and the test fails. Nothing here skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from .panel import CHROMIUM, CHROMIUM_ARGS, PageProblems, Panel, ServerProcess

# Generous for a busy CI machine; every wait is for a page condition, so a
# passing run never spends it.
expect.set_options(timeout=10_000)

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start `server.py` with extra arguments; every server is stopped with SIGTERM at the end."""
    started: list[ServerProcess] = []

    def start(*extra_args: str) -> ServerProcess:
        n = len(started)
        srv = ServerProcess(
            db=tmp_path / f"invoices-{n}.db",
            log_path=tmp_path / f"server-{n}.log",
            extra_args=list(extra_args),
        )
        started.append(srv)
        srv.start()
        return srv

    yield start
    errors = []
    for srv in started:
        try:
            code = srv.stop()
        except RuntimeError as exc:
            errors.append(str(exc))
        else:
            if code not in (None, 0):
                errors.append(f"server exited with {code}:\n{srv.log()}")
    assert not errors, "\n".join(errors)


@pytest.fixture
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server()


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
