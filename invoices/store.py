"""The invoice store: price lists, invoice numbers and invoices in the engine's SQLite file.

The tables are described in ``schema.py``. All writes go through
``engine.execute`` (the engine's single writer and group commit), all reads
through ``engine.fetchall`` (its reader connection).

Issuing the k-th invoice of a run takes two commits:

1. ``_TAKE_NUMBER`` takes the account's next number for ``(run, k)`` unless that
   pair already has one. It is one statement, and statements commit one after
   another in the single writer, so concurrent steps of one batch or of
   several batches of an account never take the same number and never skip
   one. A step executed again (same run, same k) gets its number, and its
   invoice once stored, from the same statement, so it resumes in call order
   with the steps taking one.
2. The invoice row, priced for that number, commits together with the
   step's progress event (``alongside``).

A crash between the two leaves a number without its invoice. A running batch
re-executes the step, which completes it. A batch that ends instead
(cancelled, or failed) calls ``settle_run`` while it unwinds: the number is
given back when it is still its account's last, else the invoice is issued,
so the account's numbers stay gapless either way.

Steps of runs resumed when the engine opens may start before
``create_schema`` has migrated an older file; every method waits for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .pricing import CATALOG, InvoiceDraft, LineItem, PriceList, Product, price_invoice
from .schema import SqlEngine, create_schema
from .timestamps import now_iso_ms
from .validation import PriceUpdate

__all__ = ["Invoice", "InvoiceStore", "SqlEngine"]

_COLUMNS = (
    "i.invoice_id, i.run_id, i.account_id, i.n, i.customer, i.line_items, i.currency,"
    " i.subtotal_cents, i.tax_cents, i.total_cents, i.issued_at, i.price_version, i.status, i.voided_by, i.replaces"
)

# The number of ``(run, k)``, taken now or before, and its invoice once stored (the
# columns of ``_COLUMNS`` as a JSON array): one statement, and no read after it,
# whether the pair had a number, or its invoice, or not. So every step of a window
# resumes from the same commit, in the order of its call, and queues its invoice
# and event in that order, even when a crash cut the window's numbers in two
# commits, or fell between an invoice's commit and its event's, and the steps run
# again. (Upsert: the no-op update makes RETURNING give the row the pair already
# has. The account's last number is read from the end of its index: ``MAX(n)`` in
# a subquery that SQLite flattens into this statement would scan all its numbers.)
_TAKE_NUMBER = f"""INSERT INTO run_invoices (run_id, k, invoice_id, account_id, n, price_version)
SELECT :run_id, :k, 'INV-' || :account_id || '-' || printf('%04d', next.n), :account_id, next.n, :price_version
FROM (SELECT COALESCE((SELECT n FROM run_invoices WHERE account_id = :account_id ORDER BY n DESC LIMIT 1), 0) + 1 AS n) AS next
WHERE true
ON CONFLICT (run_id, k) DO UPDATE SET price_version = run_invoices.price_version
RETURNING n, invoice_id, (SELECT json_array({_COLUMNS}) FROM invoices AS i WHERE i.invoice_id = run_invoices.invoice_id)"""

_INVOICE_VALUES = (
    " INTO invoices (invoice_id, run_id, account_id, n, customer, line_items, currency,"
    " subtotal_cents, tax_cents, total_cents, issued_at, price_version, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A plain INSERT in the step: a second invoice for one number would be a bug
# to hear about (the step then retries and finds the stored one).
_INSERT_INVOICE = "INSERT" + _INVOICE_VALUES
_ISSUE_UNISSUED = "INSERT OR IGNORE" + _INVOICE_VALUES

# What a run has issued: the invoices it wrote, plus (in files from before
# numbers were per account) the rows of invoices it found already issued.
# The run ids come as one JSON array: one parameter however many runs a list shows.
_ISSUED_BY = """SELECT run_id, COUNT(*) FROM (
    SELECT run_id FROM invoices WHERE run_id IN (SELECT value FROM json_each(:run_ids))
    UNION ALL SELECT run_id FROM run_invoices WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND n IS NULL
) GROUP BY run_id"""

# A number is given back only while it is its account's last: giving back any
# other would leave a gap.
_RELEASE = """DELETE FROM run_invoices
WHERE run_id = :run_id AND k = :k
  AND NOT EXISTS (SELECT 1 FROM invoices AS i WHERE i.invoice_id = run_invoices.invoice_id)
  AND n = (SELECT MAX(n) FROM run_invoices WHERE account_id = :account_id)"""

_UNISSUED = """SELECT r.k, r.account_id, r.n, r.invoice_id, r.price_version FROM run_invoices AS r
WHERE r.run_id = ? AND r.n IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM invoices AS i WHERE i.invoice_id = r.invoice_id)
ORDER BY r.n DESC"""

# The latest version's currency and (unless given) tax rate carry over; with a
# baseVersion, nothing is written unless it is still the latest.
_ADD_PRICE_LIST = """INSERT INTO price_lists (version, currency, tax_basis_points, products, created_at, request_id)
SELECT latest.version + 1, latest.currency, COALESCE(:tax_basis_points, latest.tax_basis_points), :products,
    :created_at, :request_id
