"""The run inspector at /workflows/ in headless Chromium, against a real `server.py`.

Journals are seeded through the public API (workflows of tests/inspect_workflows.py,
which the server does not run: their runs are finished) before the server opens them;
live runs are invoice batches started through the service's API.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import ServerFactory, ServerProcess, sql_rows, until
from inspect_workflows import WORKFLOWS, charging_parent, pipeline, retrying, reviewed
from playwright.async_api import Browser, Page, expect

from durable import Engine

from .conftest import close_panel, open_panel
from .panel import Panel
from .png import read_png

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
RED, GREEN, GRAY = (0xD6, 0x45, 0x45), (0x2F, 0x85, 0x5A), (0x7B, 0x87, 0x94)


@dataclass
class Seeded:
    server: ServerProcess
    failed: str
    retried: str


@pytest.fixture
async def seeded(tmp_path: Path, make_server: ServerFactory) -> Seeded:
    """A journal with a failed run and a completed run whose step failed twice, then a server on it."""
    gate = tmp_path / "gate"
    gate.touch()
    async with Engine(tmp_path / "invoices-0.db", workflows=WORKFLOWS) as engine:  # make_server's first file
        failed = await engine.start(pipeline, str(gate), 1)
        with pytest.raises(Exception, match="card declined"):
            await failed.result(timeout=10)
        retried = await engine.start(retrying, str(gate))
        assert await retried.result(timeout=10) == "ok after 3"
    server = make_server()
    await server.start()
    return Seeded(server, failed.run_id, retried.run_id)


@pytest.fixture
async def inspector(browser: Browser, seeded: Seeded) -> AsyncIterator[Panel]:
    panel = await open_panel(browser, seeded.server, 1280, 900)
    yield panel
    await close_panel(panel)


async def goto(page: Page, url: str) -> None:
    await page.goto(url)
    await expect(page.locator("html")).to_have_attribute("data-ready", "true")


async def start_batch(panel: Panel, total: int, delay: str) -> str:
    answer = await panel.api_post("/api/start", {"accountId": "acct_insp", "total": total, "delay": delay})
    return str(answer["runId"])


async def listed(page: Page) -> list[list[str]]:
    rows: list[list[str]] = await page.locator("#run-rows tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.runId, ...[...r.cells].slice(1, 3).map(c => c.textContent)])"
    )
    return rows


async def bars(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.locator("#timeline rect.bar").evaluate_all(
        """rects => rects.map(r => ({seq: Number(r.dataset.seq), outcome: r.dataset.outcome,
            attempt: r.dataset.attempt, x: Number(r.getAttribute('x')), fill: r.getAttribute('fill')}))"""
    )
    return found


async def test_run_list_rows_filters_and_live_updates(inspector: Panel, seeded: Seeded) -> None:
    page, base = inspector.page, inspector.server.base
    await goto(page, f"{base}/workflows/")
    await expect(page.locator("#run-rows tr")).to_have_count(2)
    assert await listed(page) == [
        [seeded.retried, "inspect.retrying", "completed"],
        [seeded.failed, "inspect.pipeline", "failed"],
    ]
    assert await page.locator(f'#run-rows tr[data-run-id="{seeded.failed}"] td.error-cell').text_content() == (
        "StepFailed: Step inspect.guarded failed: FatalError: card declined"
    )

    # A run started elsewhere appears on top without a reload.
    batch = await start_batch(inspector, 2, "0s")
    await expect(page.locator("#run-rows tr")).to_have_count(3)
    assert (await listed(page))[0][:2] == [batch, "invoices.batch"]

    await page.locator("#status-filter").select_option("failed")
    await expect(page.locator("#run-rows tr")).to_have_count(1)
    assert await listed(page) == [[seeded.failed, "inspect.pipeline", "failed"]]
    await expect(page).to_have_url(re.compile(r"\?status=failed$"))
    await page.locator("#status-filter").select_option("")
    await page.locator("#workflow-filter").select_option("inspect.retrying")
    await expect(page.locator("#run-rows tr")).to_have_count(1)
    assert await listed(page) == [[seeded.retried, "inspect.retrying", "completed"]]

    await page.get_by_role("link", name=seeded.retried).click()
    await expect(page).to_have_url(re.compile(re.escape(f"/workflows/run?id={seeded.retried}") + "$"))
    await expect(page.locator("#run-status")).to_have_text("completed")


async def test_timeline_bars_in_order_with_a_red_failed_attempt(inspector: Panel, seeded: Seeded) -> None:
    page = inspector.page
    await goto(page, f"{inspector.server.base}/workflows/run?id={seeded.retried}")
    await expect(page.locator("#timeline")).to_have_attribute("data-bars", "5")
    drawn = await bars(page)
    assert [(b["seq"], b["outcome"], b["attempt"], b["fill"]) for b in drawn] == [
        (0, "failed", "1", "#d64545"),
        (0, "failed", "2", "#d64545"),
        (0, "completed", "3", "#2f855a"),
        (1, "sleep", "", "#7b8794"),
        (2, "completed", "1", "#2f855a"),
    ]
    xs = [b["x"] for b in drawn]
    assert xs == sorted(xs)  # each attempt and operation started after the one before
    assert await page.locator("#timeline line.wait").count() == 2  # the two retry waits
    assert await page.locator("#timeline text.row-label").all_text_contents() == [
        "0  inspect.flaky",
        "1  sleep 10ms",
        "2  inspect.record",
    ]

    tooltip = page.locator("#tooltip")
    await expect(tooltip).to_be_hidden()
    await page.locator('#timeline rect.bar[data-attempt="2"]').hover()
    await expect(tooltip).to_be_visible()
    lines = (await tooltip.inner_text()).splitlines()
    assert lines[:2] == ["step 0 · inspect.flaky", "attempt 2"]
    assert lines[-1] == "RetryableError: try 2 failed"
    await page.mouse.move(5, 5)
    await expect(tooltip).to_be_hidden()


async def test_failed_run_page_shows_error_and_resume(inspector: Panel, seeded: Seeded) -> None:
    page = inspector.page
    await goto(page, f"{inspector.server.base}/workflows/run?id={seeded.failed}")
    await expect(page.locator("#run-status")).to_have_text("failed")
    await expect(page.locator("#run-error-text")).to_have_text(
        "StepFailed: Step inspect.guarded failed: FatalError: card declined"
    )
    stack = page.locator("#run-error-stack")
    await expect(stack).to_be_hidden()  # folded under its summary
    await page.get_by_text("Traceback", exact=True).click()
    await expect(stack).to_be_visible()
    assert (await stack.inner_text()).rstrip().endswith("durable._errors.FatalError: card declined")
    assert [(b["seq"], b["outcome"]) for b in await bars(page)] == [(0, "completed"), (2, "failed")]
    await expect(page.locator("#chunks li")).to_have_count(1)
    await expect(page.locator("#chunks li code")).to_have_text('{"step":0}')
    await expect(page.locator("#stream-state")).to_have_attribute("data-stream", "closed")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    # This server does not run the seeded workflow: resuming it is refused (409), and says why.
    inspector.problems.allowed.append(re.compile(r"status of 409 \(Conflict\) @ .*/resume$"))
    await page.get_by_role("button", name="Resume run").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#action-message")).to_contain_text("its workflow 'inspect.pipeline' is not registered")
    await expect(page.locator("#run-status")).to_have_text("failed")


async def test_cancel_resume_and_fork_with_confirmation(inspector: Panel) -> None:
    page, base = inspector.page, inspector.server.base
    run_id = await start_batch(inspector, 30, "400ms")
    await goto(page, f"{base}/workflows/run?id={run_id}")
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("#chunks li").first).to_be_attached()

    # Keeping it as it is changes nothing.
    await page.get_by_role("button", name="Cancel run").click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#confirm-heading")).to_have_text("Cancel this run?")
    await page.get_by_role("button", name="Keep it as it is").click()
    await expect(dialog).to_be_hidden()
    assert (await inspector.api(f"/api/status?runId={run_id}"))["status"] == "running"

    await page.get_by_role("button", name="Cancel run").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#run-status")).to_have_text("cancelled")
    await expect(page.locator("#action-message")).to_have_text("Cancelled (was running).")
    await expect(page.locator("#chunks li").last).to_contain_text('"type":"cancelled"')
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    assert (await inspector.api(f"/api/status?runId={run_id}"))["status"] == "cancelled"

    await page.get_by_role("button", name="Resume run").click()
    await expect(page.locator("#confirm-heading")).to_have_text("Resume this run?")
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("#action-message")).to_have_text("Resumed (was cancelled).")
    await expect(page.get_by_role("button", name="Resume run")).to_be_hidden()
    # The stream is read afresh: the cancellation event was dropped, progress goes on.
    await expect(page.locator("#chunks li").first).to_contain_text('"current":1')
    await expect(page.locator("#chunks li", has_text='"type":"cancelled"')).to_have_count(0)

    await page.get_by_role("button", name="Fork from a step…").click()
    await expect(page.locator("#fork-seq")).to_be_visible()
    await page.locator("#fork-seq").fill("2")
    await page.locator("#confirm-ok").click()
    await expect(page).not_to_have_url(re.compile(re.escape(run_id) + "$"))
    fork_id = page.url.rsplit("=", 1)[1]
    await expect(page.locator("#forked-from")).to_have_text(run_id)
    await expect(page.locator("#facts")).to_contain_text(f"{run_id} at step 2")
    # Batches of one account queue one at a time: the fork waits for its source to stop.
    await expect(page.locator("#run-status")).to_have_text("pending")
    forked = await inspector.api(f"/workflows/runs/{fork_id}.json")
    assert (forked["forked_from"], forked["forked_at_seq"], forked["workflow_name"]) == (run_id, 2, "invoices.batch")
    assert [op["seq"] for op in forked["timeline"]] == [0, 1]  # the copied journal: invoice 1 and the sleep after it
    await inspector.api_post(f"/workflows/runs/{run_id}/cancel", {})
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("#timeline")).not_to_have_attribute("data-bars", "2")  # it goes on from invoice 2
    await page.get_by_role("button", name="Cancel run").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#run-status")).to_have_text("cancelled")


async def test_token_is_asked_for_once(browser: Browser, make_server: ServerFactory) -> None:
    server = make_server("--token", "t0ken")
    await server.start()
    panel = await open_panel(browser, server, 1280, 900)
    panel.problems.allowed.append(re.compile(r"401"))
    try:
        await panel.page.goto(f"{server.base}/workflows/")  # not ready before it has the token
        dialog = panel.page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await panel.page.locator("#token-input").fill("t0ken")
        await panel.page.get_by_role("button", name="Use token").click()
        await expect(dialog).to_be_hidden()
        await expect(panel.page.locator("html")).to_have_attribute("data-ready", "true")
        await expect(panel.page.locator("#runs-empty")).to_be_visible()
        await expect(panel.page.locator("#list-error")).to_be_hidden()
    finally:
        await close_panel(panel)


async def test_timeline_screenshot(inspector: Panel, seeded: Seeded, tmp_path: Path) -> None:
    page = inspector.page
    await page.set_viewport_size({"width": 1280, "height": 720})
    await goto(page, f"{inspector.server.base}/workflows/run?id={seeded.retried}")
    await expect(page.locator("#timeline")).to_have_attribute("data-bars", "5")
    card = page.locator("section.card", has=page.locator("#timeline"))
    path = tmp_path / "timeline.png"
    await card.screenshot(path=str(path))
    image = read_png(path.read_bytes())
    box = await card.bounding_box()
    assert box is not None
    assert image.width == round(box["width"]) == 1220  # the card spans the 1280 px page less its margins
    assert abs(image.height - box["height"]) < 2 and 160 <= image.height <= 260  # axis and three rows (edges rounded out)
    colors = image.colors()
    assert len(colors) > 20  # text, grid and bars: not a blank image
    assert colors.get(RED, 0) >= 2 * 10  # two failed attempts, each at least 4 x 16 px with anti-aliased edges
    assert colors.get(GREEN, 0) >= 2 * 10
    assert colors.get(GRAY, 0) >= 10
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        await page.locator("#tooltip").evaluate("t => t.hidden = true")
        await page.locator('#timeline rect.bar[data-attempt="2"]').hover()
        await page.screenshot(path=str(ROOT / "docs" / "inspector.png"), full_page=False)


async def test_a_child_bar_opens_the_child_run(browser: Browser, tmp_path: Path, make_server: ServerFactory) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    async with Engine(tmp_path / "invoices-0.db", workflows=WORKFLOWS) as engine:
        run = await engine.start(charging_parent, str(gate))
        with pytest.raises(Exception, match="card declined"):
            await run.result(timeout=10)
    server = make_server()
    await server.start()
    panel = await open_panel(browser, server, 1280, 900)
    try:
        page = panel.page
        await goto(page, f"{server.base}/workflows/run?id={run.run_id}")
        assert [(b["seq"], b["outcome"], b["fill"]) for b in await bars(page)] == [(0, "other", "#805ad5")]
        await page.locator('#timeline rect.bar[data-kind="child"]').click()
        await expect(page).to_have_url(re.compile(re.escape(f"run?id={run.run_id}~0") + "$"))
        await expect(page.locator("#run-status")).to_have_text("failed")
        await expect(page.locator("#parent-link")).to_have_text(run.run_id)
        assert [(b["seq"], b["outcome"]) for b in await bars(page)] == [(0, "completed"), (2, "failed")]
    finally:
        await close_panel(panel)


async def test_a_hook_is_resumed_from_its_form(browser: Browser, tmp_path: Path, make_server: ServerFactory) -> None:
    db = tmp_path / "invoices-0.db"
    async with Engine(db, workflows=WORKFLOWS) as engine:
        run = await engine.start(reviewed, str(tmp_path / "gate"), "d1")

        async def hooked() -> bool:
            return len(await engine.list_hooks(run.run_id)) == 1

        await until(hooked, what="the hook")
    server = make_server()  # it keeps the hook active (the run waits on it) though it does not run the workflow
    await server.start()
    panel = await open_panel(browser, server, 1280, 900)
    try:
        page = panel.page
        await goto(page, f"{server.base}/workflows/run?id={run.run_id}")
        await expect(page.locator("#hooks li")).to_have_count(1)
        await expect(page.locator("#hooks li code").first).to_have_text("review:d1")
        await expect(page.locator("#hooks-empty")).to_be_hidden()
        await page.get_by_label("Payload for hook review:d1").fill('{"approved": true}')
        await page.get_by_role("button", name="Resume hook").click()
        await expect(page.locator("#hooks li [role=status]")).to_have_text("Payload delivered.")
        assert sql_rows(db, "SELECT payload FROM hook_payloads WHERE run_id = ?", (run.run_id,)) == [(b'{"approved":true}',)]
    finally:
        await close_panel(panel)
