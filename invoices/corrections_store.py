"""Credit notes and replacement invoices: the store side of correcting what went out.

The tables are described in ``schema.py``. Correcting the i-th invoice X of a
correction run C is two steps, each idempotent per ``(C, i)`` as a batch's
invoice is per ``(run, k)``:

1. ``issue_credit_note``: the credit note ``CN-<accountId>-<nnnn>`` voiding X,
   its amounts X's negated. Its number is the account's next credit-note
   number, taken by the statement that writes the note (INSERT..SELECT
   MAX(n)+1, one statement in the engine's single writer, so two notes never
   take one number and none is skipped). Nothing is written when ``(C, i)``
   has its note already, or when X is not ``issued`` any more (another
   correction voided it). Then X is marked ``voided`` by the note.
2. ``issue_replacement``: X's customer and lines (each sku and quantity) at the
   correction's price list, under the account's next invoice number, taken in
   the batches' ledger ``run_invoices`` under ``(C, i)``: invoices and
   replacements share one gapless sequence per account.

**The rollback rule.** A numbered document is never deleted and its number
never reused, so both sequences stay gapless with one document per number.
When the replacement cannot be issued, ``revert`` undoes the pair in reverse
order: the replacement's number, taken but without its invoice, is given back
while it is still the account's last (always, unless a batch of the account
numbered an invoice meanwhile: the correction numbers one pair at a time); X
is ``issued`` again; the credit note stays, under its number, with status
``reverted`` (it voids nothing). A pair therefore ends either ``corrected``
(credit note and replacement) or ``reverted`` (a reverted note, X as it was),
never with a note voiding X and no replacement, and never a replacement
without its note (it is only issued once its note is).

A crash between two statements of one step leaves what the step's next
execution completes; a run that ends instead (cancelled or failed) calls
``settle`` while it unwinds, which completes or reverts every pair still half
done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .pricing import LineItem, PriceList, reprice
from .store import Invoice, InvoiceStore
from .timestamps import now_iso_ms

__all__ = ["Correction", "CorrectionRun", "CorrectionStore", "CreditNote", "PairState", "credit_note_id_for"]

PairState = Literal["corrected", "reverted", "pending"]

_ISSUE_CREDIT_NOTE = """INSERT INTO credit_notes (credit_note_id, run_id, i, account_id, n, invoice_id, customer, line_items,
    currency, subtotal_cents, tax_cents, total_cents, price_version, issued_at)
SELECT 'CN-' || :account_id || '-' || printf('%04d', next.n), :run_id, :i, :account_id, next.n, inv.invoice_id,
    inv.customer, :line_items, inv.currency, -inv.subtotal_cents, -inv.tax_cents, -inv.total_cents, inv.price_version,
    :issued_at
FROM invoices AS inv, (SELECT COALESCE(MAX(n), 0) + 1 AS n FROM credit_notes WHERE account_id = :account_id) AS next
WHERE inv.invoice_id = :invoice_id AND inv.status = 'issued'
  AND NOT EXISTS (SELECT 1 FROM credit_notes WHERE run_id = :run_id AND i = :i)
  AND NOT EXISTS (SELECT 1 FROM credit_notes WHERE invoice_id = :invoice_id AND status = 'issued')"""

_VOID = """UPDATE invoices SET status = 'voided', voided_by = :credit_note_id
WHERE invoice_id = :invoice_id AND status = 'issued'
  AND EXISTS (SELECT 1 FROM credit_notes WHERE credit_note_id = :credit_note_id AND status = 'issued')"""

_RESTORE = "UPDATE invoices SET status = 'issued', voided_by = NULL WHERE invoice_id = ? AND voided_by = ?"

_REVERT = "UPDATE credit_notes SET status = 'reverted', reverted_at = ? WHERE run_id = ? AND i = ? AND status = 'issued'"

_RECORD_RUN = """INSERT OR IGNORE INTO correction_runs (run_id, corrects_run_id, account_id, price_version, total, created_at)
VALUES (?, ?, ?, ?, ?, ?)"""

_NOTE_COLUMNS = (
    "c.credit_note_id, c.run_id, c.i, c.account_id, c.n, c.invoice_id, c.customer, c.line_items, c.currency,"
    " c.subtotal_cents, c.tax_cents, c.total_cents, c.price_version, c.issued_at, c.status, c.reverted_at, r.invoice_id"
)
_NOTES = f"""SELECT {_NOTE_COLUMNS} FROM credit_notes AS c
LEFT JOIN run_invoices AS l ON l.run_id = c.run_id AND l.k = c.i
LEFT JOIN invoices AS r ON r.invoice_id = l.invoice_id"""

# A pair: its note, the invoice it voids and the replacement once issued.
_PAIRS = """SELECT c.run_id, c.i, c.credit_note_id, c.invoice_id, c.account_id, c.customer, c.currency, c.status, c.issued_at,
    o.total_cents, o.price_version, r.invoice_id, r.total_cents, r.price_version
