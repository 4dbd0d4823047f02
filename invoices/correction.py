"""The correction workflow: a credit note and a replacement for each invoice priced at a superseded version.

``correct_invoices`` gets the invoices to correct (decided by the route, so a
replay corrects the same ones) and, for the i-th, runs two steps, each
exactly once per ``(run, i)`` (``corrections_store.py``): ``issue_credit_note``
then ``issue_replacement``. When the replacement fails for good, the pair is
rolled back in reverse order by ``revert_correction`` (the seeds' rollback
pattern: a compensation that is a step itself, idempotent, enqueued only once
its forward step succeeded) and the run fails. A cancel lets the step in
flight finish; the pair it belongs to is then completed while the run unwinds
(or rolled back, when its replacement cannot be issued), so a cancelled run
never leaves a pair half done either.

The workflow body writes one event per invoice, once its pair has ended
(``correction``, or ``reverted`` / ``skipped``), then ``complete``,
``cancelled`` or ``error``. Body writes are journaled, so each is stored
exactly once; the events of pairs that a cancelled or failed run ended while
unwinding are written from the store's state after ``settle``, which is final
by then, so a replay of the unwinding writes the same events.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from durable import (
    FatalError,
    NonDeterminismError,
    RunCancelled,
    RunInfo,
    get_resources,
    get_workflow_metadata,
    get_writable,
    sleep,
    step,
    workflow,
)

from .corrections_store import Correction, CorrectionRun, CorrectionStore
from .store import InvoiceStore
from .timestamps import now_iso_ms

__all__ = [
    "CORRECTION_WORKFLOW_NAME",
    "CorrectionInput",
    "correct_invoices",
    "correction_input",
    "issue_credit_note",
    "issue_replacement",
    "revert_correction",
]

CORRECTION_WORKFLOW_NAME = "invoices.correction"

#: A replacement the database refuses is tried this many more times (1 s, then
#: 2 s later) before its pair is rolled back.
REPLACEMENT_RETRIES = 2


@dataclass(frozen=True, slots=True)
class CorrectionInput:
    """What a correction run was started with."""

    corrects_run_id: str
    account_id: str
    price_version: int
    invoice_ids: tuple[str, ...]

    @property
    def total(self) -> int:
        return len(self.invoice_ids)


def correction_input(info: RunInfo) -> CorrectionInput | None:
    """The input of a correction run; ``None`` for a run of another workflow."""
    if info.workflow_name != CORRECTION_WORKFLOW_NAME:
        return None
    names = ("corrects_run_id", "account_id", "price_version", "invoice_ids")
    values = dict(zip(names, info.args, strict=False)) | {name: info.kwargs[name] for name in names if name in info.kwargs}
    return CorrectionInput(values["corrects_run_id"], values["account_id"], values["price_version"], tuple(values["invoice_ids"]))


def _corrections() -> CorrectionStore:
    return CorrectionStore(get_resources(InvoiceStore))


@step
async def begin_correction(run_id: str, corrects_run_id: str, account_id: str, price_version: int, total: int) -> None:
    """Record which run this run corrects (the route records it too; this covers a crash in between)."""
    await _corrections().record_run(CorrectionRun(run_id, corrects_run_id, account_id, price_version, total, now_iso_ms()))


@step
async def issue_credit_note(run_id: str, i: int, invoice_id: str) -> dict[str, Any]:
    """The credit note voiding ``invoice_id``, the run's i-th invoice to correct; skipped when another voids it."""
    store = get_resources(InvoiceStore)
    original = await store.get(invoice_id)
    if original is None:
        raise FatalError(f"invoice {invoice_id} does not exist")
    corrections = CorrectionStore(store)
    note = await corrections.issue_credit_note(run_id, i, original)
    if note is None:
        return {"skipped": True, "voidedBy": await corrections.voiding(invoice_id), "accountId": original.account_id}
    return {"skipped": False, "creditNoteId": note.credit_note_id}


@step(max_retries=REPLACEMENT_RETRIES)
async def issue_replacement(run_id: str, i: int, invoice_id: str, price_version: int) -> dict[str, Any]:
    """The replacement of ``invoice_id`` at price list ``price_version``; the pair as stored."""
    store = get_resources(InvoiceStore)
    prices = await store.price_list(price_version)
    if prices is None:
        raise FatalError(f"price list version {price_version} does not exist")
    original = await store.get(invoice_id)
    if original is None:
        raise FatalError(f"invoice {invoice_id} does not exist")
    corrections = CorrectionStore(store)
    await corrections.issue_replacement(run_id, i, original, prices)
    pair = await corrections.pair(run_id, i)
    assert pair is not None  # its credit note was issued by the step before
    return pair.to_json()


@step
async def revert_correction(run_id: str, i: int) -> dict[str, Any]:
    """Roll back the pair ``(run, i)`` (idempotent); the pair as it ended, ``reverted`` or ``corrected``."""
    corrections = _corrections()
    await corrections.revert(run_id, i)
    pair = await corrections.pair(run_id, i)
    assert pair is not None  # a pair is rolled back only once its credit note was issued
    return pair.to_json()


