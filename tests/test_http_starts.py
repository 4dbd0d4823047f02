"""POST /api/start with requestId, and batches queued per account (queuePosition), on a real server."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from app_client import serving
from harness import sse_events, until
from test_http import Api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(Api, tmp_path / "invoices.db") as instance:
        yield instance


def count_runs(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        return int(count)


async def start(api: Api, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await api.post("/api/start", body)
    return response.status, await response.json()


async def wait_status(api: Api, run_id: str, status: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await api.status(run_id))
        return bool(seen["status"] == status)

    await until(reached, what=f"run {run_id} to be {status}")
    return seen


# -- requestId -------------------------------------------------------------------------


async def test_a_repeated_request_id_returns_the_same_run(api: Api) -> None:
    body = {"accountId": "acct_r", "total": 2, "delay": "0s", "requestId": "order-7.retry_1"}
    first_status, first = await start(api, body)
    again_status, again = await start(api, body)
    assert (first_status, again_status) == (200, 200)
    assert (
        first
        == again
        == {
            "runId": "req-order-7.retry_1",
            "accountId": "acct_r",
            "total": 2,
            "delay": "0s",
            "priceVersion": 1,
            "reviewFirst": 0,
            "approvalTimeout": "24h",
            "message": "Invoice workflow started",
        }
    )
    events = [event.data["type"] async for event in sse_events(await api.client.get(f"/api/stream/{first['runId']}"))]
    assert events == ["progress", "progress", "complete"]
    assert count_runs(api.db) == 1
    # Once it is over, the same request still answers with that run.
    assert await start(api, body) == (200, first)
    assert count_runs(api.db) == 1


async def test_concurrent_requests_with_one_request_id_make_one_run(api: Api) -> None:
    body = {"accountId": "acct_c", "total": 1, "delay": "0s", "requestId": "burst"}
    answers = await asyncio.gather(*(start(api, body) for _ in range(20)))
    assert {(status, answer["runId"]) for status, answer in answers} == {(200, "req-burst")}
    assert count_runs(api.db) == 1


async def test_a_request_id_reused_for_another_batch_is_a_conflict(api: Api) -> None:
    status, first = await start(api, {"accountId": "acct_k", "total": 3, "delay": "1h", "requestId": "k1"})
    assert status == 200
    status, conflict = await start(api, {"accountId": "acct_k", "total": 4, "delay": "1h", "requestId": "k1"})
    assert status == 409
    assert conflict == {
        "error": "requestId 'k1' was already used for another batch (accountId acct_k, total 3, delay 1h, "
        "reviewFirst 0, approvalTimeout 24h): send a new requestId for a new batch",
        "runId": first["runId"],
    }
    # The review fields are part of the request too.
    for other in ({"reviewFirst": 1}, {"approvalTimeout": "1h"}):
        status, conflict = await start(api, {"accountId": "acct_k", "total": 3, "delay": "1h", "requestId": "k1", **other})
        assert (status, conflict["runId"]) == (409, first["runId"])
    assert count_runs(api.db) == 1
    assert (await api.post("/api/cancel", {"runId": first["runId"]})).status == 200


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", "''"),
        ("a" * 65, repr("a" * 40)),
        ("two words", "'two words'"),
        ("é", "'é'"),
        (5, "int"),
        (None, "null"),
        ([], "list"),
    ],
)
async def test_a_bad_request_id_is_a_400_and_starts_nothing(api: Api, value: object, shown: str) -> None:
    status, body = await start(api, {"accountId": "acct_b", "requestId": value})
    assert status == 400
    assert body == {"error": f"requestId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -, got {shown}"}
    assert count_runs(api.db) == 0


# -- the billing queue -------------------------------------------------------------------


async def test_a_second_batch_of_an_account_waits_with_its_position(api: Api) -> None:
    first = await api.start("acct_q", total=2, delay="1h")
    second = await api.start("acct_q", total=1, delay="0s")
    third = await api.start("acct_q", total=1, delay="0s")
    other = await api.start("acct_other", total=1, delay="0s")  # another account does not wait
    await wait_status(api, other, "completed")
    assert [(body["status"], body["queuePosition"]) for body in [await api.status(r) for r in (second, third)]] == [
        ("pending", 1),
        ("pending", 2),
    ]
    assert (await api.status(first))["queuePosition"] is None
    detail = await (await api.client.get(f"/api/runs/{second}")).json()
    assert (detail["status"], detail["queuePosition"], detail["startedAt"], detail["timeline"]) == ("pending", 1, None, [])
    listed = await (await api.client.get("/api/runs", params={"status": "pending"})).json()
    assert [(run["runId"], run["queuePosition"]) for run in listed["runs"]] == [(third, 2), (second, 1)]

    cancelled = await api.post("/api/cancel", {"runId": first})
    assert (await cancelled.json())["invoicesIssued"] == 1
    done = await wait_status(api, third, "completed")
    after = await api.status(second)
    assert (after["status"], after["queuePosition"], after["current"]) == ("completed", None, 1)
    assert done["startedAt"] >= after["completedAt"]  # one batch of the account at a time, in start order


async def test_batches_of_one_account_run_one_after_another_in_start_order(api: Api) -> None:
    runs = [await api.start("acct_s", total=2, delay="0s") for _ in range(4)]
    bodies = [await wait_status(api, run_id, "completed") for run_id in runs]
    for earlier, later in itertools.pairwise(bodies):
        assert later["startedAt"] >= earlier["completedAt"]
    for run_id in runs:
        events = [(event.id, event.data["type"]) async for event in sse_events(await api.client.get(f"/api/stream/{run_id}"))]
        assert events == [(0, "progress"), (1, "progress"), (2, "complete")]


async def test_a_queued_batch_cancelled_never_starts(api: Api) -> None:
    first = await api.start("acct_x", total=2, delay="1h")
    queued = await api.start("acct_x", total=5, delay="0s")
    response = await api.post("/api/cancel", {"runId": queued})
    assert response.status == 200
    assert await response.json() == {
        "runId": queued,
        "message": "Workflow cancelled successfully",
        "previousStatus": "pending",
        "currentStatus": "cancelled",
        "invoicesIssued": 0,
    }
    body = await api.status(queued)
    assert (body["status"], body["startedAt"], body["queuePosition"], body["current"]) == ("cancelled", None, None, 0)
    assert [event async for event in sse_events(await api.client.get(f"/api/stream/{queued}"))] == []
    assert (await api.post("/api/cancel", {"runId": first})).status == 200
