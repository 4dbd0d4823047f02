"""The application's tables in the engine's SQLite file, and bringing older files up to date.

Five tables:

- ``price_lists``: one row per price-list version, never changed once
  written. The products are one JSON column, so a version is stored by one
  statement: it exists whole or not at all. ``request_id`` tells the request
  that wrote a version which one it got (``engine.execute`` returns nothing).
- ``run_invoices``: the numbering ledger, keyed by ``(run_id, k)``: the k-th
  invoice of run R took number ``n`` of its account (``UNIQUE (account_id, n)``)
  and is priced at ``price_version``. A number is taken here first, by one
  statement in the engine's single writer (see ``store._TAKE_NUMBER``).
- ``invoices``: one row per issued invoice, keyed by ``INV-<accountId>-<nnnn>``,
  written once its number is taken. ``run_id`` is the run that issued it.
  ``status`` is ``issued`` or ``voided`` (then ``voided_by`` names the credit
  note); a replacement invoice names the invoice it ``replaces``.
- ``credit_notes``: one row per credit note, keyed by ``CN-<accountId>-<nnnn>``
  and by ``(run_id, i)``: the i-th invoice a correction run voids. ``n`` is the
  account's credit-note number (``UNIQUE (account_id, n)``), taken by the
  statement that writes the row. A credit note is never deleted; ``status`` is
  ``issued``, or ``reverted`` when its replacement could not be issued (see
  ``corrections_store.py``). At most one ``issued`` credit note per invoice.
- ``correction_runs``: which run a correction run corrects (``corrects_run_id``).

Files written before invoice numbers were per account (``run_invoices`` keyed
by ``(run_id, n)`` with n = k, no price versions) are migrated in place by
steps that each check ``PRAGMA table_info`` and may run again after a crash
between two of them. Their rows keep what they meant: every old invoice was
priced at version 1 (the seed catalog), and an old row of a run that found an
invoice another run had issued holds no number (``n`` NULL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from .pricing import SEED_PRICES
from .timestamps import now_iso_ms

__all__ = ["SqlEngine", "create_schema"]


# Parameters of a statement, as sqlite3 binds them: by position (``?``) or by name (``:name``).
SqlParams = Sequence[Any] | Mapping[str, Any]


class SqlEngine(Protocol):
    """The part of ``durable.Engine`` the store uses."""

    def execute(self, sql: str, params: SqlParams = ()) -> Awaitable[None]: ...

    def execute_returning(self, sql: str, params: SqlParams = ()) -> Awaitable[list[tuple[Any, ...]]]: ...

    async def fetchall(self, sql: str, params: SqlParams = ()) -> list[tuple[Any, ...]]: ...


_TABLES = (
    """CREATE TABLE IF NOT EXISTS invoices (
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
        issued_at      TEXT NOT NULL,
        price_version  INTEGER NOT NULL DEFAULT 1,
        status         TEXT NOT NULL DEFAULT 'issued',
        voided_by      TEXT,
        replaces       TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS run_invoices (
        run_id        TEXT NOT NULL,
        k             INTEGER NOT NULL,
        invoice_id    TEXT NOT NULL,
        account_id    TEXT NOT NULL DEFAULT '',
        n             INTEGER,
        price_version INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (run_id, k)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS price_lists (
        version          INTEGER PRIMARY KEY,
        currency         TEXT NOT NULL,
        tax_basis_points INTEGER NOT NULL,
        products         TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        request_id       TEXT UNIQUE
    )""",
)

_CORRECTION_TABLES = (
    """CREATE TABLE IF NOT EXISTS credit_notes (
        credit_note_id TEXT PRIMARY KEY,
        run_id         TEXT NOT NULL,
        i              INTEGER NOT NULL,
        account_id     TEXT NOT NULL,
        n              INTEGER NOT NULL,
        invoice_id     TEXT NOT NULL,
        customer       TEXT NOT NULL,
        line_items     TEXT NOT NULL,
        currency       TEXT NOT NULL,
        subtotal_cents INTEGER NOT NULL,
        tax_cents      INTEGER NOT NULL,
        total_cents    INTEGER NOT NULL,
        price_version  INTEGER NOT NULL,
        issued_at      TEXT NOT NULL,
        status         TEXT NOT NULL DEFAULT 'issued',
        reverted_at    TEXT,
        UNIQUE (run_id, i),
        UNIQUE (account_id, n)
    ) WITHOUT ROWID""",
    # Two correction runs can never both void one invoice.
    "CREATE UNIQUE INDEX IF NOT EXISTS credit_notes_voiding ON credit_notes (invoice_id) WHERE status = 'issued'",
    """CREATE TABLE IF NOT EXISTS correction_runs (
        run_id          TEXT PRIMARY KEY,
        corrects_run_id TEXT NOT NULL,
        account_id      TEXT NOT NULL,
        price_version   INTEGER NOT NULL,
        total           INTEGER NOT NULL,
        created_at      TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS correction_runs_by_batch ON correction_runs (corrects_run_id)",
)

# Columns invoices gained with corrections; older files get them, every row 'issued'.
_INVOICE_CORRECTION_COLUMNS = (
    ("status", "ALTER TABLE invoices ADD COLUMN status TEXT NOT NULL DEFAULT 'issued'"),
    ("voided_by", "ALTER TABLE invoices ADD COLUMN voided_by TEXT"),
    ("replaces", "ALTER TABLE invoices ADD COLUMN replaces TEXT"),
)

_NUMBER_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS run_invoices_by_number ON run_invoices (account_id, n)"
_RUN_INDEX = "CREATE INDEX IF NOT EXISTS invoices_by_run ON invoices (run_id)"

# The old run_invoices: (run_id, n, invoice_id), n being the run's k. In this
# order, and with the ledger's price_version column added last, a file is
# migrated exactly when that column exists.
_LEGACY_RUN_INVOICES = (
    ("k", "ALTER TABLE run_invoices RENAME COLUMN n TO k"),
    ("account_id", "ALTER TABLE run_invoices ADD COLUMN account_id TEXT NOT NULL DEFAULT ''"),
    ("n", "ALTER TABLE run_invoices ADD COLUMN n INTEGER"),
)
_LEGACY_BACKFILL = (
    # A row takes the number of its invoice only if its run issued that invoice.
    """UPDATE run_invoices SET
        account_id = (SELECT i.account_id FROM invoices AS i WHERE i.invoice_id = run_invoices.invoice_id),
        n = (SELECT i.n FROM invoices AS i
             WHERE i.invoice_id = run_invoices.invoice_id AND i.run_id = run_invoices.run_id)
    WHERE account_id = '' AND EXISTS (SELECT 1 FROM invoices AS i WHERE i.invoice_id = run_invoices.invoice_id)""",
    _NUMBER_INDEX,
    # An old invoice whose ledger row never committed still holds its number.
    """INSERT OR IGNORE INTO run_invoices (run_id, k, invoice_id, account_id, n)
    SELECT i.run_id, i.n, i.invoice_id, i.account_id, i.n FROM invoices AS i
    WHERE NOT EXISTS (SELECT 1 FROM run_invoices AS r WHERE r.account_id = i.account_id AND r.n = i.n)""",
    "ALTER TABLE run_invoices ADD COLUMN price_version INTEGER NOT NULL DEFAULT 1",
)

_SEED = "INSERT OR IGNORE INTO price_lists (version, currency, tax_basis_points, products, created_at) VALUES (?, ?, ?, ?, ?)"


async def _columns(engine: SqlEngine, table: str) -> set[str]:
    return {str(row[1]) for row in await engine.fetchall(f"PRAGMA table_info({table})")}


async def _migrate_run_invoices(engine: SqlEngine) -> None:
    if "price_version" in await _columns(engine, "run_invoices"):
        return
    for column, statement in _LEGACY_RUN_INVOICES:
        if column not in await _columns(engine, "run_invoices"):
            await engine.execute(statement)
    for statement in _LEGACY_BACKFILL:
        await engine.execute(statement)


async def create_schema(engine: SqlEngine) -> None:
    """Create the tables, migrate a file written by an older version, seed price list 1."""
    for statement in _TABLES:
        await engine.execute(statement)
    if "price_version" not in await _columns(engine, "invoices"):
        await engine.execute("ALTER TABLE invoices ADD COLUMN price_version INTEGER NOT NULL DEFAULT 1")
    for column, statement in _INVOICE_CORRECTION_COLUMNS:
        if column not in await _columns(engine, "invoices"):
            await engine.execute(statement)
    for statement in _CORRECTION_TABLES:
        await engine.execute(statement)
    await _migrate_run_invoices(engine)
    for index in (_NUMBER_INDEX, _RUN_INDEX):
        await engine.execute(index)
    products = orjson.dumps([product.to_json() for product in SEED_PRICES.products]).decode()
    await engine.execute(_SEED, (SEED_PRICES.version, SEED_PRICES.currency, SEED_PRICES.tax_basis_points, products, now_iso_ms()))