def _pair_event(pair: dict[str, Any], current: int, total: int) -> dict[str, Any]:
    """The stream event of a pair that ended: ``correction`` or ``reverted``."""
    invoice_id, note = pair["invoiceId"], pair["creditNoteId"]
    if pair["status"] == "corrected":
        kind = "correction"
        message = f"Corrected {invoice_id} ({current} of {total}): credit note {note}, replacement {pair['replacementId']}"
    else:
        kind = "reverted"
        message = f"Correction of {invoice_id} ({current} of {total}) rolled back: credit note {note} reverted, no replacement"
    return {
        "type": kind,
        "current": current,
        "total": total,
        "accountId": pair["accountId"],
        "invoiceId": invoice_id,
        "creditNoteId": note,
        "replacementId": pair["replacementId"],
        "deltaCents": pair["deltaCents"],
        "message": message,
        "status": pair["status"],
        "customer": pair["customer"],
        "currency": pair["currency"],
        "originalTotalCents": pair["originalTotalCents"],
        "totalCents": pair["replacementTotalCents"],
        "priceVersion": pair["priceVersion"],
    }


class _Progress:
    """What the run has announced on its stream, and how it ends; lives in the workflow body only."""

    def __init__(self, run_id: str, spec: CorrectionInput) -> None:
        self.run_id = run_id
        self.spec = spec
        self.out = get_writable()
        self.announced: set[int] = set()
        self.corrected = 0

    async def pair(self, i: int, pair: dict[str, Any]) -> None:
        self.announced.add(i)
        if pair["status"] == "corrected":
            self.corrected += 1
        await self.out.write(_pair_event(pair, i, self.spec.total))

    async def skipped(self, i: int, invoice_id: str, account_id: str, voided_by: str | None) -> None:
        self.announced.add(i)
        total = self.spec.total
        await self.out.write(
            {
                "type": "skipped",
                "current": i,
                "total": total,
                "accountId": account_id,
                "invoiceId": invoice_id,
                "creditNoteId": voided_by,
                "replacementId": None,
                "deltaCents": 0,
                "message": f"Skipped {invoice_id} ({i} of {total}): already voided by {voided_by}",
            }
        )

    async def unwind(self, *, forward: bool) -> None:
        """Complete (or roll back) the pairs still half done, then announce every pair not announced yet.

        The store is the truth here: a step that was in flight may have issued
        its part without its result reaching the journal. ``settle`` makes the
        state final first, so a replay of the unwinding announces the same pairs.
        """
        corrections = _corrections()
        with contextlib.suppress(Exception):
            await corrections.settle(self.run_id, self.spec.price_version, forward=forward)
        pairs: list[Correction] = []
        with contextlib.suppress(Exception):
            pairs = await corrections.pairs(self.run_id)
        for pair in pairs:
            if pair.i not in self.announced and pair.state != "pending":
                await self.pair(pair.i, pair.to_json())

    async def end(self, kind: str, detail: str = "") -> None:
        total, corrected = self.spec.total, self.corrected
        messages = {
            "complete": f"Correction completed: {corrected} of {total} invoices corrected",
            "cancelled": f"Correction cancelled after {corrected} of {total} invoices",
            "error": f"Correction failed after {corrected} of {total} invoices: {detail}",
        }
        await self.out.write(
            {
                "type": kind,
                "current": len(self.announced),
                "total": total,
                "accountId": self.spec.account_id,
                "correctsRunId": self.spec.corrects_run_id,
                "invoicesCorrected": corrected,
                "message": messages[kind],
            }
        )


async def _correct_one(progress: _Progress, i: int, invoice_id: str) -> None:
    run_id, version = progress.run_id, progress.spec.price_version
    credit = await issue_credit_note(run_id, i, invoice_id)
    if credit["skipped"]:
        await progress.skipped(i, invoice_id, credit["accountId"], credit["voidedBy"])
        return
    try:
        pair = await issue_replacement(run_id, i, invoice_id, version)
    except RunCancelled:
        raise  # the unwinding completes the pair
    except Exception:
        # Roll back what succeeded, newest first: here the credit note (and the
        # number the replacement took); then the run fails.
        await progress.pair(i, await revert_correction(run_id, i))
        raise
    await progress.pair(i, pair)


@workflow(name=CORRECTION_WORKFLOW_NAME)
async def correct_invoices(corrects_run_id: str, account_id: str, price_version: int, invoice_ids: list[str]) -> dict[str, Any]:
    """Void each of ``invoice_ids`` (invoices of run ``corrects_run_id``) and replace it at price list ``price_version``."""
    run_id = get_workflow_metadata().run_id
    spec = CorrectionInput(corrects_run_id, account_id, price_version, tuple(invoice_ids))
    progress = _Progress(run_id, spec)
    try:
        await begin_correction(run_id, corrects_run_id, account_id, price_version, spec.total)
        for i, invoice_id in enumerate(invoice_ids, start=1):
            await _correct_one(progress, i, invoice_id)
        # The checkpoint where a cancel that came during the last step is noticed (as in the batch).
        await sleep(0)
    except RunCancelled:
        await progress.unwind(forward=True)
        await progress.end("cancelled")
        raise
    except NonDeterminismError:
        raise  # the journal no longer matches: writing more would only add to the damage
    except Exception as exc:
        await progress.unwind(forward=False)
        await progress.end("error", str(exc))
        raise
    await progress.end("complete")
    return {"correctsRunId": corrects_run_id, "corrected": progress.corrected, "total": spec.total}
