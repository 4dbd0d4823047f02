"""Review before billing over HTTP: reviewFirst, approve, reject, the approval's timeout.

The batch issues its first ``reviewFirst`` invoices and waits on a hook; the
stream, the status and the stored invoices say exactly where it is, and each
decision has exactly its effect: an approval issues the rest under the
account's next numbers, a rejection stops the batch at the reviewed count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from app_client import serving
from harness import SseEvent, make_unfinished, sql_rows, sse_events, stored_invoices, until
from test_http import Api, complete, open_api, progress

from durable import RunStatus
from invoices.keys import engine_key
from invoices.routes import BILLING_QUEUE
from invoices.workflow import generate_invoices

CANCEL_KEYS = ["runId", "message", "previousStatus", "currentStatus", "invoicesIssued"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(Api, tmp_path / "invoices.db") as instance:
        yield instance


async def start(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/start", body)
    assert response.status == 200, await response.text()
    started: dict[str, Any] = await response.json()
    return started


async def decide(api: Api, run_id: str, decision: str) -> tuple[int, dict[str, Any]]:
    response = await api.post(f"/api/runs/{run_id}/{decision}", {})
    return response.status, await response.json()


def review(k: int, total: int, account_id: str, timeout: str = "24h") -> dict[str, Any]:
    return {
        "type": "review",
        "current": k,
        "total": total,
        "accountId": account_id,
        "message": f"Waiting for approval after {k} of {total} invoices",
        "approvalTimeout": timeout,
    }


def approved(k: int, total: int, account_id: str) -> dict[str, Any]:
    rest = f": issuing the remaining {total - k}" if total > k else ""
    return {
        "type": "approved",
        "current": k,
        "total": total,
        "accountId": account_id,
        "message": f"Approved after {k} of {total} invoices{rest}",
    }


def cancelled(k: int, total: int, account_id: str, why: str = "") -> dict[str, Any]:
    return {
        "type": "cancelled",
        "current": k,
        "total": total,
        "accountId": account_id,
        "message": f"Invoice batch cancelled after {k} of {total} invoices{why}",
    }


def numbered(account_id: str, first: int, last: int, total: int, k0: int = 1) -> list[dict[str, Any]]:
    """The progress events of invoices n = first..last, the batch's k counting from ``k0``."""
    events = []
    for offset, n in enumerate(range(first, last + 1)):
        event = progress(n, total, account_id)
        event.update(current=k0 + offset, message=f"Generated invoice {k0 + offset} of {total}")
        events.append(event)
    return events


async def until_review(api: Api, run_id: str) -> tuple[aiohttp.ClientResponse, list[SseEvent]]:
    """The stream, read up to and with its review event; the response stays open for the rest."""
    stream = await api.client.get(f"/api/stream/{run_id}")
    assert stream.status == 200
    seen: list[SseEvent] = []
    async for event in sse_events(stream):
        seen.append(event)
        if event.data["type"] == "review":
            break
    return stream, seen


async def until_waiting(api: Api, run_id: str) -> list[dict[str, Any]]:
    """The run's timeline once its wait for approval is journaled.

    The review event commits before the receive's record: a client that has the
    event can read the timeline a commit too early.
    """
    timeline: list[dict[str, Any]] = []

    async def waiting() -> bool:
        timeline[:] = (await (await api.client.get(f"/api/runs/{run_id}")).json())["timeline"]
        return bool(timeline) and timeline[-1]["kind"] == "receive"

    await until(waiting, what="the batch to wait for its approval")
    return timeline


def waiting_status(run_id: str, account_id: str, k: int, total: int, delay: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "runId": run_id,
        "kind": "batch",
        "status": "running",
        "createdAt": body["createdAt"],
        "startedAt": body["startedAt"],
        "completedAt": None,
        "accountId": account_id,
        "total": total,
        "delay": delay,
        "priceVersion": 1,
        "current": k,
        "error": None,
        "queuePosition": None,
        "reviewFirst": k,
        "approvalTimeout": "24h",
        "waitingFor": "approval",
    }


# -- approve ----------------------------------------------------------------------------


