"""Review before billing: a batch waits for a person after its first invoices.

A batch started with ``reviewFirst=k`` issues k invoices, then creates a hook
whose token is derived from its run id (``approval:<runId>``, so the routes
find it without a lookup table) and waits on it for at most
``approvalTimeout``. Its stream says so with a ``review`` event.

- ``POST /api/runs/{id}/approve`` sends ``{"approved": true}`` to the hook; the
  batch releases the hook, writes an ``approved`` event, and issues the rest.
- ``POST /api/runs/{id}/reject`` cancels the run (``cancel()``'s guarantees:
  exactly k invoices, nothing after).
- No decision in time: the hook's durable timer fires, and the batch cancels
  itself with the reason ``approval timed out after <approvalTimeout>``.

A run waits for approval exactly while that hook is active: the engine
releases it when the run ends in any way, and the batch disposes of it once
approved, so ``waiting_for`` needs no state of its own.
"""

from __future__ import annotations

from typing import Any

from durable import Engine, HookNotFound, HookTimeout, RunCancelled, define_hook, get_writable

__all__ = [
    "APPROVAL",
    "APPROVAL_PREFIX",
    "Approval",
    "approval_token",
    "timed_out_reason",
    "wait_for_approval",
    "waiting_for",
    "waiting_runs",
]

APPROVAL_PREFIX = "approval:"
#: What ``GET /api/status`` says in ``waitingFor`` while a batch waits.
APPROVAL = "approval"


def approval_token(run_id: str) -> str:
    """The token of the hook a batch waits on for its approval."""
    return APPROVAL_PREFIX + run_id


def _approval_payload(value: Any) -> bool:
    # The only payload: a rejection is a cancel, and a timeout is no payload at all.
    if value != {"approved": True}:
        raise ValueError('an approval is the JSON object {"approved": true}; to reject, cancel the run')
    return True


#: Typed, so that a payload sent through ``POST /workflows/hooks/approval:<runId>``
#: is checked (400, nothing stored) before it can reach the batch.
Approval = define_hook(_approval_payload)


def timed_out_reason(approval_timeout: str) -> str:
    """The run's error when nobody approved or rejected in time."""
    return f"approval timed out after {approval_timeout}"


def _event(kind: str, current: int, total: int, account_id: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "current": current, "total": total, "accountId": account_id, "message": message, **extra}


async def wait_for_approval(run_id: str, account_id: str, reviewed: int, total: int, approval_timeout: str) -> None:
    """In the batch's workflow body, after its first ``reviewed`` invoices: return once approved.

    Raises ``RunCancelled`` when the run is rejected (cancelled) and, with
    ``timed_out_reason`` as its reason, when ``approval_timeout`` passes first.
    Every operation here is a function of the arguments, so a replay makes the same ones.
    """
    hook = Approval.create(
        token=approval_token(run_id),
        metadata={"accountId": account_id, "reviewed": reviewed, "total": total, "approvalTimeout": approval_timeout},
    )
    out = get_writable()
    await out.write(
        _event(
            "review",
            reviewed,
            total,
            account_id,
            f"Waiting for approval after {reviewed} of {total} invoices",
            approvalTimeout=approval_timeout,
        )
    )
    try:
        await hook.wait(timeout=approval_timeout)
    except HookTimeout:
        raise RunCancelled(run_id, timed_out_reason(approval_timeout)) from None
    hook.dispose()  # from now on the run no longer waits: waitingFor is null, a second approve is a 409
    rest = total - reviewed
    message = f"Approved after {reviewed} of {total} invoices" + (f": issuing the remaining {rest}" if rest else "")
    await out.write(_event("approved", reviewed, total, account_id, message))


async def waiting_for(engine: Engine, run_id: str) -> str | None:
    """``"approval"`` while the run waits for its approval, else ``None``."""
    try:
        await engine.get_hook_by_token(approval_token(run_id))
    except HookNotFound:
        return None
    return APPROVAL


async def waiting_runs(engine: Engine) -> set[str]:
    """The ids of the runs waiting for approval (one read, for lists of runs)."""
    return {hook.run_id for hook in await engine.list_hooks() if hook.token == approval_token(hook.run_id)}