FROM credit_notes AS c
JOIN invoices AS o ON o.invoice_id = c.invoice_id
LEFT JOIN run_invoices AS l ON l.run_id = c.run_id AND l.k = c.i
LEFT JOIN invoices AS r ON r.invoice_id = l.invoice_id
WHERE {where}
ORDER BY c.account_id, c.n"""


def credit_note_id_for(account_id: str, n: int) -> str:
    """``CN-<accountId>-<nnnn>``: n zero-padded to 4 digits, like invoice ids."""
    return f"CN-{account_id}-{n:04d}"


def _items_json(items: tuple[LineItem, ...]) -> str:
    return orjson.dumps([item.to_json() for item in items]).decode()


@dataclass(frozen=True, slots=True)
class CreditNote:
    """A stored credit note: it voids ``invoice_id``, its amounts that invoice's negated (quantities too)."""

    credit_note_id: str
    run_id: str  # the correction run that issued it
    i: int
    account_id: str
    n: int
    invoice_id: str
    customer: str
    line_items: tuple[LineItem, ...]
    currency: str
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    price_version: int  # the voided invoice's
    issued_at: str
    status: str  # issued | reverted
    reverted_at: str | None
    replacement_id: str | None  # the number its pair's replacement took, once taken

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> CreditNote:
        items = tuple(LineItem(d["sku"], d["description"], d["quantity"], d["unitPriceCents"]) for d in orjson.loads(row[7]))
        return cls(
            credit_note_id=row[0],
            run_id=row[1],
            i=row[2],
            account_id=row[3],
            n=row[4],
            invoice_id=row[5],
            customer=row[6],
            line_items=items,
            currency=row[8],
            subtotal_cents=row[9],
            tax_cents=row[10],
            total_cents=row[11],
            price_version=row[12],
            issued_at=row[13],
            status=row[14],
            reverted_at=row[15],
            replacement_id=row[16],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "creditNoteId": self.credit_note_id,
            "runId": self.run_id,
            "accountId": self.account_id,
            "n": self.n,
            "invoiceId": self.invoice_id,
            "replacementId": self.replacement_id,
            "customer": self.customer,
            "priceVersion": self.price_version,
            "lineItems": [item.to_json() for item in self.line_items],
            "currency": self.currency,
            "subtotalCents": self.subtotal_cents,
            "taxCents": self.tax_cents,
            "totalCents": self.total_cents,
            "issuedAt": self.issued_at,
            "status": self.status,
            "revertedAt": self.reverted_at,
        }