async def test_approve_issues_the_rest_and_numbering_continues_gapless(api: Api) -> None:
    started = await start(api, accountId="acct_r", total=5, delay="0s", reviewFirst=2)
    assert started == {
        "runId": started["runId"],
        "accountId": "acct_r",
        "total": 5,
        "delay": "0s",
        "priceVersion": 1,
        "reviewFirst": 2,
        "approvalTimeout": "24h",
        "message": "Invoice workflow started",
    }
    run_id = started["runId"]
    stream, seen = await until_review(api, run_id)
    assert seen == list(enumerate([*numbered("acct_r", 1, 2, 5), review(2, 5, "acct_r")]))

    status = await api.status(run_id)
    assert status == waiting_status(run_id, "acct_r", 2, 5, "0s", status)
    listed = (await (await api.client.get("/api/runs")).json())["runs"]
    assert [(run["runId"], run["waitingFor"]) for run in listed] == [(run_id, "approval")]
    detail = await (await api.client.get(f"/api/runs/{run_id}")).json()
    assert detail["waitingFor"] == "approval"
    assert [(op["kind"], op["name"], op["status"]) for op in await until_waiting(api, run_id)] == [
        ("step", "invoices.workflow.issue_invoice", "completed"),
        ("step", "invoices.workflow.issue_invoice", "completed"),
        ("hook", f"hook:approval:{run_id}", "created"),
        ("receive", "hook 2", "waiting"),
    ]
    # Waiting means waiting: nothing else is issued meanwhile.
    assert stored_invoices(api.db) == [(f"INV-acct_r-{n:04d}", n) for n in (1, 2)]

    code, body = await decide(api, run_id, "approve")
    assert code == 200
    # Answered once the batch took the approval: it no longer waits (it may have issued more since).
    moved = {"status", "current", "completedAt"}
    assert {key: value for key, value in body.items() if key not in moved} == {
        key: value for key, value in {**status, "waitingFor": None}.items() if key not in moved
    }
    assert (body["status"], body["current"]) in {("running", n) for n in range(2, 6)} | {("completed", 5)}

    rest = [event async for event in sse_events(stream)]
    assert rest == list(enumerate([approved(2, 5, "acct_r"), *numbered("acct_r", 3, 5, 5, k0=3), complete(5, "acct_r")], start=3))
    final = await api.status(run_id)
    assert (final["status"], final["current"], final["waitingFor"], final["error"]) == ("completed", 5, None, None)
    assert stored_invoices(api.db) == [(f"INV-acct_r-{n:04d}", n) for n in range(1, 6)]

    # The account's next batch continues the numbers, through its own review.
    second = (await start(api, accountId="acct_r", total=2, delay="0s", reviewFirst=1))["runId"]
    stream, seen = await until_review(api, second)
    assert seen == list(enumerate([*numbered("acct_r", 6, 6, 2), review(1, 2, "acct_r")]))
    assert (await decide(api, second, "approve"))[0] == 200
    assert [event async for event in sse_events(stream)] == list(
        enumerate([approved(1, 2, "acct_r"), *numbered("acct_r", 7, 7, 2, k0=2), complete(2, "acct_r")], start=2)
    )
    assert stored_invoices(api.db) == [(f"INV-acct_r-{n:04d}", n) for n in range(1, 8)]
    assert sql_rows(api.db, "SELECT COUNT(*) FROM hook_payloads") == [(2,)]  # one approval each

    # Approving again: the run no longer waits.
    code, again = await decide(api, run_id, "approve")
    assert (code, again) == (
        409,
        {
            "error": f"Workflow run {run_id} is not waiting for approval: it is completed",
            "currentStatus": "completed",
            "waitingFor": None,
        },
    )


async def test_a_batch_that_reviews_all_its_invoices_completes_on_approval(api: Api) -> None:
    run_id = (await start(api, accountId="acct_all", total=2, delay="10ms", reviewFirst=2))["runId"]
    stream, seen = await until_review(api, run_id)
    # With a delay: a sleep between the reviewed invoices, none after the last before the review.
    assert [op["kind"] for op in await until_waiting(api, run_id)] == ["step", "sleep", "step", "hook", "receive"]
    assert seen == list(enumerate([*numbered("acct_all", 1, 2, 2), review(2, 2, "acct_all")]))
    code, body = await decide(api, run_id, "approve")
    assert (code, body["waitingFor"]) == (200, None)
    assert [event async for event in sse_events(stream)] == [
        (3, approved(2, 2, "acct_all")),
        (4, complete(2, "acct_all")),
    ]


async def test_an_approval_through_the_hook_route_is_checked_and_works_like_approve(api: Api) -> None:
    run_id = (await start(api, accountId="acct_h", total=2, delay="0s", reviewFirst=1))["runId"]
    stream, _ = await until_review(api, run_id)
    refused = await api.post(f"/workflows/hooks/approval:{run_id}", {"approved": False})
    assert refused.status == 400
    assert "an approval is the JSON object" in (await refused.json())["error"]
    assert sql_rows(api.db, "SELECT COUNT(*) FROM hook_payloads") == [(0,)]  # nothing stored
    assert (await api.status(run_id))["waitingFor"] == "approval"

    accepted = await api.post(f"/workflows/hooks/approval:{run_id}", {"approved": True})
    assert accepted.status == 200
    assert [event.data["type"] async for event in sse_events(stream)] == ["approved", "progress", "complete"]


