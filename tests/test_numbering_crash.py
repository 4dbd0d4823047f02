"""Gapless per-account numbers survive SIGKILL of a real ``python server.py``.

After every crash and restart, on the server's own SQLite file: every k of
the run has exactly one number and one invoice, the account's numbers are
1..N without a gap or a duplicate, and the stream names the invoice stored
for each k. The random moments come from one seed per test (printed, replay
with ``RELIABILITY_SEED=<seed>``), as in ``test_reliability.py``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import Api, ServerProcess, integrity_check, mid_batch_target, until

pytestmark = pytest.mark.slow


def sql(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def run_numbers(db: Path, run_id: str) -> list[tuple[int, int, str]]:
    """(k, n, invoice id) of every number the run took, by k."""
    return [
        (int(k), int(n), str(i))
        for k, n, i in sql(db, "SELECT k, n, invoice_id FROM run_invoices WHERE run_id = ? ORDER BY k", (run_id,))
    ]


def assert_account_gapless(db: Path, account_id: str, count: int) -> None:
    """Numbers 1..count each taken once, each with exactly one invoice, and no invoice without its number."""
    taken = sql(db, "SELECT n FROM run_invoices WHERE account_id = ? ORDER BY n", (account_id,))
    assert [n for (n,) in taken] == list(range(1, count + 1))
    issued = sql(db, "SELECT n, invoice_id FROM invoices WHERE account_id = ? ORDER BY n", (account_id,))
    assert issued == [(n, f"INV-{account_id}-{n:04d}") for n in range(1, count + 1)]
    orphans = sql(
        db,
        "SELECT COUNT(*) FROM run_invoices AS r LEFT JOIN invoices AS i ON i.invoice_id = r.invoice_id"
        " WHERE r.account_id = ? AND i.invoice_id IS NULL",
        (account_id,),
    )
    assert orphans == [(0,)]


async def assert_stream_names_the_stored_invoices(api: Api, run_id: str) -> None:
    events = await api.stream(run_id)
    progress = [data for _, data in events if data["type"] == "progress"]
    stored = await api.invoice_ids(run_id)
    assert [(data["current"], data["invoiceId"]) for data in progress] == list(enumerate(stored, start=1))


async def issued_at_least(api: Api, run_ids: list[str], target: int) -> bool:
    return sum([int((await api.status(run_id))["current"]) for run_id in run_ids]) >= target


@pytest.mark.parametrize("trial", range(2))
async def test_sigkill_mid_batch_every_k_has_one_number_and_the_numbering_continues(
    server: ServerProcess, api: Api, rng: random.Random, trial: int
) -> None:
    account, earlier, total = f"crash_numbers_{trial}", 5, 800
    first = await api.start(account, earlier, "0s")
    await api.wait_terminal(first)
    run_id = await api.start(account, total, "0s")
    target = mid_batch_target(rng, total)
    await until(lambda: issued_at_least(api, [run_id], target), timeout=60, interval=0.005, what=f"{target} invoices")
    await server.kill()
    assert target <= len(run_numbers(server.db, run_id)) < total + 1

    await server.start()
    final = await api.wait_terminal(run_id, timeout=90)
    assert (final["status"], final["current"]) == ("completed", total)
    assert run_numbers(server.db, run_id) == [(k, earlier + k, f"INV-{account}-{earlier + k:04d}") for k in range(1, total + 1)]
    assert_account_gapless(server.db, account, earlier + total)
    await assert_stream_names_the_stored_invoices(api, run_id)
    code = await server.stop()
    assert code == 0
    assert integrity_check(server.db) == "ok"


async def test_sigkill_while_two_batches_of_one_account_run(server: ServerProcess, api: Api, rng: random.Random) -> None:
    account, totals = "crash_pair", (400, 300)
    runs = [await api.start(account, total, "0s") for total in totals]
    target = rng.randint(1, 600)  # in either batch: the second waits in the queue until the first ends
    await until(lambda: issued_at_least(api, runs, target), timeout=60, interval=0.005, what=f"{target} invoices")
    await server.kill()

    await server.start()
    for run_id, total in zip(runs, totals, strict=True):
        final = await api.wait_terminal(run_id, timeout=90)
        assert (final["status"], final["current"]) == ("completed", total)
        numbers = run_numbers(server.db, run_id)
        assert [k for k, _, _ in numbers] == list(range(1, total + 1))
        assert [n for _, n, _ in numbers] == sorted(n for _, n, _ in numbers)
        await assert_stream_names_the_stored_invoices(api, run_id)
    assert_account_gapless(server.db, account, sum(totals))
    code = await server.stop()
    assert code == 0


async def _cancel_soon(api: Api, run_id: str) -> None:
    assert api.server.port is not None
    with_body = api.http.post(
        f"{api.server.base}/api/cancel", data=b'{"runId": "%s"}' % run_id.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        async with with_body as response:
            await response.read()
    except aiohttp.ClientError:
        pass  # the server died under it


@pytest.mark.parametrize("trial", range(3))
async def test_sigkill_during_a_cancel_leaves_no_number_without_its_invoice(
    server: ServerProcess, api: Api, rng: random.Random, trial: int
) -> None:
    account, total = f"crash_cancel_numbers_{trial}", 600
    run_id = await api.start(account, total, "0s")
    target = mid_batch_target(rng, total)
    await until(lambda: issued_at_least(api, [run_id], target), timeout=60, interval=0.005, what=f"{target} invoices")
    cancelling = asyncio.create_task(_cancel_soon(api, run_id))
    await asyncio.sleep(rng.uniform(0.0, 0.006))
    await server.kill()
    await cancelling

    await server.start()
    # A cancelled run reads "cancelled" at once, but unwinds (settling its numbers)
    # just after the restart; its stream ends when it has.
    await assert_stream_names_the_stored_invoices(api, run_id)
    final = await api.wait_terminal(run_id, timeout=60)
    count = int(final["current"])
    assert final["status"] in ("cancelled", "completed")
    assert [n for _, n, _ in run_numbers(server.db, run_id)] == list(range(1, count + 1))
    assert_account_gapless(server.db, account, count)
    # Numbers given back are taken by the account's next batch: still no gap.
    after = await api.start(account, 2, "0s")
    await api.wait_terminal(after)
    assert await api.invoice_ids(after) == [f"INV-{account}-{n:04d}" for n in (count + 1, count + 2)]
    assert_account_gapless(server.db, account, count + 2)
    code = await server.stop()
    assert code == 0


async def test_a_number_taken_just_before_a_crash_in_a_cancelled_run_is_given_back(server: ServerProcess, api: Api) -> None:
    """The window made deterministic: the run is stopped while it sleeps, then the file gets what a step
    that took its number and died before its invoice leaves, and the cancel's commit (as
    ``test_reliability.test_a_cancel_cut_short_by_a_crash_still_ends_the_stream_with_cancelled`` does)."""
    account = "cut_numbers"
    run_id = await api.start(account, 3, "1h")  # invoice 1, then a long sleep

    async def sleeping() -> bool:
        _, detail = await api.request("GET", f"/api/runs/{run_id}")
        return any(op["kind"] == "sleep" and op["status"] == "waiting" for op in detail["timeline"])

    await until(sleeping, timeout=30, what="the run to sleep")
    await server.kill()
    conn = sqlite3.connect(server.db, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO run_invoices (run_id, k, invoice_id, account_id, n, price_version) VALUES (?, 2, ?, ?, 2, 1)",
            (run_id, f"INV-{account}-0002", account),
        )
        conn.execute(
            "UPDATE runs SET status = 'cancelled', completed_at = unixepoch('subsec'), unwound = 0 WHERE run_id = ?",
            (run_id,),
        )
    finally:
        conn.close()

    await server.start()
    events = await api.stream(run_id, timeout=30)
    assert [(data["type"], data["current"]) for _, data in events] == [("progress", 1), ("cancelled", 1)]
    assert run_numbers(server.db, run_id) == [(1, 1, f"INV-{account}-0001")]
    assert (await api.status(run_id))["current"] == 1
    after = await api.start(account, 1, "0s")
    await api.wait_terminal(after)
    assert await api.invoice_ids(after) == [f"INV-{account}-0002"]
    assert_account_gapless(server.db, account, 2)
    code = await server.stop()
    assert code == 0
