"""``python server.py`` as a real subprocess, driven over HTTP like the README walkthrough."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest
from harness import ServerDidNotStart, ServerProcess, SseEvent, sse_events

JSON = {"Content-Type": "application/json"}


async def test_walkthrough_cancel_stop_and_restart(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        started = await http.post(
            f"{server.base}/api/start",
            data=orjson.dumps({"accountId": "acct_e2e", "total": 20, "delay": "200ms"}),
            headers=JSON,
        )
        assert started.status == 200
        run_id = (await started.json())["runId"]

        stream = await http.get(f"{server.base}/api/stream/{run_id}")
        assert stream.headers["Content-Type"] == "text/event-stream"
        received: list[SseEvent] = []
        feed = sse_events(stream)
        async for event in feed:
            received.append(event)
            if len(received) == 3:
                break

        cancelled = await http.post(f"{server.base}/api/cancel", data=orjson.dumps({"runId": run_id}), headers=JSON)
        assert cancelled.status == 200
        body = await cancelled.json()
        issued = body["invoicesIssued"]
        assert (body["previousStatus"], body["currentStatus"]) == ("running", "cancelled")
        assert 3 <= issued < 20

        received += [event async for event in feed]
        assert [index for index, _ in received] == list(range(issued + 1))
        assert [data["type"] for _, data in received] == ["progress"] * issued + ["cancelled"]
        assert received[-1][1]["current"] == issued
        assert received[-1][1]["message"] == f"Invoice batch cancelled after {issued} of 20 invoices"

        status = await (await http.get(f"{server.base}/api/status", params={"runId": run_id})).json()
        assert (status["status"], status["current"], status["total"]) == ("cancelled", issued, 20)
        invoices = await (await http.get(f"{server.base}/api/runs/{run_id}/invoices")).json()
        assert [invoice["invoiceId"] for invoice in invoices["invoices"]] == [
            f"INV-acct_e2e-{n:04d}" for n in range(1, issued + 1)
        ]

    assert await server.stop() == 0
    assert "Traceback" not in server.log_text()

    await server.start()  # same database, same port
    async with aiohttp.ClientSession() as http:
        status = await (await http.get(f"{server.base}/api/status", params={"runId": run_id})).json()
        assert (status["status"], status["current"]) == ("cancelled", issued)
    assert await server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log_text()


async def test_sigterm_ends_open_streams_and_the_batch_resumes_on_restart(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        started = await http.post(
            f"{server.base}/api/start",
            data=orjson.dumps({"accountId": "acct_resume", "total": 3, "delay": "300ms"}),
            headers=JSON,
        )
        run_id = (await started.json())["runId"]
        streams = [await http.get(f"{server.base}/api/stream/{run_id}") for _ in range(3)]
        for stream in streams:
            first = await anext(sse_events(stream))
            assert first[0] == 0

        assert await server.stop() == 0
        for stream in streams:  # each open response ended with the server
            await asyncio.wait_for(stream.read(), timeout=5)
    assert "Traceback" not in server.log_text()

    await server.start()
    async with aiohttp.ClientSession() as http:
        stream = await http.get(f"{server.base}/api/stream/{run_id}")
        received = [event async for event in sse_events(stream)]
        assert [index for index, _ in received] == [0, 1, 2, 3]
        assert [data["type"] for _, data in received] == ["progress", "progress", "progress", "complete"]
        invoices = await (await http.get(f"{server.base}/api/runs/{run_id}/invoices")).json()
        assert invoices["count"] == 3
    assert await server.stop() == 0
    assert "Traceback" not in server.log_text()


async def test_port_in_use_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    other = ServerProcess(tmp_path / "other.db", tmp_path / "other.log", port=server.port)
    with pytest.raises(ServerDidNotStart) as refused:
        await other.start()
    assert refused.value.code == 1
    log = other.log_text()
    assert "Traceback" not in log
    assert log.startswith("server.py: "), log