FROM (SELECT version, currency, tax_basis_points FROM price_lists ORDER BY version DESC LIMIT 1) AS latest
WHERE :base_version IS NULL OR latest.version = :base_version"""

_PRICE_COLUMNS = "version, currency, tax_basis_points, products, created_at"

# Line items stored before they carried a sku are the seed catalog's products.
_SEED_SKUS = {product.description: product.sku for product in CATALOG}


def _line_item(item: dict[str, Any]) -> LineItem:
    sku = item.get("sku") or _SEED_SKUS.get(item["description"], "")
    return LineItem(sku, item["description"], item["quantity"], item["unitPriceCents"])


def _price_list(row: tuple[Any, ...]) -> PriceList:
    products = tuple(Product(p["sku"], p["description"], p["unitPriceCents"]) for p in orjson.loads(row[3]))
    return PriceList(version=row[0], currency=row[1], tax_basis_points=row[2], products=products, updated_at=row[4])


@dataclass(frozen=True, slots=True)
class Invoice:
    """A stored invoice; ``n`` is its number within the account.

    ``status`` is ``issued``, or ``voided`` by the credit note ``voided_by``; a
    replacement issued by a correction names the invoice it ``replaces``.
    """

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
    price_version: int
    status: str = "issued"
    voided_by: str | None = None
    replaces: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Invoice:
        return cls(
            invoice_id=row[0],
            run_id=row[1],
            account_id=row[2],
            n=row[3],
            customer=row[4],
            line_items=tuple(_line_item(item) for item in orjson.loads(row[5])),
            currency=row[6],
            subtotal_cents=row[7],
            tax_cents=row[8],
            total_cents=row[9],
            issued_at=row[10],
            price_version=row[11],
            status=row[12],
            voided_by=row[13],
            replaces=row[14],
        )

    @classmethod
    def issued_now(
        cls, invoice_id: str, run_id: str, account_id: str, n: int, draft: InvoiceDraft, *, replaces: str | None = None
    ) -> Invoice:
        subtotal, tax, total = draft.amounts()
        return cls(
            invoice_id=invoice_id,
            run_id=run_id,
            account_id=account_id,
            n=n,
            customer=draft.customer,
            line_items=draft.items,
            currency=draft.currency,
            subtotal_cents=subtotal,
            tax_cents=tax,
            total_cents=total,
            issued_at=now_iso_ms(),
            price_version=draft.price_version,
            replaces=replaces,
        )

    def row(self) -> tuple[Any, ...]:
        """The values of ``_INVOICE_VALUES``."""
        items = orjson.dumps([item.to_json() for item in self.line_items]).decode()
        return (
            self.invoice_id,
            self.run_id,
            self.account_id,
            self.n,
            self.customer,
            items,
            self.currency,
            self.subtotal_cents,
            self.tax_cents,
            self.total_cents,
            self.issued_at,
            self.price_version,
            self.replaces,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "invoiceId": self.invoice_id,
            "runId": self.run_id,
            "accountId": self.account_id,
            "n": self.n,
            "customer": self.customer,
            "priceVersion": self.price_version,
            "lineItems": [item.to_json() for item in self.line_items],
            "currency": self.currency,
            "subtotalCents": self.subtotal_cents,
            "taxCents": self.tax_cents,
            "totalCents": self.total_cents,
            "issuedAt": self.issued_at,
            "status": self.status,
            "voidedBy": self.voided_by,
            "replaces": self.replaces,
        }


class InvoiceStore:
    """Price lists, invoice numbers and invoices in the engine's database."""

    def __init__(self, engine: SqlEngine) -> None:
        self._engine = engine
        self._ready = asyncio.Event()
        self._prices: dict[int, PriceList] = {}  # versions never change once stored

    async def create_schema(self) -> None:
        """Create or migrate the tables and seed price list 1 (safe to call at every start)."""
        await create_schema(self._engine)
        self._ready.set()

    async def _opened(self) -> None:
        if not self._ready.is_set():
            await self._ready.wait()

    async def opened(self) -> InvoiceStore:
        """This store once ``create_schema`` has run (what stores built on it wait for)."""
        await self._opened()
        return self

    @property
    def sql(self) -> SqlEngine:
        """The engine's statements and queries, for the stores built on this one (``corrections_store.py``)."""
        return self._engine

    # -- price lists ----------------------------------------------------------------

    async def latest_price_list(self) -> PriceList:
        """The current price list."""
        await self._opened()
        rows = await self._engine.fetchall(f"SELECT {_PRICE_COLUMNS} FROM price_lists ORDER BY version DESC LIMIT 1")
        prices = _price_list(rows[0])
        self._prices.setdefault(prices.version, prices)
        return prices

    async def price_list(self, version: int) -> PriceList | None:
        """Price list ``version``, or ``None`` when there is no such version."""
        cached = self._prices.get(version)
        if cached is not None:
            return cached
        await self._opened()
        rows = await self._engine.fetchall(f"SELECT {_PRICE_COLUMNS} FROM price_lists WHERE version = ?", (version,))
        if not rows:
            return None
        return self._prices.setdefault(version, _price_list(rows[0]))

    async def add_price_list(self, update: PriceUpdate) -> PriceList | None:
        """Store ``update`` as the next version and return it; ``None`` when its base version is not the latest."""
        await self._opened()
        request_id = uuid.uuid4().hex
        products = orjson.dumps([product.to_json() for product in update.products]).decode()
        params = {
            "tax_basis_points": update.tax_basis_points,
            "products": products,
            "created_at": now_iso_ms(),
            "request_id": request_id,
            "base_version": update.base_version,
        }
        await self._engine.execute(_ADD_PRICE_LIST, params)
        rows = await self._engine.fetchall(f"SELECT {_PRICE_COLUMNS} FROM price_lists WHERE request_id = ?", (request_id,))
        return self._prices.setdefault(rows[0][0], _price_list(rows[0])) if rows else None

    # -- issuing ------------------------------------------------------------------------

    async def allocation(self, run_id: str, k: int) -> tuple[int, str, Invoice | None] | None:
        """The number and id that ``(run, k)`` took, and its invoice once issued; ``None`` before it took one."""
        await self._opened()
        rows = await self._engine.fetchall(
            f"SELECT r.n, r.invoice_id, {_COLUMNS} FROM run_invoices AS r"
            " LEFT JOIN invoices AS i ON i.invoice_id = r.invoice_id WHERE r.run_id = ? AND r.k = ?",
            (run_id, k),
        )
        if not rows:
            return None
        n, invoice_id, *stored = rows[0]
        return n, invoice_id, Invoice.from_row(tuple(stored)) if stored[0] is not None else None

    async def take_number(self, run_id: str, account_id: str, k: int, price_version: int) -> tuple[int, str, Invoice | None]:
        """The account's next number for ``(run, k)`` unless it has one: the number, its invoice id, its invoice once issued."""
        await self._opened()
        params = {"run_id": run_id, "k": k, "account_id": account_id, "price_version": price_version}
        ((n, invoice_id, stored),) = await self._engine.execute_returning(_TAKE_NUMBER, params)
        if n is not None:
            return int(n), str(invoice_id), None if stored is None else Invoice.from_row(tuple(orjson.loads(stored)))
        # The file predates per-account numbers: the pair's invoice was found issued.
        taken = await self.allocation(run_id, k)
        if taken is None:  # pragma: no cover - the statement above wrote it, or it was there
            raise RuntimeError(f"no number taken for ({run_id}, {k})")
        return taken

    async def give_back_number(self, run_id: str, account_id: str, k: int) -> None:
        """Give back ``(run, k)``'s number if its invoice was never issued and it is still the account's last."""
        await self._opened()
        await self._engine.execute(_RELEASE, {"run_id": run_id, "k": k, "account_id": account_id})

    async def insert(self, invoice: Invoice) -> Invoice:
        """Store an invoice under a number ``take_number`` gave it; the stored row."""
        await self._opened()
        await self._engine.execute(_INSERT_INVOICE, invoice.row())
        stored = await self.get(invoice.invoice_id)
        if stored is None:  # pragma: no cover - the insert above committed
            raise RuntimeError(f"invoice {invoice.invoice_id} was not stored")
        return stored

    async def issue(
        self,
        run_id: str,
        account_id: str,
        k: int,
        prices: PriceList,
        *,
        alongside: Callable[[Invoice], Awaitable[Any]] | None = None,
    ) -> Invoice:
        """Issue the k-th invoice of ``run_id`` under the account's next number, priced at ``prices``.

        Idempotent per ``(run_id, k)``: a re-executed step gets the number, and
        the invoice, that the first execution got. ``alongside(invoice)`` is
        called once the invoice's insert is queued, so a write it makes (the
        progress event) joins its group commit; it is called on re-execution
        too (the engine stores a step's writes at most once).
        """
        n, invoice_id, stored = await self.take_number(run_id, account_id, k, prices.version)
        if stored is not None:
            if alongside is not None:
                await alongside(stored)
            return stored
        invoice = Invoice.issued_now(invoice_id, run_id, account_id, n, price_invoice(account_id, n, prices))
        # Both are queued at their call, in this loop turn, so they normally share a group commit.
        insert = self._engine.execute(_INSERT_INVOICE, invoice.row())
        extra = alongside(invoice) if alongside is not None else None
        try:
            await insert
        except BaseException:
            if extra is not None:  # settled and read, as gather would: the insert's error is the one raised
                await asyncio.gather(extra, return_exceptions=True)
            raise
        if extra is not None:
            await extra  # normally settled by the same commit: no wait, and no gather's callbacks
        return invoice  # committed as it is: no need to read it back

    async def settle_run(self, run_id: str) -> None:
        """For a run that ends: give back, or else issue, each number it took without issuing its invoice.

        Call it once no step of the run can run any more (while it unwinds
        from a cancel or a failure); see the module docstring.
        """
        await self._opened()
        for k, account_id, _, _, _ in await self._engine.fetchall(_UNISSUED, (run_id,)):
            await self.give_back_number(run_id, account_id, k)
        for _, account_id, n, invoice_id, version in await self._engine.fetchall(_UNISSUED, (run_id,)):
            prices = await self.price_list(version)
            if prices is not None:
                invoice = Invoice.issued_now(invoice_id, run_id, account_id, n, price_invoice(account_id, n, prices))
                await self._engine.execute(_ISSUE_UNISSUED, invoice.row())

    # -- queries ------------------------------------------------------------------------

    async def get(self, invoice_id: str) -> Invoice | None:
        """The invoice with this id, or ``None``."""
        await self._opened()
        rows = await self._engine.fetchall(f"SELECT {_COLUMNS} FROM invoices AS i WHERE i.invoice_id = ?", (invoice_id,))
        return Invoice.from_row(rows[0]) if rows else None

    async def list_for_run(self, run_id: str) -> list[Invoice]:
        """The invoices of a run, in the order the run issued them (its k)."""
        await self._opened()
        rows = await self._engine.fetchall(
            f"SELECT {_COLUMNS} FROM run_invoices AS r JOIN invoices AS i"
            " ON i.invoice_id = r.invoice_id WHERE r.run_id = ? ORDER BY r.k",
            (run_id,),
        )
        return [Invoice.from_row(row) for row in rows]

    async def count_for_run(self, run_id: str) -> int:
        """How many invoices a run has issued."""
        return (await self.counts_for_runs([run_id])).get(run_id, 0)

    async def counts_for_runs(self, run_ids: list[str]) -> dict[str, int]:
        """Invoice counts for several runs at once (runs without invoices are absent)."""
        if not run_ids:
            return {}
        await self._opened()
        rows = await self._engine.fetchall(_ISSUED_BY, {"run_ids": orjson.dumps(run_ids).decode()})
        return {str(row[0]): int(row[1]) for row in rows}
