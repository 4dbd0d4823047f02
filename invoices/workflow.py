"""The invoice batch workflow and its one step (and, with ``reviewFirst``, its wait for approval: ``review.py``).

The step reaches the invoice store through the engine that runs it
(``durable.get_resources(InvoiceStore)``): the app creates its engine with
``resources=store``, so two apps in one process each write to their own file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from durable import (
    FatalError,
    NonDeterminismError,
    RunCancelled,
    get_resources,
    get_workflow_metadata,
    get_writable,
    parse_duration,
    sleep,
    step,
    workflow,
)

from .pricing import SEED_PRICE_VERSION
from .review import timed_out_reason, wait_for_approval
from .store import Invoice, InvoiceStore
from .validation import DEFAULT_APPROVAL_TIMEOUT

__all__ = ["WORKFLOW_NAME", "generate_invoices", "is_terminal_event", "issue_invoice"]

WORKFLOW_NAME = "invoices.batch"

#: With no delay between invoices, this many invoice steps run at once. Each
#: step commits three times (its number, the invoice with its progress event,
#: the step's result); running a window together lets those commits share
#: fsyncs: a 10,000-invoice batch took 7.9 s with windows of 8 and 3.1 s with
#: 32. Once a step's loop work had shrunk, 64 took 1.71 s against 32's 1.89 s
#: (``bench/bench_http.py``, median of 5, interleaved); 128 was hardly faster
#: and doubles what a cancel waits for. Numbers and events stay in invoice
#: order: the steps queue their writes, in one loop turn, in the order they
#: were called, and the single writer commits them in that order (only a step
#: retried after an error writes later than its window). A cancel still yields
#: an exact count: it lets the steps in flight finish, so up to
#: ``ZERO_DELAY_WINDOW - 1`` more invoices go out than one at a time would, a
#: few milliseconds of work at this pace. With a delay: one invoice at a time,
#: the sleep between two.
ZERO_DELAY_WINDOW = 64

# The batch's last event names how it ended; "type" is always its first key.
_TERMINAL_PREFIXES = tuple(b'{"type":"%s"' % kind for kind in (b"complete", b"cancelled", b"error"))


def is_terminal_event(data: bytes) -> bool:
    """Whether a stored stream chunk (JSON bytes) is the batch's terminal event."""
    return data.startswith(_TERMINAL_PREFIXES)


def _event(kind: str, current: int, total: int, account_id: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "current": current,
        "total": total,
        "accountId": account_id,
        "message": message,
    }


@step
async def issue_invoice(run_id: str, account_id: str, k: int, total: int, price_version: int) -> dict[str, Any]:
    """Issue the batch's k-th invoice, under the account's next number, at price list ``price_version``.

    The progress event is written from inside the step: a cancel lets the
    in-flight step finish, so an issued invoice always has its event, and a
    step's writes are stored at most once, so a re-execution after a crash
    does not repeat it.
    """
    store = get_resources(InvoiceStore)
    prices = await store.price_list(price_version)
    if prices is None:
        raise FatalError(f"price list version {price_version} does not exist")
    writer = get_writable()

    def progress(invoice: Invoice) -> Awaitable[None]:
        return writer.write(
            {
                "type": "progress",
                "current": k,
                "total": total,
                "accountId": account_id,
                "invoiceId": invoice.invoice_id,
                "message": f"Generated invoice {k} of {total}",
                "customer": invoice.customer,
                "currency": invoice.currency,
                "totalCents": invoice.total_cents,
                "priceVersion": invoice.price_version,
            }
        )

    # The event is written alongside the invoice so both share one group commit.
    invoice = await store.issue(run_id, account_id, k, prices, alongside=progress)
    return {
        "invoiceId": invoice.invoice_id,
        "customer": invoice.customer,
        "currency": invoice.currency,
        "totalCents": invoice.total_cents,
        "issuedAt": invoice.issued_at,
        "priceVersion": invoice.price_version,
    }


