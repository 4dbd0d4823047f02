"""A batch waiting for approval survives SIGKILL of a real ``python server.py``.

After the restart the batch still waits (the hook and its timer are in the
journal), an approval then completes it exactly once, and an approval's
timeout keeps counting across the restart.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import Api, ServerProcess, integrity_check, sql_rows, stored_invoices, until

pytestmark = pytest.mark.slow


async def start(api: Api, **body: Any) -> str:
    status, answer = await api.request("POST", "/api/start", body)
    assert status == 200, answer
    run_id: str = answer["runId"]
    return run_id


async def until_waiting(api: Api, run_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def waiting() -> bool:
        seen.update(await api.status(run_id))
        return bool(seen["waitingFor"] == "approval")

    await until(waiting, timeout=30, interval=0.02, what=f"run {run_id} to wait for approval")
    return seen


async def test_a_batch_waiting_for_approval_survives_sigkill_and_is_approved_once(api: Api, server: ServerProcess) -> None:
    run_id = await start(api, accountId="acct_k", total=4, delay="0s", reviewFirst=2)
    before = await until_waiting(api, run_id)
    assert (before["status"], before["current"]) == ("running", 2)

    assert await server.kill() == -9
    await server.start()
    after = await api.status(run_id)
    assert after == before  # still waiting, nothing more issued
    assert stored_invoices(server.db) == [("INV-acct_k-0001", 1), ("INV-acct_k-0002", 2)]

    status, approved = await api.request("POST", f"/api/runs/{run_id}/approve", {})
    assert (status, approved["waitingFor"]) == (200, None)
    final = await api.wait_terminal(run_id)
    assert (final["status"], final["current"], final["error"]) == ("completed", 4, None)
    events = await api.stream(run_id)
    assert [(event.id, event.data["type"], event.data["current"]) for event in events] == [
        (0, "progress", 1),
        (1, "progress", 2),
        (2, "review", 2),
        (3, "approved", 2),
        (4, "progress", 3),
        (5, "progress", 4),
        (6, "complete", 4),
    ]
    assert stored_invoices(server.db) == [(f"INV-acct_k-{n:04d}", n) for n in range(1, 5)]
    assert sql_rows(server.db, "SELECT COUNT(*) FROM hook_payloads WHERE run_id = ?", (run_id,)) == [(1,)]
    status, again = await api.request("POST", f"/api/runs/{run_id}/approve", {})
    assert (status, again["currentStatus"]) == (409, "completed")
    assert api.errors_5xx == 0
    await server.stop()
    assert integrity_check(server.db) == "ok"


async def test_an_approval_timeout_keeps_counting_across_a_sigkill(api: Api, server: ServerProcess) -> None:
    run_id = await start(api, accountId="acct_t", total=3, delay="0s", reviewFirst=1, approvalTimeout="2s")
    await until_waiting(api, run_id)
    deadline = "SELECT wake_at FROM ops WHERE run_id = ? AND kind = 'receive'"
    await until(lambda: len(sql_rows(server.db, deadline, (run_id,))) == 1, what="the approval's deadline to be journaled")
    [(wake_at,)] = sql_rows(server.db, deadline, (run_id,))
    await server.kill()
    await server.start()
    final = await api.wait_terminal(run_id)
    assert (final["status"], final["current"], final["error"]) == ("cancelled", 1, "approval timed out after 2s")
    # The deadline is the one journaled before the crash, not a new one from the restart.
    assert sql_rows(server.db, deadline, (run_id,)) == [(wake_at,)]
    [(completed_at,)] = sql_rows(server.db, "SELECT completed_at FROM runs WHERE run_id = ?", (run_id,))
    assert completed_at >= wake_at
    events = await api.stream(run_id)
    assert [event.data["type"] for event in events] == ["progress", "review", "cancelled"]
    assert events[-1].data["message"] == "Invoice batch cancelled after 1 of 3 invoices: approval timed out after 2s"
    assert stored_invoices(server.db) == [("INV-acct_t-0001", 1)]
