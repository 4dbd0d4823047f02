"""Invoice numbers per account in the store, and files written before numbers were per account.

The store on a real engine and SQLite file: concurrent issuing never collides
or skips, a number taken by a step that never finished is settled without a
gap, and a database with the old ``invoices``/``run_invoices`` tables opens,
keeps what it meant, and continues numbering after its invoices.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from durable import Engine
from invoices import create_app
from invoices.keys import store_key
from invoices.pricing import SEED_PRICES, price_invoice
from invoices.requirements import json_available, sqlite_shortfall
from invoices.store import _TAKE_NUMBER, InvoiceStore


@pytest.fixture
async def store(engine: Engine) -> AsyncIterator[InvoiceStore]:
    store = InvoiceStore(engine)
    await store.create_schema()
    yield store


def rows(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(query, params).fetchall()


def test_an_sqlite_the_numbering_cannot_run_on_is_named_with_what_it_lacks() -> None:
    assert sqlite_shortfall((3, 35, 3), has_json=True) == (
        "the invoices need SQLite 3.35.4 or later (RETURNING); this Python's sqlite3 module uses SQLite 3.35.3"
    )
    assert sqlite_shortfall((3, 40, 1), has_json=False) == (
        "the invoices need SQLite's JSON functions (json_array); this Python's SQLite 3.40.1 was built without them"
    )
    assert sqlite_shortfall((3, 35, 4), has_json=True) is None


class _FailingConnection:
    """A stand-in for an sqlite3 connection whose every statement fails with ``error``."""

    def __init__(self, error: str) -> None:
        self.error = error

    def execute(self, sql: str) -> sqlite3.Cursor:
        raise sqlite3.OperationalError(self.error)


def test_json_support_is_found_by_calling_json_array() -> None:
    with closing(sqlite3.connect(":memory:")) as conn:
        assert json_available(conn) is True
    assert json_available(_FailingConnection("no such function: json_array")) is False  # type: ignore[arg-type]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):  # not an answer: it propagates
        json_available(_FailingConnection("disk I/O error"))  # type: ignore[arg-type]


async def test_the_service_refuses_an_old_sqlite_before_it_opens_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 35, 3))
    db = tmp_path / "data" / "invoices.db"
    server = TestServer(create_app(db), host="127.0.0.1")
    try:
        with pytest.raises(sqlite3.NotSupportedError) as refused:
            await server.start_server()
    finally:
        await server.close()
    assert str(refused.value) == (
        "the invoices need SQLite 3.35.4 or later (RETURNING); this Python's sqlite3 module uses SQLite 3.35.3:"
        " run the service with a Python built against a newer SQLite"
    )
    assert not (tmp_path / "data").exists()  # no file created, migrated, or resumed from


async def test_concurrent_issues_of_several_runs_take_every_number_once(store: InvoiceStore, db_path: Path) -> None:
    calls = [(f"run_{r}", k) for k in range(1, 31) for r in range(3)]
    issued = await asyncio.gather(*(store.issue(run_id, "acct", k, SEED_PRICES) for run_id, k in calls))
    assert sorted(invoice.n for invoice in issued) == list(range(1, 91))
    # Taken in the order the statements reached the writer: here, the order of the calls.
    assert [invoice.n for invoice in issued] == list(range(1, 91))
    assert rows(db_path, "SELECT COUNT(*), COUNT(DISTINCT n), COUNT(DISTINCT run_id || ':' || k) FROM run_invoices") == [
        (90, 90, 90)
    ]
    for invoice in issued:
        assert invoice.invoice_id == f"INV-acct-{invoice.n:04d}"
        draft = price_invoice("acct", invoice.n)
        assert (invoice.customer, invoice.line_items, invoice.total_cents) == (draft.customer, draft.items, draft.total_cents)


async def test_issuing_the_same_run_and_k_again_returns_the_first_invoice(store: InvoiceStore, db_path: Path) -> None:
    first = await store.issue("run_a", "acct", 1, SEED_PRICES)
    await store.issue("run_b", "acct", 1, SEED_PRICES)
    again = await asyncio.gather(*(store.issue("run_a", "acct", 1, SEED_PRICES) for _ in range(5)))
    assert again == [first] * 5
    assert rows(db_path, "SELECT invoice_id FROM invoices ORDER BY invoice_id") == [("INV-acct-0001",), ("INV-acct-0002",)]


async def test_wide_numbers_keep_all_their_digits(store: InvoiceStore, engine: Engine) -> None:
    await engine.execute(
        "INSERT INTO run_invoices (run_id, k, invoice_id, account_id, n) VALUES ('old', 1, 'INV-acct-9999', 'acct', 9999)"
    )
    invoice = await store.issue("run", "acct", 1, SEED_PRICES)
    assert (invoice.n, invoice.invoice_id) == (10000, "INV-acct-10000")


async def _take_number_only(engine: Engine, run_id: str, k: int, account_id: str) -> None:
    """What a crash between the two commits of ``issue`` leaves: a number, no invoice."""
    await engine.execute_returning(_TAKE_NUMBER, {"run_id": run_id, "k": k, "account_id": account_id, "price_version": 1})


async def test_settling_gives_back_numbers_that_are_still_the_accounts_last(
    store: InvoiceStore, engine: Engine, db_path: Path
) -> None:
    for k in (1, 2):
        await store.issue("run_a", "acct", k, SEED_PRICES)
    for k in (3, 4):
        await _take_number_only(engine, "run_a", k, "acct")
    assert await store.count_for_run("run_a") == 2  # a number alone is not an issued invoice

    await store.settle_run("run_a")
    await store.settle_run("run_a")  # idempotent
    assert rows(db_path, "SELECT k, n FROM run_invoices WHERE run_id = 'run_a' ORDER BY k") == [(1, 1), (2, 2)]
    assert await store.count_for_run("run_a") == 2
    # The numbers given back are the next batch's.
    assert (await store.issue("run_b", "acct", 1, SEED_PRICES)).invoice_id == "INV-acct-0003"


async def test_settling_issues_a_number_another_batch_has_taken_past(store: InvoiceStore, db_path: Path, engine: Engine) -> None:
    await store.issue("run_a", "acct", 1, SEED_PRICES)
    await _take_number_only(engine, "run_a", 2, "acct")  # number 2, then the run stops
    await store.issue("run_b", "acct", 1, SEED_PRICES)  # number 3, by a batch running meanwhile

    await store.settle_run("run_a")
    assert rows(db_path, "SELECT n, run_id FROM invoices ORDER BY n") == [(1, "run_a"), (2, "run_a"), (3, "run_b")]
    assert [invoice.invoice_id for invoice in await store.list_for_run("run_a")] == ["INV-acct-0001", "INV-acct-0002"]
    assert await store.count_for_run("run_a") == 2
    settled = await store.get("INV-acct-0002")
    assert settled is not None
    assert (settled.customer, settled.total_cents, settled.price_version) == (
        price_invoice("acct", 2).customer,
        price_invoice("acct", 2).total_cents,
        1,
    )


async def test_a_step_reexecuted_after_the_number_was_taken_completes_it(store: InvoiceStore, engine: Engine) -> None:
    await _take_number_only(engine, "run_a", 1, "acct")
    written: list[str] = []

    async def progress(invoice: Any) -> None:
        written.append(invoice.invoice_id)

    invoice = await store.issue("run_a", "acct", 1, SEED_PRICES, alongside=progress)
    assert (invoice.invoice_id, written) == ("INV-acct-0001", ["INV-acct-0001"])


async def test_a_window_reexecuted_after_a_crash_writes_its_events_in_invoice_order(
    store: InvoiceStore, engine: Engine, db_path: Path
) -> None:
    # A crash can cut a window's number allocations in two commits, or fall between
    # an invoice's commit and its event's: the steps that had their number, or their
    # invoice, must not fall behind those taking one now (a read after the write
    # would put their events after the others').
    for k in range(1, 5):
        await _take_number_only(engine, "run_a", k, "acct")
    await store.issue("run_a", "acct", 5, SEED_PRICES)  # its invoice was stored, its event maybe not
    written: list[int] = []

    def progress(invoice: Any) -> asyncio.Future[None]:
        # As a stream write is, the event is queued at the call (here: recorded).
        written.append(invoice.n)
        queued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queued.set_result(None)
        return queued

    issued = await asyncio.gather(*(store.issue("run_a", "acct", k, SEED_PRICES, alongside=progress) for k in range(1, 11)))
    assert [invoice.n for invoice in issued] == list(range(1, 11))
    # The stored invoice's event is written again, in its place: the engine stores
    # a step's write at most once, so it is kept only if it had not committed.
    assert written == list(range(1, 11))
    assert issued[4] == await store.get("INV-acct-0005")
    assert rows(db_path, "SELECT COUNT(*), MIN(n), MAX(n) FROM invoices WHERE run_id = 'run_a'") == [(10, 1, 10)]


async def test_steps_resumed_before_the_schema_is_ready_wait_for_it(engine: Engine) -> None:
    store = InvoiceStore(engine)
    issuing = asyncio.create_task(store.issue("run_a", "acct", 1, SEED_PRICES))
    counting = asyncio.create_task(store.count_for_run("run_a"))
    await asyncio.sleep(0)  # both run up to their first wait
    # Had either gone to the database, it would have failed (the tables do not exist
    # yet) before these return: they queue behind it, on the writer and on the reader.
    await engine.execute("SELECT 1")
    await engine.fetchall("SELECT 1")
    assert not issuing.done() and not counting.done()
    await store.create_schema()
    assert (await issuing).invoice_id == "INV-acct-0001"
    assert await counting in (0, 1)


# -- files from before numbers were per account ------------------------------------------------

# The application tables as the previous release created them.
OLD_SCHEMA = """
CREATE TABLE invoices (
    invoice_id     TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    n              INTEGER NOT NULL,
    customer       TEXT NOT NULL,
    line_items     TEXT NOT NULL,
    currency       TEXT NOT NULL,
    subtotal_cents INTEGER NOT NULL,
    tax_cents      INTEGER NOT NULL,
    total_cents    INTEGER NOT NULL,
    issued_at      TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE run_invoices (
    run_id     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    invoice_id TEXT NOT NULL,
    PRIMARY KEY (run_id, n)
) WITHOUT ROWID;
"""


def _old_invoice(conn: sqlite3.Connection, run_id: str, account_id: str, n: int) -> None:
    draft = price_invoice(account_id, n)
    items = [
        {
            "description": i.description,
            "quantity": i.quantity,
            "unitPriceCents": i.unit_price_cents,
            "amountCents": i.amount_cents,
        }
        for i in draft.items
    ]
    conn.execute(
        "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, 'USD', ?, ?, ?, '2024-01-15T10:30:00.000Z')",
        (
            f"INV-{account_id}-{n:04d}",
            run_id,
            account_id,
            n,
            draft.customer,
            orjson.dumps(items).decode(),
            draft.subtotal_cents,
            draft.tax_cents,
            draft.total_cents,
        ),
    )


async def make_old_file(db: Path) -> None:
    async with Engine(db):  # the journal, as any old file has it
        pass
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.executescript(OLD_SCHEMA)
        # Batch 1 of acct_old issued 1..3; batch 2 (total 4) found 1..3 and issued 4.
        for n in (1, 2, 3):
            _old_invoice(conn, "wrun_old1", "acct_old", n)
            conn.execute("INSERT INTO run_invoices VALUES ('wrun_old1', ?, ?)", (n, f"INV-acct_old-{n:04d}"))
            conn.execute("INSERT INTO run_invoices VALUES ('wrun_old2', ?, ?)", (n, f"INV-acct_old-{n:04d}"))
        _old_invoice(conn, "wrun_old2", "acct_old", 4)
        conn.execute("INSERT INTO run_invoices VALUES ('wrun_old2', 4, 'INV-acct_old-0004')")
        # A crash between the old release's two inserts: an invoice without its run_invoices row.
        _old_invoice(conn, "wrun_old3", "acct_gap", 1)
    finally:
        conn.close()


async def open_app(db: Path) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(db), host="127.0.0.1"))
    await client.start_server()
    return client


async def finish(client: TestClient[web.Request, web.Application], account_id: str, total: int) -> list[str]:
    body = orjson.dumps({"accountId": account_id, "total": total, "delay": "0s"})
    started = await client.post("/api/start", data=body, headers={"Content-Type": "application/json"})
    run_id = (await started.json())["runId"]
    await (await client.get(f"/api/stream/{run_id}")).read()
    listing = await (await client.get(f"/api/runs/{run_id}/invoices")).json()
    return [invoice["invoiceId"] for invoice in listing["invoices"]]


async def test_a_file_with_the_old_schema_opens_and_continues_numbering(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    await make_old_file(db)
    client = await open_app(db)
    try:
        columns = {table: [row[1] for row in rows(db, f"PRAGMA table_info({table})")] for table in ("invoices", "run_invoices")}
        assert "price_version" in columns["invoices"]
        assert sorted(columns["run_invoices"]) == sorted(["run_id", "k", "invoice_id", "account_id", "n", "price_version"])
        assert rows(db, "SELECT run_id, k, n, account_id, price_version FROM run_invoices ORDER BY run_id, k") == [
            ("wrun_old1", 1, 1, "acct_old", 1),
            ("wrun_old1", 2, 2, "acct_old", 1),
            ("wrun_old1", 3, 3, "acct_old", 1),
            ("wrun_old2", 1, None, "acct_old", 1),  # found, not issued: holds no number
            ("wrun_old2", 2, None, "acct_old", 1),
            ("wrun_old2", 3, None, "acct_old", 1),
            ("wrun_old2", 4, 4, "acct_old", 1),
            ("wrun_old3", 1, 1, "acct_gap", 1),
        ]

        # What each old run billed reads as before.
        store = client.app[store_key]
        assert [i.invoice_id for i in await store.list_for_run("wrun_old2")] == [f"INV-acct_old-{n:04d}" for n in (1, 2, 3, 4)]
        assert await store.counts_for_runs(["wrun_old1", "wrun_old2", "wrun_old3"]) == {
            "wrun_old1": 3,
            "wrun_old2": 4,
            "wrun_old3": 1,
        }
        old = await (await client.get("/api/invoices/INV-acct_old-0002")).json()
        draft = price_invoice("acct_old", 2)
        assert (old["priceVersion"], old["lineItems"]) == (1, [item.to_json() for item in draft.items])  # skus filled in
        assert (await (await client.get("/api/prices")).json())["version"] == 1

        # New batches continue after every old number, including the one without its row.
        assert await finish(client, "acct_old", 2) == ["INV-acct_old-0005", "INV-acct_old-0006"]
        assert await finish(client, "acct_gap", 1) == ["INV-acct_gap-0002"]
    finally:
        await client.close()

    # Opening again migrates nothing twice.
    client = await open_app(db)
    try:
        assert await finish(client, "acct_old", 1) == ["INV-acct_old-0007"]
        assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT invoice_id) FROM invoices") == [(9, 9)]
    finally:
        await client.close()