# -- reject -----------------------------------------------------------------------------


async def test_reject_cancels_with_the_exact_count_and_nothing_after(api: Api) -> None:
    run_id = (await start(api, accountId="acct_x", total=6, delay="0s", reviewFirst=3))["runId"]
    stream, seen = await until_review(api, run_id)
    assert [event.data["type"] for event in seen] == ["progress"] * 3 + ["review"]

    code, body = await decide(api, run_id, "reject")
    assert code == 200
    assert list(body) == CANCEL_KEYS  # the shape of POST /api/cancel's answer
    assert body == {
        "runId": run_id,
        "message": "Batch rejected: workflow cancelled successfully",
        "previousStatus": "running",
        "currentStatus": "cancelled",
        "invoicesIssued": 3,
    }
    assert [event async for event in sse_events(stream)] == [(4, cancelled(3, 6, "acct_x"))]
    status = await api.status(run_id)
    assert (status["status"], status["current"], status["waitingFor"], status["error"]) == ("cancelled", 3, None, None)

    for decision in ("reject", "approve"):
        code, again = await decide(api, run_id, decision)
        assert (code, again) == (
            409,
            {
                "error": f"Workflow run {run_id} is not waiting for approval: it is cancelled",
                "currentStatus": "cancelled",
                "waitingFor": None,
            },
        )
    cancel = await api.post("/api/cancel", {"runId": run_id})
    assert await cancel.json() == {**body, "message": "Workflow cancelled successfully", "previousStatus": "cancelled"}

    # Nothing after the rejection: with the engine closed, what the file holds is final.
    await api.client.close()
    assert stored_invoices(api.db) == [(f"INV-acct_x-{n:04d}", n) for n in (1, 2, 3)]
    assert sql_rows(api.db, "SELECT status, unwound FROM runs WHERE run_id = ?", (run_id,)) == [("cancelled", 1)]
    assert sql_rows(api.db, "SELECT COUNT(*) FROM hooks WHERE released_at IS NULL") == [(0,)]


# -- timeout ----------------------------------------------------------------------------


async def test_no_decision_in_time_cancels_the_batch_with_its_reason(api: Api) -> None:
    run_id = (await start(api, accountId="acct_t", total=4, delay="0s", reviewFirst=2, approvalTimeout="200ms"))["runId"]
    events = await api.events(run_id)
    assert events == list(
        enumerate(
            [
                *numbered("acct_t", 1, 2, 4),
                review(2, 4, "acct_t", "200ms"),
                cancelled(2, 4, "acct_t", ": approval timed out after 200ms"),
            ]
        )
    )
    status = await api.status(run_id)
    assert (status["status"], status["current"], status["waitingFor"], status["approvalTimeout"], status["error"]) == (
        "cancelled",
        2,
        None,
        "200ms",
        "approval timed out after 200ms",
    )
    assert await api.app[engine_key].get_run(run_id).status() is RunStatus.CANCELLED
    assert (await decide(api, run_id, "approve"))[0] == 409
    late = await api.post(f"/workflows/hooks/approval:{run_id}", {"approved": True})
    assert late.status == 404  # the token was released with the run
    assert stored_invoices(api.db) == [(f"INV-acct_t-{n:04d}", n) for n in (1, 2)]


# -- not waiting: 409, 404, bad requests ------------------------------------------------------