async def _issue_window(
    run_id: str, account_id: str, numbers: range, total: int, price_version: int
) -> tuple[int, BaseException | None]:
    """Issue the batch's invoices ``numbers`` (its k) as concurrent steps: how many were issued, and the first error.

    Every step called here runs to its end (a cancel lets in-flight steps
    finish), so the count is exact even when one of them failed. A
    cancellation is reported before any other error.
    """
    results = await asyncio.gather(
        *(issue_invoice(run_id, account_id, k, total, price_version) for k in numbers), return_exceptions=True
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    cancelled = [error for error in errors if isinstance(error, RunCancelled)]
    first = (cancelled or errors or [None])[0]
    return len(results) - len(errors), first


class _Batch:
    """What the workflow body knows of its batch while it issues: the input, and how many went out."""

    def __init__(self, run_id: str, account_id: str, total: int, delay: str, price_version: int) -> None:
        self.run_id = run_id
        self.account_id = account_id
        self.total = total
        self.delay = delay
        self.price_version = price_version
        self.issued = 0
        # Pure functions of the input, so replay calls the same operations.
        self.pause = parse_duration(delay) > 0
        self.window = 1 if self.pause else ZERO_DELAY_WINDOW

    async def issue(self, first: int, last: int) -> None:
        """Issue invoices ``first`` to ``last`` (its k), sleeping ``delay`` between two, in windows when 0."""
        for start in range(first, last + 1, self.window):
            numbers = range(start, min(last, start + self.window - 1) + 1)
            done, error = await _issue_window(self.run_id, self.account_id, numbers, self.total, self.price_version)
            self.issued += done
            if error is not None:
                raise error
            if self.pause and numbers[-1] < last:
                await sleep(self.delay)


async def _settle(run_id: str) -> None:
    """Give back (or else issue) each number the ending run took without issuing its invoice."""
    # Best effort: the batch is unwinding, and its terminal event must still be written.
    with contextlib.suppress(Exception):
        await get_resources(InvoiceStore).settle_run(run_id)


async def _issued_at_cancel(batch: _Batch) -> int:
    """How many invoices the cancelled batch issued: the journal's count, or the store's when that is more.

    The store is the truth: after a crash during the cancel, steps that were in
    flight may have issued their invoice without their result reaching the
    journal, so the replayed count can be short. No invoice of this run can be
    issued any more, and the event it goes into is journaled once, so the read is final.
    A number taken by a step that never finished is given back (or its invoice issued) first.
    """
    issued = batch.issued
    await _settle(batch.run_id)
    with contextlib.suppress(Exception):
        issued = max(issued, await get_resources(InvoiceStore).count_for_run(batch.run_id))
    return issued


def _cancel_suffix(exc: RunCancelled, review_first: int, approval_timeout: str) -> str:
    """``": <reason>"`` when the batch cancelled itself because its approval timed out, else nothing."""
    timed_out = review_first and exc.reason == timed_out_reason(approval_timeout)
    return f": {exc.reason}" if timed_out else ""


async def _cancelled_event(batch: _Batch, exc: RunCancelled, review_first: int, approval_timeout: str) -> dict[str, Any]:
    """The batch's terminal event when it was cancelled (or cancelled itself)."""
    issued = await _issued_at_cancel(batch)
    why = _cancel_suffix(exc, review_first, approval_timeout)
    message = f"Invoice batch cancelled after {issued} of {batch.total} invoices{why}"
    return _event("cancelled", issued, batch.total, batch.account_id, message)


async def _failed_event(batch: _Batch, exc: Exception) -> dict[str, Any]:
    """The batch's terminal event when an error ended it, once its unissued numbers are settled."""
    await _settle(batch.run_id)
    message = f"Invoice batch failed after {batch.issued} of {batch.total} invoices: {exc}"
    return _event("error", batch.issued, batch.total, batch.account_id, message)


def _completed_event(batch: _Batch) -> dict[str, Any]:
    """The batch's terminal event when every invoice went out."""
    message = f"Invoice batch completed: {batch.total} invoices generated"
    return _event("complete", batch.total, batch.total, batch.account_id, message)


@workflow(name=WORKFLOW_NAME)
async def generate_invoices(
    account_id: str,
    total: int,
    delay: str,
    price_version: int = SEED_PRICE_VERSION,
    review_first: int = 0,
    approval_timeout: str = DEFAULT_APPROVAL_TIMEOUT,
) -> dict[str, Any]:
    """Issue ``total`` invoices at price list ``price_version``, sleeping ``delay`` between two (in windows when 0).

    ``price_version`` is decided when the batch starts, so a replay prices the
    same way; runs started before prices were versioned default to the seed's.
    With ``review_first`` (k), the batch issues k invoices, then waits for its
    approval (``review.wait_for_approval``) at most ``approval_timeout`` before
    the rest; runs started before reviews existed default to none, and replay
    the operations they made.
    """
    run_id = get_workflow_metadata().run_id
    out = get_writable()
    batch = _Batch(run_id, account_id, total, delay, price_version)
    # The durable operations stay in this body, in the order old journals recorded them.
    try:
        await batch.issue(1, review_first)
        if review_first:
            await wait_for_approval(run_id, account_id, review_first, total, approval_timeout)
        await batch.issue(review_first + 1, total)
        # A cancel that arrives while the last step runs lets that step finish;
        # this zero sleep is the checkpoint where such a cancel is noticed, so
        # that a cancelled run's stream ends with "cancelled", not "complete".
        await sleep(0)
    except RunCancelled as exc:
        await out.write(await _cancelled_event(batch, exc, review_first, approval_timeout))
        raise
    except NonDeterminismError:
        raise  # the journal no longer matches: writing more would only add to the damage
    except Exception as exc:
        await out.write(await _failed_event(batch, exc))
        raise
    await out.write(_completed_event(batch))
    return {"accountId": account_id, "issued": total}