@dataclass(frozen=True, slots=True)
class Correction:
    """One invoice's correction: its credit note and, once issued, its replacement."""

    correction_run_id: str
    i: int
    credit_note_id: str
    invoice_id: str
    account_id: str
    customer: str
    currency: str
    note_status: str
    issued_at: str
    original_total_cents: int
    original_price_version: int
    replacement_id: str | None
    replacement_total_cents: int | None
    price_version: int | None

    @property
    def state(self) -> PairState:
        if self.replacement_id is not None:
            return "corrected"
        return "reverted" if self.note_status == "reverted" else "pending"

    @property
    def delta_cents(self) -> int:
        """Replacement total minus original total (0 until the replacement is issued)."""
        return 0 if self.replacement_total_cents is None else self.replacement_total_cents - self.original_total_cents

    def to_json(self) -> dict[str, Any]:
        return {
            "invoiceId": self.invoice_id,
            "creditNoteId": self.credit_note_id,
            "replacementId": self.replacement_id,
            "deltaCents": self.delta_cents,
            "status": self.state,
            "accountId": self.account_id,
            "customer": self.customer,
            "currency": self.currency,
            "originalTotalCents": self.original_total_cents,
            "creditNoteTotalCents": -self.original_total_cents,
            "replacementTotalCents": self.replacement_total_cents,
            "originalPriceVersion": self.original_price_version,
            "priceVersion": self.price_version,
            "correctionRunId": self.correction_run_id,
            "i": self.i,
            "issuedAt": self.issued_at,
        }


@dataclass(frozen=True, slots=True)
class CorrectionRun:
    """A correction run as recorded when it started."""

    run_id: str
    corrects_run_id: str
    account_id: str
    price_version: int
    total: int
    created_at: str


