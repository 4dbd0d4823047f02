"""The invoice store: application tables in the engine's SQLite file.

Two tables:

- ``invoices``: one row per invoice, keyed by its id ``INV-<accountId>-<nnnn>``.
  ``run_id`` is the run that first issued it. Rows are only ever inserted with
  ``INSERT OR IGNORE``, so an invoice cannot be issued twice.
- ``run_invoices``: which invoices each run issued (or found already issued),
  keyed by ``(run_id, n)``. Invoice ids depend only on the account and ``n``,
  so a second batch for the same account meets the invoices of the first one;
  this table keeps "the invoices of run R" and their count exact for every
  run without ever billing a customer twice.

All writes go through ``engine.execute`` (the engine's single writer and group
commit), all reads through ``engine.fetchall`` (its reader connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .pricing import InvoiceDraft, LineItem, invoice_id_for
from .timestamps import now_iso_ms

__all__ = ["Invoice", "InvoiceStore", "SqlEngine"]


class SqlEngine(Protocol):
    """The part of ``durable.Engine`` the store uses."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


_SCHEMA = (
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
        issued_at      TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS run_invoices (
        run_id     TEXT NOT NULL,
        n          INTEGER NOT NULL,
        invoice_id TEXT NOT NULL,
        PRIMARY KEY (run_id, n)
    ) WITHOUT ROWID""",
)

_COLUMNS = (
    "i.invoice_id, i.run_id, i.account_id, i.n, i.customer, i.line_items, i.currency,"
    " i.subtotal_cents, i.tax_cents, i.total_cents, i.issued_at"
)


@dataclass(frozen=True, slots=True)
class Invoice:
    """A stored invoice."""

    invoice_id: str
    run_id: str
    account_id: str
    n: int
    customer: str
    line_items: tuple[LineItem, ...]
    currency: str
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    issued_at: str  # ISO 8601 UTC with milliseconds, as stored

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Invoice:
        items = tuple(LineItem(item["description"], item["quantity"], item["unitPriceCents"]) for item in orjson.loads(row[5]))
        return cls(
            invoice_id=row[0],
            run_id=row[1],
            account_id=row[2],
            n=row[3],
            customer=row[4],
            line_items=items,
            currency=row[6],
            subtotal_cents=row[7],
            tax_cents=row[8],
            total_cents=row[9],
            issued_at=row[10],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "invoiceId": self.invoice_id,
            "runId": self.run_id,
            "accountId": self.account_id,
            "n": self.n,
            "customer": self.customer,
            "lineItems": [item.to_json() for item in self.line_items],
            "currency": self.currency,
            "subtotalCents": self.subtotal_cents,
            "taxCents": self.tax_cents,
            "totalCents": self.total_cents,
            "issuedAt": self.issued_at,
        }


class InvoiceStore:
    """Issue and query invoices in the engine's database."""

    def __init__(self, engine: SqlEngine) -> None:
        self._engine = engine

    async def create_schema(self) -> None:
        """Create the tables if they are missing (safe to call at every start)."""
        for statement in _SCHEMA:
            await self._engine.execute(statement)

    async def issue(
        self,
        run_id: str,
        account_id: str,
        n: int,
        draft: InvoiceDraft,
        *,
        alongside: Callable[[], Awaitable[Any]] | None = None,
    ) -> Invoice:
        """Store invoice ``n`` of ``account_id`` unless it exists; return the stored invoice.

        Idempotent: a re-executed step, or another run of the same account, gets
        the invoice that was stored first and nothing is written twice.
        ``alongside`` is called once both inserts are queued, so a write it
        makes (the progress event) joins their group commit.
        """
        invoice_id = invoice_id_for(account_id, n)
        items = orjson.dumps([item.to_json() for item in draft.items]).decode()
        inserts = [
            asyncio.ensure_future(
                self._engine.execute(
                    "INSERT OR IGNORE INTO invoices (invoice_id, run_id, account_id, n, customer,"
                    " line_items, currency, subtotal_cents, tax_cents, total_cents, issued_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        invoice_id,
                        run_id,
                        account_id,
                        n,
                        draft.customer,
                        items,
                        draft.currency,
                        draft.subtotal_cents,
                        draft.tax_cents,
                        draft.total_cents,
                        now_iso_ms(),
                    ),
                )
            ),
            asyncio.ensure_future(
                self._engine.execute(
                    "INSERT OR IGNORE INTO run_invoices (run_id, n, invoice_id) VALUES (?, ?, ?)",
                    (run_id, n, invoice_id),
                )
            ),
        ]
        # One loop turn lets both tasks queue their statement; whatever
        # ``alongside`` queues now lands in the same group commit.
        await asyncio.sleep(0)
        extra = [alongside()] if alongside is not None else []
        await asyncio.gather(*inserts, *extra)
        stored = await self.get(invoice_id)
        if stored is None:  # pragma: no cover - the insert above committed
            raise RuntimeError(f"invoice {invoice_id} was not stored")
        return stored

    async def get(self, invoice_id: str) -> Invoice | None:
        """The invoice with this id, or ``None``."""
        rows = await self._engine.fetchall(f"SELECT {_COLUMNS} FROM invoices AS i WHERE i.invoice_id = ?", (invoice_id,))
        return Invoice.from_row(rows[0]) if rows else None

    async def list_for_run(self, run_id: str) -> list[Invoice]:
        """The invoices of a run, ordered by n."""
        rows = await self._engine.fetchall(
            f"SELECT {_COLUMNS} FROM run_invoices AS r JOIN invoices AS i"
            " ON i.invoice_id = r.invoice_id WHERE r.run_id = ? ORDER BY r.n",
            (run_id,),
        )
        return [Invoice.from_row(row) for row in rows]

    async def count_for_run(self, run_id: str) -> int:
        """How many invoices a run has issued."""
        rows = await self._engine.fetchall("SELECT COUNT(*) FROM run_invoices WHERE run_id = ?", (run_id,))
        return int(rows[0][0])

    async def counts_for_runs(self, run_ids: list[str]) -> dict[str, int]:
        """Invoice counts for several runs at once (runs without invoices are absent)."""
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._engine.fetchall(
            f"SELECT run_id, COUNT(*) FROM run_invoices WHERE run_id IN ({marks}) GROUP BY run_id",
            tuple(run_ids),
        )
        return {str(row[0]): int(row[1]) for row in rows}