async def test_decisions_on_runs_that_do_not_wait_are_409_naming_the_state(api: Api) -> None:
    plain = (await start(api, accountId="acct_n", total=2, delay="1h"))["runId"]
    queued = (await start(api, accountId="acct_n", total=2, delay="0s", reviewFirst=1))["runId"]
    early = (await start(api, accountId="acct_e", total=3, delay="1h", reviewFirst=2))["runId"]
    await until(
        lambda: stored_invoices(api.db) == [("INV-acct_e-0001", 1), ("INV-acct_n-0001", 1)],
        what="the first invoice of each running batch",
    )
    done = (await start(api, accountId="acct_d", total=1, delay="0s"))["runId"]
    await api.events(done)
    cases = [
        (plain, "running", "it is running, started without reviewFirst: nothing to approve"),
        (queued, "pending", "it is pending: queued, it has not issued the invoices to review yet"),
        (early, "running", "it is running and has issued 1 of the 2 invoices to review"),
        (done, "completed", "it is completed"),
    ]
    for run_id, state, why in cases:
        for decision in ("approve", "reject"):
            code, body = await decide(api, run_id, decision)
            assert (code, body) == (
                409,
                {
                    "error": f"Workflow run {run_id} is not waiting for approval: {why}",
                    "currentStatus": state,
                    "waitingFor": None,
                },
            ), (run_id, decision)
    # Nothing was decided: the runs go on as they were.
    assert [(await api.status(r))["status"] for r in (plain, queued, early)] == ["running", "pending", "running"]
    assert sql_rows(api.db, "SELECT COUNT(*) FROM hook_payloads") == [(0,)]
    for run_id in (plain, queued, early):
        assert (await api.post("/api/cancel", {"runId": run_id})).status == 200


async def test_unknown_runs_and_bad_requests(api: Api) -> None:
    for decision in ("approve", "reject"):
        for run_id in ("wrun_nope", "..%2F..%2Fetc"):
            code, body = await decide(api, run_id, decision)
            assert code == 404, (run_id, body)
            assert body["error"].startswith("Workflow run "), body
        assert await decide(api, "wrun_nope", decision) == (404, {"error": "Workflow run wrun_nope not found"})
        form = await api.client.post(f"/api/runs/wrun_nope/{decision}", data="approved=1")
        assert form.status == 415
        wrong = await api.client.get(f"/api/runs/wrun_nope/{decision}")
        assert wrong.status == 405


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"total": 3, "reviewFirst": 4}, "reviewFirst must be at most total (3): a batch reviews only invoices it issues, got 4"),
        ({"reviewFirst": 101, "total": 200}, "reviewFirst must be an integer from 0 to 100, got 101"),
        (
            {"reviewFirst": 1, "approvalTimeout": "8 days"},
            'approvalTimeout must be a duration string above "0s" and up to "7 days" (e.g. "200ms", "30m", "24h"),'
            " got '8 days'",
        ),
    ],
)
async def test_bad_review_fields_are_400_and_start_nothing(api: Api, fields: dict[str, Any], message: str) -> None:
    response = await api.post("/api/start", {"accountId": "acct_v", **fields})
    assert (response.status, await response.json()) == (400, {"error": message})
    assert await api.app[engine_key].list_runs() == []


# -- replay ------------------------------------------------------------------------------


async def test_batches_from_before_reviews_and_reviewed_ones_replay_the_same_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "invoices.db"
    statuses: list[int] = []
    api = await open_api(db, statuses)
    # A batch as stored before reviews existed: four arguments.
    options = generate_invoices.with_options(queue=BILLING_QUEUE, queue_key="acct_old")
    old = (await api.app[engine_key].start(options, "acct_old", 3, "10ms", 1)).run_id
    new = (await start(api, accountId="acct_new", total=3, delay="10ms", reviewFirst=1))["runId"]
    stream, _ = await until_review(api, new)
    assert (await decide(api, new, "approve"))[0] == 200
    assert [event.data["type"] async for event in sse_events(stream)] == ["approved", "progress", "progress", "complete"]
    before = {run_id: (await api.events(run_id), await timeline(api, run_id)) for run_id in (old, new)}
    assert before[old][1] == ["step", "sleep", "step", "sleep", "step", "sleep"]
    assert before[new][1] == ["step", "hook", "receive", "step", "sleep", "step", "sleep"]
    status = await api.status(old)
    assert (status["reviewFirst"], status["approvalTimeout"], status["priceVersion"]) == (0, "24h", 1)
    await api.client.close()

    # As a crash would leave them: unfinished, every operation journaled. Each replays to
    # the same end, with no operation, event or invoice more.
    for run_id in (old, new):
        make_unfinished(db, run_id)
    api = await open_api(db, statuses)
    try:
        for run_id in (old, new):
            assert (await api.events(run_id), await timeline(api, run_id)) == before[run_id]
            assert (await api.status(run_id))["status"] == "completed"
    finally:
        await api.client.close()
    assert stored_invoices(db) == [(f"INV-acct_new-{n:04d}", n) for n in (1, 2, 3)] + [
        (f"INV-acct_old-{n:04d}", n) for n in (1, 2, 3)
    ]
    assert [status for status in statuses if status >= 500] == []


async def timeline(api: Api, run_id: str) -> list[str]:
    detail = await (await api.client.get(f"/api/runs/{run_id}")).json()
    return [op["kind"] for op in detail["timeline"]]