class CorrectionStore:
    """Credit notes, replacements and correction runs, in the tables of an ``InvoiceStore``.

    It holds nothing but the store, so a step builds one from ``get_resources(InvoiceStore)``.
    """

    def __init__(self, store: InvoiceStore) -> None:
        self._store = store
        self._sql = store.sql

    # -- correction runs --------------------------------------------------------------

    async def record_run(self, run: CorrectionRun) -> None:
        """Remember which run ``run.run_id`` corrects (idempotent)."""
        await self._store.opened()
        values = (run.run_id, run.corrects_run_id, run.account_id, run.price_version, run.total, run.created_at)
        await self._sql.execute(_RECORD_RUN, values)

    async def runs_correcting(self, run_id: str) -> list[CorrectionRun]:
        """The correction runs of ``run_id``, oldest first."""
        await self._store.opened()
        rows = await self._sql.fetchall(
            "SELECT run_id, corrects_run_id, account_id, price_version, total, created_at FROM correction_runs"
            " WHERE corrects_run_id = ? ORDER BY created_at, run_id",
            (run_id,),
        )
        return [CorrectionRun(*row) for row in rows]

    # -- the pair's steps -----------------------------------------------------------------

    async def issue_credit_note(self, run_id: str, i: int, original: Invoice) -> CreditNote | None:
        """The credit note of ``(run, i)`` voiding ``original``, issued unless it exists; ``None`` when another voids it."""
        await self._store.opened()
        items = tuple(LineItem(item.sku, item.description, -item.quantity, item.unit_price_cents) for item in original.line_items)
        params = {
            "run_id": run_id,
            "i": i,
            "invoice_id": original.invoice_id,
            "account_id": original.account_id,
            "line_items": _items_json(items),
            "issued_at": now_iso_ms(),
        }
        await self._sql.execute(_ISSUE_CREDIT_NOTE, params)
        note = await self._note_of(run_id, i)
        if note is None:
            return None
        await self._sql.execute(_VOID, {"credit_note_id": note.credit_note_id, "invoice_id": note.invoice_id})
        return note

    async def issue_replacement(self, run_id: str, i: int, original: Invoice, prices: PriceList) -> Invoice:
        """The replacement of ``original`` for ``(run, i)`` at ``prices``, under the account's next number, unless issued."""
        n, invoice_id, stored = await self._store.take_number(run_id, original.account_id, i, prices.version)
        if stored is not None:
            return stored
        draft = reprice(original.customer, original.line_items, prices)
        invoice = Invoice.issued_now(invoice_id, run_id, original.account_id, n, draft, replaces=original.invoice_id)
        return await self._store.insert(invoice)

    async def revert(self, run_id: str, i: int) -> PairState:
        """Roll the pair ``(run, i)`` back, newest first (see the module docstring); what it ends as.

        A pair whose replacement is stored stays ``corrected``. So does one whose
        replacement number cannot be given back because the account numbered an
        invoice after it: that number gets its replacement after all, as no
        number may stay without its document.
        """
        note = await self._note_of(run_id, i)
        if note is None or note.status == "reverted":
            return "reverted"
        taken = await self._store.allocation(run_id, i)
        if taken is not None and taken[2] is None:
            await self._store.give_back_number(run_id, note.account_id, i)
            taken = await self._store.allocation(run_id, i)
        if taken is None:
            await self._sql.execute(_RESTORE, (note.invoice_id, note.credit_note_id))
            await self._sql.execute(_REVERT, (now_iso_ms(), run_id, i))
            return "reverted"
        if taken[2] is None:
            rows = await self._sql.fetchall("SELECT price_version FROM run_invoices WHERE run_id = ? AND k = ?", (run_id, i))
            await self._finish(note.run_id, note.i, note.invoice_id, note.credit_note_id, int(rows[0][0]))
        return "corrected"

    async def _finish(self, run_id: str, i: int, invoice_id: str, credit_note_id: str, price_version: int) -> Invoice:
        """Issue the replacement of a pair whose credit note is issued (making sure it voids its invoice)."""
        await self._sql.execute(_VOID, {"credit_note_id": credit_note_id, "invoice_id": invoice_id})
        original = await self._store.get(invoice_id)
        prices = await self._store.price_list(price_version)
        if original is None or prices is None:
            missing = f"the invoice or price list version {price_version} is missing"
            raise RuntimeError(f"cannot issue the replacement of {invoice_id}: {missing}")
        return await self.issue_replacement(run_id, i, original, prices)

    async def settle(self, run_id: str, price_version: int, *, forward: bool) -> None:
        """For a correction run that ends: complete (``forward``) or else revert every pair still half done.

        Call it once no step of the run can run any more (while it unwinds from
        a cancel or a failure).
        """
        for pair in await self.pairs(run_id):
            if pair.state != "pending":
                continue
            if forward:
                try:
                    await self._finish(run_id, pair.i, pair.invoice_id, pair.credit_note_id, price_version)
                    continue
                except Exception:
                    pass  # the replacement cannot be issued: the pair is rolled back instead
            await self.revert(run_id, pair.i)

    # -- queries ------------------------------------------------------------------------------

    async def _note_of(self, run_id: str, i: int) -> CreditNote | None:
        rows = await self._sql.fetchall(f"{_NOTES} WHERE c.run_id = ? AND c.i = ?", (run_id, i))
        return CreditNote.from_row(rows[0]) if rows else None

    async def credit_note(self, credit_note_id: str) -> CreditNote | None:
        """The credit note with this id, or ``None``."""
        await self._store.opened()
        rows = await self._sql.fetchall(f"{_NOTES} WHERE c.credit_note_id = ?", (credit_note_id,))
        return CreditNote.from_row(rows[0]) if rows else None

    async def voiding(self, invoice_id: str) -> str | None:
        """The id of the credit note that voids ``invoice_id`` now, if one does."""
        await self._store.opened()
        rows = await self._sql.fetchall(
            "SELECT credit_note_id FROM credit_notes WHERE invoice_id = ? AND status = 'issued'", (invoice_id,)
        )
        return str(rows[0][0]) if rows else None

    async def pair(self, run_id: str, i: int) -> Correction | None:
        """The pair ``(run, i)``, or ``None`` before its credit note."""
        await self._store.opened()
        rows = await self._sql.fetchall(_PAIRS.format(where="c.run_id = ? AND c.i = ?"), (run_id, i))
        return Correction(*rows[0]) if rows else None

    async def pairs(self, run_id: str) -> list[Correction]:
        """Every pair of the correction run ``run_id``, by i."""
        await self._store.opened()
        rows = await self._sql.fetchall(_PAIRS.format(where="c.run_id = ?"), (run_id,))
        return sorted((Correction(*row) for row in rows), key=lambda pair: pair.i)

    async def corrections_of(self, run_id: str) -> list[Correction]:
        """The corrections of the invoices ``run_id`` issued, in credit-note number order."""
        await self._store.opened()
        where = "c.run_id IN (SELECT run_id FROM correction_runs WHERE corrects_run_id = ?)"
        rows = await self._sql.fetchall(_PAIRS.format(where=where), (run_id,))
        return [Correction(*row) for row in rows]
