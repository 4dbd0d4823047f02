"""``POST /api/runs/{id}/approve`` and ``/reject``: a person's decision on a batch waiting for approval.

See ``review.py`` for what the batch does. Decisions on one run are taken one
at a time (``RunLocks``), and each answers with the run as the decision left
it: an approval answers once the batch has taken it (its ``approved`` event
is stored, and with it the release of its hook), so the status in the answer
no longer says ``waitingFor: "approval"`` and a second approval is a 409; a
rejection answers once the cancelled batch has stopped, with the exact count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from durable import CannotCancel, HookNotFound, Run

from .errors import ApiError
from .keys import engine_key, store_key
from .responses import json_response
from .review import APPROVAL, approval_token
from .routes import cancelled_json, read_json_object, route_run_id, status_json
from .workflow import is_terminal_event

__all__ = ["APPROVAL_ACK_TIMEOUT", "RunLocks", "add_review_routes", "review_routes"]

#: How long an approval waits for the batch to take it before answering anyway (it is
#: stored: the batch takes it as soon as it runs again, after a restart say).
APPROVAL_ACK_TIMEOUT = 10.0
REJECTED = "Batch rejected: workflow cancelled successfully"

review_routes = web.RouteTableDef()


class RunLocks:
    """One lock per run while a decision on it is being taken; none kept for runs nobody decides on."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(run_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)


locks_key = web.AppKey("review_locks", RunLocks)


def add_review_routes(app: web.Application) -> None:
    """Mount the decision routes on the invoicing app."""
    app[locks_key] = RunLocks()
    app.add_routes(review_routes)


def _why_not(status: dict[str, Any]) -> str:
    state, current, review_first = status["status"], status["current"], status["reviewFirst"]
    if state not in ("pending", "running"):
        return f"it is {state}"
    if state == "pending":
        return "it is pending: queued, it has not issued the invoices to review yet"
    if not review_first:
        return "it is running, started without reviewFirst: nothing to approve"
    if current < review_first:
        return f"it is running and has issued {current} of the {review_first} invoices to review"
    return "it is running: it was approved already"


def _not_waiting(run_id: str, status: dict[str, Any]) -> ApiError:
    return ApiError(
        409,
        f"Workflow run {run_id} is not waiting for approval: {_why_not(status)}",
        currentStatus=status["status"],
        waitingFor=status["waitingFor"],
    )


async def _waiting_status(request: web.Request, run_id: str) -> dict[str, Any]:
    """The run's status while it waits for approval; 404 for an unknown run, 409 when it does not wait."""
    await read_json_object(request)  # a JSON body, as every POST takes (no form post from another site)
    status = await status_json(request, run_id)
    if status["waitingFor"] != APPROVAL:
        raise _not_waiting(run_id, status)
    return status


async def _taken(run: Run, review_index: int) -> str | None:
    """What the batch did once decided: ``"approved"``, or its terminal event's type; None if not yet known."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(APPROVAL_ACK_TIMEOUT), contextlib.aclosing(run.chunks(review_index)) as chunks:
            async for chunk in chunks:
                kind = chunk.value.get("type") if isinstance(chunk.value, dict) else None
                if kind == "approved" or is_terminal_event(chunk.data):
                    return str(kind)
    return None


@review_routes.post("/api/runs/{runId}/approve")
async def approve(request: web.Request) -> web.Response:
    """Approve a batch waiting for approval: it issues the rest; 200 with its status once it has taken the approval."""
    run_id = route_run_id(request.match_info["runId"], "path")
    engine = request.app[engine_key]
    async with request.app[locks_key].hold(run_id):
        status = await _waiting_status(request, run_id)
        try:
            # The key stores one approval even if the batch had not released its hook yet.
            await engine.resume_hook(approval_token(run_id), {"approved": True}, idempotency_key="approve")
        except HookNotFound:  # it stopped waiting meanwhile (timed out, cancelled)
            raise _not_waiting(run_id, await status_json(request, run_id)) from None
        # The stream's events up to the review event are the reviewed invoices'.
        taken = await _taken(engine.get_run(run_id), status["reviewFirst"])
        after = await status_json(request, run_id)
    if taken not in ("approved", None):
        raise _not_waiting(run_id, after)  # it ended before it took the approval
    return json_response(after)


@review_routes.post("/api/runs/{runId}/reject")
async def reject(request: web.Request) -> web.Response:
    """Reject a batch waiting for approval: it is cancelled, as ``POST /api/cancel`` would, with exactly its reviewed invoices."""
    run_id = route_run_id(request.match_info["runId"], "path")
    run = request.app[engine_key].get_run(run_id)
    async with request.app[locks_key].hold(run_id):
        await _waiting_status(request, run_id)
        try:
            previous = await run.cancel()
        except CannotCancel:  # it completed or failed meanwhile
            raise _not_waiting(run_id, await status_json(request, run_id)) from None
    issued = await request.app[store_key].count_for_run(run_id)
    return json_response(cancelled_json(run_id, previous, issued, REJECTED))
