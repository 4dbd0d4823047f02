"""The HTTP API through aiohttp's test client, on a real SQLite file and a loopback port."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from app_client import JSON, AppClient, open_client, serving
from harness import SseEvent, SseParser, parse_sse, sql_rows, sse_events, sse_lines, stored_invoices, until

from durable import Run, RunFailed, RunStatus
from invoices.errors import error_middleware
from invoices.keys import engine_key, hub_key
from invoices.pricing import price_invoice
from invoices.workflow import ZERO_DELAY_WINDOW, generate_invoices

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


# -- fixtures and helpers ---------------------------------------------------------


class Api(AppClient):
    """The calls these tests make (every status is recorded: a fixture checks that none was a 5xx)."""

    async def post(self, path: str, body: Any, **kwargs: Any) -> ClientResponse:
        headers = {**JSON, **kwargs.pop("headers", {})}
        return await self.client.post(path, data=orjson.dumps(body), headers=headers, **kwargs)

    async def start(self, account_id: str = "acct_1", total: int = 3, delay: str = "0s") -> str:
        response = await self.post("/api/start", {"accountId": account_id, "total": total, "delay": delay})
        assert response.status == 200, await response.text()
        run_id: str = (await response.json())["runId"]
        return run_id

    async def events(self, run_id: str, **kwargs: Any) -> list[SseEvent]:
        response = await self.client.get(f"/api/stream/{run_id}", **kwargs)
        assert response.status == 200, await response.text()
        return [event async for event in sse_events(response)]

    async def status(self, run_id: str) -> dict[str, Any]:
        response = await self.client.get("/api/status", params={"runId": run_id})
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def open_api(db: Path, statuses: list[int], **kwargs: Any) -> Api:
    return await open_client(Api, db, statuses, **kwargs)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(Api, tmp_path / "invoices.db", allowed_5xx={503}) as instance:  # 503: the answer to a storage fault
        yield instance


@pytest.fixture
async def api_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    opened: list[Api] = []
    statuses: list[int] = []

    async def factory(**kwargs: Any) -> Api:
        instance = await open_api(tmp_path / f"invoices{len(opened)}.db", statuses, **kwargs)
        opened.append(instance)
        return instance

    yield factory
    for instance in opened:
        await instance.client.close()
    assert [status for status in statuses if status >= 500 and status != 503] == []


def progress(n: int, total: int, account_id: str = "acct_1") -> dict[str, Any]:
    draft = price_invoice(account_id, n)
    return {
        "type": "progress",
        "current": n,
        "total": total,
        "accountId": account_id,
        "invoiceId": f"INV-{account_id}-{n:04d}",
        "message": f"Generated invoice {n} of {total}",
        "customer": draft.customer,
        "currency": "USD",
        "totalCents": draft.total_cents,
        "priceVersion": 1,
    }


def complete(total: int, account_id: str = "acct_1") -> dict[str, Any]:
    return {
        "type": "complete",
        "current": total,
        "total": total,
        "accountId": account_id,
        "message": f"Invoice batch completed: {total} invoices generated",
    }


def stored_invoice_ids(db: Path) -> list[str]:
    return [invoice_id for invoice_id, _ in stored_invoices(db)]


async def raw_request(api: Api, request_line: str, headers: str = "") -> tuple[int, bytes]:
    """Send a request exactly as written (no client-side path normalization)."""
    assert api.client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", api.client.server.port)
    host = f"127.0.0.1:{api.client.server.port}"
    writer.write(f"{request_line}\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


# -- start, stream, status ----------------------------------------------------------------


async def test_start_returns_the_seed_body_and_streams_every_event(api: Api) -> None:
    response = await api.post("/api/start", {"accountId": "acct_1", "total": 3, "delay": "0s"})
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert list(body) == ["runId", "accountId", "total", "delay", "priceVersion", "reviewFirst", "approvalTimeout", "message"]
    assert body == {
        "runId": body["runId"],
        "accountId": "acct_1",
        "total": 3,
        "delay": "0s",
        "priceVersion": 1,
        "reviewFirst": 0,
        "approvalTimeout": "24h",
        "message": "Invoice workflow started",
    }

    stream = await api.client.get(f"/api/stream/{body['runId']}")
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-cache"
    assert stream.headers["Connection"] == "close"  # one stream per connection
    events = [event async for event in sse_events(stream)]
    assert events == [(0, progress(1, 3)), (1, progress(2, 3)), (2, progress(3, 3)), (3, complete(3))]
    assert list(events[0][1])[:6] == ["type", "current", "total", "accountId", "invoiceId", "message"]


async def test_event_bytes_are_id_and_data_lines(api: Api) -> None:
    run_id = await api.start(total=1)
    stream = await api.client.get(f"/api/stream/{run_id}")
    raw = await stream.read()
    assert raw == (
        b"id: 0\ndata: " + orjson.dumps(progress(1, 1)) + b"\n\n" + b"id: 1\ndata: " + orjson.dumps(complete(1)) + b"\n\n"
    )


async def test_start_defaults_total_50_and_delay_1s(api: Api) -> None:
    response = await api.post("/api/start", {"accountId": "acct_d"})
    body = await response.json()
    assert (body["total"], body["delay"]) == (50, "1s")
    cancelled = await api.post("/api/cancel", {"runId": body["runId"]})
    assert cancelled.status == 200


async def test_resume_from_start_index_and_last_event_id(api: Api) -> None:
    run_id = await api.start(total=4)
    everything = await api.events(run_id)
    assert [index for index, _ in everything] == [0, 1, 2, 3, 4]
    assert await api.events(run_id, params={"startIndex": "2"}) == everything[2:]
    assert await api.events(run_id, headers={"Last-Event-ID": "1"}) == everything[2:]
    # The header says what the browser already has, so it wins over the URL.
    assert await api.events(run_id, params={"startIndex": "0"}, headers={"Last-Event-ID": "3"}) == everything[4:]
    assert await api.events(run_id, params={"startIndex": "5"}) == []
    assert await api.events(run_id, params={"startIndex": "99"}) == []


async def test_live_stream_resumed_mid_batch_has_no_gap_and_no_duplicate(api: Api) -> None:
    run_id = await api.start(total=6, delay="50ms")
    first = await api.client.get(f"/api/stream/{run_id}")
    seen: list[int] = []
    async for event in sse_events(first):
        seen.append(event.id)
        if len(seen) == 2:
            break
    first.close()
    rest = await api.events(run_id, headers={"Last-Event-ID": str(seen[-1])})
    assert seen + [index for index, _ in rest] == list(range(7))
    assert rest[-1][1] == complete(6)


async def test_status_of_a_completed_run(api: Api) -> None:
    run_id = await api.start(total=2, delay="10ms")
    await api.events(run_id)
    body = await api.status(run_id)
    assert list(body) == [
        "runId",
        "kind",
        "status",
        "createdAt",
        "startedAt",
        "completedAt",
        "accountId",
        "total",
        "delay",
        "priceVersion",
        "current",
        "error",
        "queuePosition",
        "reviewFirst",
        "approvalTimeout",
        "waitingFor",
    ]
    for name in ("createdAt", "startedAt", "completedAt"):
        assert ISO_MS.fullmatch(body[name]), body[name]
    assert body["createdAt"] <= body["startedAt"] <= body["completedAt"]
    assert body == {
        **body,
        "runId": run_id,
        "kind": "batch",
        "status": "completed",
        "accountId": "acct_1",
        "total": 2,
        "delay": "10ms",
        "priceVersion": 1,
        "current": 2,
        "error": None,
        "queuePosition": None,
        "reviewFirst": 0,
        "approvalTimeout": "24h",
        "waitingFor": None,
    }


async def test_status_of_a_running_run_has_null_completion(api: Api) -> None:
    run_id = await api.start(total=5, delay="1h")
    stream = await api.client.get(f"/api/stream/{run_id}")
    assert await anext(sse_events(stream)) == (0, progress(1, 5))  # invoice 1 issued, then an hour's sleep
    stream.close()
    body = await api.status(run_id)
    assert ISO_MS.fullmatch(body["createdAt"]) and ISO_MS.fullmatch(body["startedAt"]), body
    assert body == {
        "runId": run_id,
        "kind": "batch",
        "status": "running",
        "createdAt": body["createdAt"],
        "startedAt": body["startedAt"],
        "completedAt": None,
        "accountId": "acct_1",
        "total": 5,
        "delay": "1h",
        "priceVersion": 1,
        "current": 1,
        "error": None,
        "queuePosition": None,
        "reviewFirst": 0,
        "approvalTimeout": "24h",
        "waitingFor": None,
    }
    await api.post("/api/cancel", {"runId": run_id})


async def test_status_errors(api: Api) -> None:
    missing = await api.client.get("/api/status")
    assert missing.status == 400
    assert await missing.json() == {"error": "runId query parameter is required: /api/status?runId=<id>"}
    unknown = await api.client.get("/api/status", params={"runId": "wrun_nope"})
    assert unknown.status == 404
    assert await unknown.json() == {"error": "Workflow run wrun_nope not found"}
    weird = await api.client.get("/api/status", params={"runId": "../../etc/passwd"})
    assert weird.status == 404
    assert (await weird.json())["error"].startswith("Workflow run")


async def test_stream_errors_are_json_before_any_event(api: Api) -> None:
    unknown = await api.client.get("/api/stream/wrun_nope")
    assert unknown.status == 404
    assert unknown.content_type == "application/json"
    assert await unknown.json() == {"error": "Workflow run wrun_nope not found"}
    run_id = await api.start(total=1)
    for params, headers, message in [
        ({"startIndex": "-1"}, {}, "startIndex must be an integer from 0 to 9007199254740992, got '-1'"),
        ({"startIndex": "x"}, {}, "startIndex must be an integer from 0 to 9007199254740992, got 'x'"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID must be a non-negative integer, got 'abc'"),
    ]:
        response = await api.client.get(f"/api/stream/{run_id}", params=params, headers=headers)
        assert response.status == 400
        assert await response.json() == {"error": message}


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_mid_batch_counts_match_everywhere(api: Api) -> None:
    run_id = await api.start(account_id="acct_c", total=20, delay="200ms")
    stream = await api.client.get(f"/api/stream/{run_id}")
    events = sse_events(stream)
    received = [await anext(events) for _ in range(3)]
    assert [event.data["type"] for event in received] == ["progress"] * 3

    response = await api.post("/api/cancel", {"runId": run_id})
    assert response.status == 200
    body = await response.json()
    issued = body["invoicesIssued"]
    assert body == {
        "runId": run_id,
        "message": "Workflow cancelled successfully",
        "previousStatus": "running",
        "currentStatus": "cancelled",
        "invoicesIssued": issued,
    }
    assert 3 <= issued < 20

    received += [event async for event in events]
    assert [event.id for event in received] == list(range(issued + 1))
    assert [event.data for event in received[:-1]] == [progress(n, 20, "acct_c") for n in range(1, issued + 1)]
    assert received[-1].data == {
        "type": "cancelled",
        "current": issued,
        "total": 20,
        "accountId": "acct_c",
        "message": f"Invoice batch cancelled after {issued} of 20 invoices",
    }

    health = await (await api.client.get("/healthz")).json()
    assert health["activeRuns"] == 0  # nothing of the run executes any more
    invoices = await (await api.client.get(f"/api/runs/{run_id}/invoices")).json()
    assert invoices["count"] == issued
    status = await api.status(run_id)
    assert (status["status"], status["current"]) == ("cancelled", issued)
    assert ISO_MS.fullmatch(status["completedAt"])

    again = await api.post("/api/cancel", {"runId": run_id})
    assert again.status == 200
    assert await again.json() == {**body, "previousStatus": "cancelled"}

    # Nothing is issued after the cancel returned: with the engine closed, and the run
    # cancelled and unwound (never resumed), what the file holds is final.
    await api.client.close()
    assert stored_invoice_ids(api.db) == [f"INV-acct_c-{n:04d}" for n in range(1, issued + 1)]
    assert sql_rows(api.db, "SELECT status, unwound FROM runs WHERE run_id = ?", (run_id,)) == [("cancelled", 1)]


async def test_cancel_of_a_finished_run_is_409(api: Api) -> None:
    run_id = await api.start(total=1)
    await api.events(run_id)
    response = await api.post("/api/cancel", {"runId": run_id})
    assert response.status == 409
    assert await response.json() == {
        "error": f"Cannot cancel workflow run {run_id} with status completed",
        "currentStatus": "completed",
    }


async def test_cancel_errors(api: Api) -> None:
    unknown = await api.post("/api/cancel", {"runId": "wrun_nope"})
    assert unknown.status == 404
    assert await unknown.json() == {"error": "Workflow run wrun_nope not found"}
    for body in ({}, {"runId": ""}, {"runId": 5}, {"runId": None}):
        response = await api.post("/api/cancel", body)
        assert response.status == 400
        assert (await response.json())["error"].startswith("runId is required")


# -- validation and hygiene ------------------------------------------------------------


async def test_invalid_start_bodies_are_400_and_start_nothing(api: Api) -> None:
    cases: list[tuple[bytes, str]] = [
        (b'{"total": 5}', "accountId is required"),
        (b'{"accountId": "a b"}', "accountId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -, got 'a b'"),
        (b'{"accountId": "a", "total": 0}', "total must be an integer from 1 to 10000, got 0"),
        (b'{"accountId": "a", "total": 10001}', "total must be an integer from 1 to 10000, got 10001"),
        (b'{"accountId": "a", "total": true}', "total must be an integer from 1 to 10000, got true"),
        (
            b'{"accountId": "a", "delay": "25h"}',
            'delay must be a duration string from "0s" to "24h" (e.g. "500ms", "1s", "5m"), got \'25h\'',
        ),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"", "Request body is not valid JSON: Input is a zero-length, empty document: line 1 column 1 (char 0)"),
        (b"{bad", "Request body is not valid JSON: "),
        (b'{"accountId": "a"', "Request body is not valid JSON: "),
        (b"\xff\xfe", "Request body is not valid JSON: "),
    ]
    for data, message in cases:
        response = await api.client.post("/api/start", data=data, headers=JSON)
        assert response.status == 400, data
        error = (await response.json())["error"]
        assert error.startswith(message) if message.endswith(": ") else error == message
    assert await api.app[engine_key].list_runs() == []


async def test_wrong_content_type_is_415(api: Api) -> None:
    body = b'{"accountId": "acct_1"}'
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        for path in ("/api/start", "/api/cancel"):
            response = await api.client.post(path, data=body, headers=headers)
            assert response.status == 415
            assert (await response.json())["error"].startswith("Content-Type must be application/json, got ")
    ok = await api.client.post("/api/start", data=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 200
    await api.post("/api/cancel", {"runId": (await ok.json())["runId"]})


async def test_body_over_64_kib_is_413(api: Api) -> None:
    big = orjson.dumps({"accountId": "acct_1", "pad": "x" * (64 * 1024)})
    response = await api.client.post("/api/start", data=big, headers=JSON)
    assert response.status == 413
    assert (await response.json())["error"].startswith("Request body too large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(20):
            yield b" " * 4096
        yield b'{"accountId": "acct_1"}'

    chunked = await api.client.post("/api/start", data=chunks(), headers=JSON)
    assert chunked.status == 413
    assert await api.app[engine_key].list_runs() == []


async def test_unknown_routes_and_methods_are_json(api: Api) -> None:
    missing = await api.client.get("/api/nope")
    assert missing.status == 404
    assert (await missing.json())["error"].startswith("Not found")
    post_missing = await api.post("/api/nope", {})
    assert post_missing.status == 404
    wrong_method = await api.client.get("/api/start")
    assert wrong_method.status == 405
    assert "Allow" in wrong_method.headers
    assert (await wrong_method.json())["error"].startswith("Method not allowed")


async def test_healthz(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "activeRuns": 0,
        "streamSubscribers": 0,
        "queuedChunks": 0,
        "openStreams": 0,
    }


# -- runs, timeline, invoices --------------------------------------------------------------


async def test_list_runs_newest_first_with_filters(api: Api) -> None:
    first = await api.start(account_id="a1", total=1)
    await api.events(first)
    second = await api.start(account_id="a2", total=3, delay="1h")
    third = await api.start(account_id="a3", total=1)
    await api.events(third)

    body = await (await api.client.get("/api/runs")).json()
    assert [run["runId"] for run in body["runs"]] == [third, second, first]
    assert body["runs"][2] == {**body["runs"][2], "accountId": "a1", "status": "completed", "current": 1, "total": 1}

    completed = await (await api.client.get("/api/runs", params={"status": "completed", "limit": "1"})).json()
    assert [run["runId"] for run in completed["runs"]] == [third]
    empty_status = await (await api.client.get("/api/runs?status=&limit=")).json()
    assert len(empty_status["runs"]) == 3

    for params, message in [
        ({"limit": "0"}, "limit must be an integer from 1 to 500, got '0'"),
        ({"limit": "501"}, "limit must be an integer from 1 to 500, got '501'"),
        ({"limit": "ten"}, "limit must be an integer from 1 to 500, got 'ten'"),
        ({"status": "done"}, "status must be one of pending, running, completed, failed, cancelled, got 'done'"),
    ]:
        response = await api.client.get("/api/runs", params=params)
        assert response.status == 400
        assert await response.json() == {"error": message}
    await api.post("/api/cancel", {"runId": second})


async def test_run_detail_has_the_timeline(api: Api) -> None:
    run_id = await api.start(total=2, delay="10ms")
    await api.events(run_id)
    response = await api.client.get(f"/api/runs/{run_id}")
    assert response.status == 200
    body = await response.json()
    assert (body["runId"], body["status"], body["current"]) == (run_id, "completed", 2)
    timeline = body["timeline"]
    assert [op["kind"] for op in timeline] == ["step", "sleep", "step", "sleep"]
    assert [op["seq"] for op in timeline] == sorted(op["seq"] for op in timeline)
    steps = [op for op in timeline if op["kind"] == "step"]
    for op in steps:
        assert op["status"] == "completed"
        assert "issue_invoice" in op["name"]
        assert [attempt["attempt"] for attempt in op["attempts"]] == [1]
        assert ISO_MS.fullmatch(op["attempts"][0]["startedAt"])
        assert op["attempts"][0]["error"] is None
    assert ISO_MS.fullmatch(timeline[1]["wakeAt"])
    missing = await api.client.get("/api/runs/wrun_nope")
    assert missing.status == 404


async def test_invoices_as_json_and_csv(api: Api) -> None:
    run_id = await api.start(account_id="acct_1", total=3)
    await api.events(run_id)
    body = await (await api.client.get(f"/api/runs/{run_id}/invoices")).json()
    assert body["runId"] == run_id
    assert body["count"] == 3
    first = body["invoices"][0]
    draft = price_invoice("acct_1", 1)
    assert first == {
        "invoiceId": "INV-acct_1-0001",
        "runId": run_id,
        "accountId": "acct_1",
        "n": 1,
        "customer": draft.customer,
        "priceVersion": 1,
        "lineItems": [item.to_json() for item in draft.items],
        "currency": "USD",
        "subtotalCents": draft.subtotal_cents,
        "taxCents": draft.tax_cents,
        "totalCents": draft.total_cents,
        "issuedAt": first["issuedAt"],
        "status": "issued",
        "voidedBy": None,
        "replaces": None,
    }
    assert ISO_MS.fullmatch(first["issuedAt"])
    assert [invoice["n"] for invoice in body["invoices"]] == [1, 2, 3]
    assert body["totalCents"] == sum(price_invoice("acct_1", n).total_cents for n in (1, 2, 3))

    response = await api.client.get(f"/api/runs/{run_id}/invoices", params={"format": "csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="invoices-{run_id}.csv"'
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [row["invoice_id"] for row in rows] == ["INV-acct_1-0001", "INV-acct_1-0002", "INV-acct_1-0003"]
    assert rows[0]["customer"] == draft.customer
    assert int(rows[0]["total_cents"]) == draft.total_cents
    assert rows[0]["issued_by_run"] == run_id
    assert rows[0]["price_version"] == "1"
    assert rows[0]["line_items"] == "; ".join(
        f"{item.quantity} x [{item.sku}] {item.description} @ {item.unit_price_cents}" for item in draft.items
    )

    bad = await api.client.get(f"/api/runs/{run_id}/invoices", params={"format": "xml"})
    assert bad.status == 400
    assert (await api.client.get("/api/runs/wrun_nope/invoices")).status == 404


async def test_a_second_batch_of_the_same_account_continues_its_numbering(api: Api) -> None:
    first = await api.start(account_id="acct_r", total=2)
    await api.events(first)
    second = await api.start(account_id="acct_r", total=3)
    events = await api.events(second)
    expected = [{**progress(n, 3, "acct_r"), "current": k} for k, n in ((1, 3), (2, 4), (3, 5))]
    for event in expected:
        event["message"] = f"Generated invoice {event['current']} of 3"
    assert [data for _, data in events] == [*expected, complete(3, "acct_r")]
    assert stored_invoice_ids(api.db) == [f"INV-acct_r-{n:04d}" for n in range(1, 6)]
    listing = await (await api.client.get(f"/api/runs/{second}/invoices")).json()
    assert listing["count"] == 3
    assert [invoice["invoiceId"] for invoice in listing["invoices"]] == ["INV-acct_r-0003", "INV-acct_r-0004", "INV-acct_r-0005"]
    assert [invoice["runId"] for invoice in listing["invoices"]] == [second] * 3
    assert (await api.status(second))["current"] == 3


# -- security ---------------------------------------------------------------------------


async def test_security_headers_on_html_json_and_sse(api: Api) -> None:
    page = await api.client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    json_response = await api.client.get("/healthz")
    run_id = await api.start(total=1)
    stream = await api.client.get(f"/api/stream/{run_id}")
    await stream.read()
    for response in (page, json_response, stream):
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_static_files_never_leave_static(api: Api) -> None:
    status, body = await raw_request(api, "GET /index.html HTTP/1.1")
    assert status == 200
    assert b"<html" in body.lower()
    for target in (
        "/../server.py",
        "/static/../server.py",
        "/%2e%2e/server.py",
        "/%2E%2E/server.py",
        "/static/%2e%2e/server.py",
        "/..%2fserver.py",
        "/%2e%2e%2fserver.py",
        "/static%2f..%2fserver.py",
        "/%252e%252e/server.py",
        "/..%5cserver.py",
        "/.%2e/server.py",
        "/static/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/.git/config",
        "/index.html%00.js",
    ):
        status, body = await raw_request(api, f"GET {target} HTTP/1.1")
        assert status == 404, target
        assert b"create_app" not in body and b"root:" not in body, target


async def test_foreign_origin_is_403_on_state_changing_routes(api: Api) -> None:
    body = {"accountId": "acct_1", "total": 1, "delay": "0s"}
    for origin in ("http://evil.example", "null", "http://localhost:1", "https://127.0.0.1"):
        response = await api.post("/api/start", body, headers={"Origin": origin})
        assert response.status == 403, origin
        assert (await response.json())["error"].startswith("Cross-origin request refused")
    cross_site = await api.post("/api/start", body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status == 403
    assert await api.app[engine_key].list_runs() == []

    own = f"http://127.0.0.1:{api.client.server.port}"
    same = await api.post("/api/start", body, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert same.status == 200
    read = await api.client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert read.status == 200  # reads are not state-changing; without CORS headers the page cannot see them


async def test_non_loopback_host_is_421(api: Api) -> None:
    for host in ("evil.example", "evil.example:3000", "127.0.0.1.evil.example", "10.0.0.1:3000", "[::2]:3000"):
        response = await api.client.get("/healthz", headers={"Host": host})
        assert response.status == 421, host
        assert (await response.json())["error"].startswith("Misdirected request")
    for host in ("localhost", "localhost:3000", "127.0.0.1", "127.1.2.3:80", "[::1]", "[::1]:3000", "LOCALHOST:1"):
        response = await api.client.get("/healthz", headers={"Host": host})
        assert response.status == 200, host


async def test_any_host_when_bound_beyond_loopback(api_factory: Callable[..., Awaitable[Api]]) -> None:
    open_api_ = await api_factory(host="0.0.0.0")
    response = await open_api_.client.get("/healthz", headers={"Host": "invoices.internal:3000"})
    assert response.status == 200


async def test_token_guards_every_api_route(api_factory: Callable[..., Awaitable[Api]]) -> None:
    api = await api_factory(token="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": "s3cret"}):
        response = await api.post("/api/start", {"accountId": "a", "total": 1}, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"].startswith("Missing or wrong token")
        assert (await api.client.get("/api/runs", headers=headers)).status == 401
    assert await api.app[engine_key].list_runs() == []

    started = await api.post("/api/start", {"accountId": "a", "total": 1, "delay": "0s"}, headers=good)
    assert started.status == 200
    run_id = (await started.json())["runId"]
    assert (await api.client.get("/api/status", params={"runId": run_id}, headers=good)).status == 200
    assert (await api.client.get(f"/api/stream/{run_id}")).status == 401
    assert (await api.client.get(f"/api/stream/{run_id}", params={"token": "nope"})).status == 401
    assert (await api.client.get("/api/runs", params={"token": "s3cret"})).status == 401  # ?token= is for SSE only
    events = await api.events(run_id, params={"token": "s3cret"})
    assert events[-1][1]["type"] == "complete"
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.get("/")).status == 200


# -- streams: keep-alive, shutdown, vanished clients ------------------------------------------


async def test_keep_alive_comments_while_idle(api_factory: Callable[..., Awaitable[Api]]) -> None:
    api = await api_factory(sse_keepalive=0.3)
    run_id = await api.start(total=2, delay="1h")
    stream = await api.client.get(f"/api/stream/{run_id}")
    lines = sse_lines(stream)
    seen = [await anext(lines) for _ in range(4)]
    assert seen == ["id: 0", f"data: {orjson.dumps(progress(1, 2)).decode()}", "", ": keep-alive"]
    await api.post("/api/cancel", {"runId": run_id})
    rest = [line async for line in lines]
    parser = SseParser()
    assert parse_sse("\n".join([*rest, ""]).encode(), parser) == [
        (
            1,
            {
                "type": "cancelled",
                "current": 1,
                "total": 2,
                "accountId": "acct_1",
                "message": "Invoice batch cancelled after 1 of 2 invoices",
            },
        )
    ]
    assert rest[-3] == "id: 1" and rest[-1] == ""  # the stream ends with that event
    assert set(parser.comments) <= {": keep-alive"}  # and more keep-alives, if the cancel took that long


async def test_open_streams_end_when_the_server_shuts_down(api: Api) -> None:
    run_id = await api.start(total=5, delay="1h")
    streams = [await api.client.get(f"/api/stream/{run_id}") for _ in range(3)]
    for stream in streams:
        assert await stream.content.readline() == b"id: 0\n"
    await asyncio.wait_for(api.client.server.close(), timeout=5)
    for stream in streams:
        rest = await asyncio.wait_for(stream.read(), timeout=5)
        assert rest.endswith(b"\n\n")
    assert len(api.app[hub_key]) == 0


async def test_vanished_clients_leave_nothing_behind(api: Api) -> None:
    run_id = await api.start(total=5, delay="1h")
    streams = [await api.client.get(f"/api/stream/{run_id}") for _ in range(5)]
    for stream in streams:
        await stream.content.readline()
    hub = api.app[hub_key]
    assert len(hub) == 5
    for stream in streams:
        stream.close()
    await until(lambda: len(hub) == 0, what="the server to notice that the 5 clients left")
    assert api.app[engine_key].stats()["stream_subscribers"] == 0
    await api.post("/api/cancel", {"runId": run_id})


async def test_stream_of_a_cancelled_run_ends_for_late_readers(api: Api) -> None:
    run_id = await api.start(total=3, delay="1h")
    stream = await api.client.get(f"/api/stream/{run_id}")
    await anext(sse_events(stream))
    stream.close()
    await api.post("/api/cancel", {"runId": run_id})
    events = await api.events(run_id)
    assert [data["type"] for _, data in events] == ["progress", "cancelled"]
    assert (await api.status(run_id))["status"] == str(RunStatus.CANCELLED)


# -- faults -----------------------------------------------------------------------------------


async def test_storage_faults_are_503() -> None:
    async def full(request: web.Request) -> web.Response:
        raise sqlite3.OperationalError("database or disk is full")

    async def readonly(request: web.Request) -> web.Response:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/full", full)
    app.router.add_get("/readonly", readonly)
    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/full")
        assert response.status == 503
        assert await response.json() == {
            "error": "Storage unavailable: database or disk is full. Try again when the fault is cleared."
        }
        assert (await client.get("/readonly")).status == 503
        last_resort = await client.get("/broken")
        assert last_resort.status == 500
        assert await last_resort.json() == {"error": "Internal error: the server logged the details"}


async def test_a_full_database_gives_503_then_recovers(api: Api) -> None:
    engine = api.app[engine_key]
    await engine.execute("CREATE TABLE ballast (pad BLOB)")
    pages = (await engine.fetchall("PRAGMA page_count"))[0][0]
    # max_page_count applies to the writer connection, where execute() runs it:
    # the file cannot grow, and the ballast takes up the room that is left.
    await engine.execute(f"PRAGMA max_page_count = {pages}")
    for size in (10_000, 1_000, 100, 10):
        for _ in range(200):
            try:
                await engine.execute("INSERT INTO ballast VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
                break
    statuses = []
    for n in range(50):
        response = await api.post("/api/start", {"accountId": f"full_{n}", "total": 1, "delay": "1h"})
        statuses.append(response.status)
        if response.status == 503:
            assert (await response.json())["error"].startswith("Storage unavailable: database or disk is full")
            break
    assert statuses[-1] == 503
    assert set(statuses) <= {200, 503}
    assert (await api.client.get("/api/runs")).status == 200  # reads still work

    # The PRAGMA can share a group commit with a run's retried write, which finds no
    # room and fails the whole commit; the runs retry only after a backoff of a
    # second, so the next try commits on its own.
    for _ in range(10):
        try:
            await engine.execute("PRAGMA max_page_count = 1073741823")
            break
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
    else:
        pytest.fail("the size limit could not be lifted in 10 tries")
    run_id = await api.start(account_id="acct_full", total=1)
    assert [data["type"] for _, data in await api.events(run_id)] == ["progress", "complete"]


async def test_a_client_that_stops_reading_is_dropped(
    api_factory: Callable[..., Awaitable[Api]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write to a client that stopped reading blocks once the socket buffers
    # are full; which takes megabytes on loopback, so the block is simulated
    # at aiohttp's write for the one request that asks for it.
    original = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes | bytearray | memoryview) -> None:
        request = self._req
        if request is not None and request.headers.get("X-Test-Stall"):
            await asyncio.Event().wait()
        await original(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)
    api = await api_factory(sse_write_timeout=0.5)
    run_id = await api.start(account_id="acct_stall", total=3, delay="100ms")
    stalled = await api.client.get(f"/api/stream/{run_id}", headers={"X-Test-Stall": "1"})
    assert stalled.status == 200
    events = await api.events(run_id)  # a reading client misses nothing meanwhile
    assert [index for index, _ in events] == [0, 1, 2, 3]
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(stalled.read(), timeout=5)
    assert len(api.app[hub_key]) == 0


REFUSE_PROGRESS = """CREATE TRIGGER refuse_progress BEFORE INSERT ON chunks
    WHEN json_extract(CAST(NEW.data AS TEXT), '$.type') = 'progress'
     AND json_extract(CAST(NEW.data AS TEXT), '$.current') >= ?
    BEGIN SELECT RAISE(ABORT, 'progress event refused by the test'); END"""


@pytest.mark.parametrize(
    ("total", "delay", "held", "issued"),
    [
        (3, "10ms", 2, 2),  # one at a time: the held step finishes, no other starts
        (3, "10ms", 3, 3),  # the last step: the zero sleep after it notices the cancel
        (ZERO_DELAY_WINDOW + 8, "0s", 2, ZERO_DELAY_WINDOW),  # a window in flight: all finish, no next window
        (3, "0s", 3, 3),
    ],
)
async def test_cancel_during_a_step_counts_the_invoices_in_flight(
    api: Api, total: int, delay: str, held: int, issued: int
) -> None:
    """Steps in flight finish and are counted; cancelling during the last one still ends 'cancelled'.

    The steps are held in flight by SQLite itself. A trigger refuses the progress events from
    invoice ``held`` on, so the run stops on that write fault as after a crash, the step of
    invoice ``held`` unjournaled. The test then holds the write lock, as another writer would,
    and drops the trigger in that transaction. The engine resumes the run by itself (reading
    only), and the steps of the held invoice's window block on their first write; the cancel
    comes while they do. Releasing the lock lets them finish, then the run unwind.
    """
    engine = api.app[engine_key]
    window = 1 if delay != "0s" else ZERO_DELAY_WINDOW
    window_last = min(total, ((held - 1) // window + 1) * window)  # the last invoice of the held one's window
    lock = sqlite3.connect(api.db, isolation_level=None)
    try:
        lock.execute(REFUSE_PROGRESS.replace("?", str(held)))  # no parameters in DDL
        run_id = await api.start(account_id="acct_h", total=total, delay=delay)
        run = engine.get_run(run_id)
        await until(lambda: engine.stats()["active_runs"] == 0, what=f"the run to stop on invoice {held}'s refused event")
        assert await run.status() is RunStatus.RUNNING  # stopped, not failed: it resumes once writes succeed
        # The writer takes submissions in order: once this returns, every write the stopped run
        # had queued has been tried (its events refused) before the lock is taken. One still
        # queued would commit after the resume read the journal, and fault the resumed run again.
        await engine.execute("SELECT 1")

        lock.execute("BEGIN IMMEDIATE")
        lock.execute("DROP TRIGGER refuse_progress")
        ((journaled,),) = lock.execute(
            "SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'step' AND state = 'completed'", (run_id,)
        ).fetchall()
        in_flight = window_last - journaled  # every step before the window is journaled, none after it started
        await until(
            lambda: engine.stats()["tasks"] == 1 + in_flight,
            what=f"the resumed run's {in_flight} steps to wait for the write lock",
        )
        cancelling = asyncio.create_task(api.post("/api/cancel", {"runId": run_id}))
        await until(lambda: _status_is(run, RunStatus.CANCELLED), what="the cancel to be requested")
        assert not cancelling.done()  # its commit, too, waits for the lock
        lock.execute("COMMIT")
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.execute("DROP TRIGGER IF EXISTS refuse_progress")
        lock.close()

    response = await cancelling
    assert response.status == 200
    assert (await response.json())["invoicesIssued"] == issued
    # The cancel returned once the steps in flight had finished and the run had unwound.
    steps = sql_rows(api.db, "SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'step' AND state = 'completed'", (run_id,))
    assert steps == [(issued,)]
    assert sql_rows(api.db, "SELECT status, unwound FROM runs WHERE run_id = ?", (run_id,)) == [("cancelled", 1)]
    events = await api.events(run_id)
    assert [data for _, data in events[:-1]] == [progress(n, total, "acct_h") for n in range(1, issued + 1)]
    assert events[-1] == (
        issued,
        {
            "type": "cancelled",
            "current": issued,
            "total": total,
            "accountId": "acct_h",
            "message": f"Invoice batch cancelled after {issued} of {total} invoices",
        },
    )
    assert stored_invoice_ids(api.db) == [f"INV-acct_h-{n:04d}" for n in range(1, issued + 1)]


async def _status_is(run: Run, status: RunStatus) -> bool:
    return await run.status() is status


async def test_zero_delay_batches_keep_events_in_invoice_order(api: Api) -> None:
    run_id = await api.start(account_id="acct_o", total=203)
    events = await api.events(run_id)
    assert [data for _, data in events] == [progress(n, 203, "acct_o") for n in range(1, 204)] + [complete(203, "acct_o")]
    assert [index for index, _ in events] == list(range(204))
    timeline = (await (await api.client.get(f"/api/runs/{run_id}")).json())["timeline"]
    assert [op["kind"] for op in timeline] == ["step"] * 203 + ["sleep"]


async def test_terminal_event_arrives_after_the_final_status_is_committed(api: Api) -> None:
    # A client that reacts to "complete" with GET /api/status must see "completed".
    for attempt in range(60):
        run_id = await api.start(account_id=f"order_{attempt}", total=1, delay="0s")
        stream = await api.client.get(f"/api/stream/{run_id}")
        async for event in sse_events(stream):
            if event.data["type"] == "complete":
                status = await api.status(run_id)
                assert (status["status"], status["completedAt"] is not None) == ("completed", True)
                break
        stream.close()


async def test_run_detail_of_a_failed_batch_shows_the_error_with_its_stack(api: Api) -> None:
    engine = api.app[engine_key]
    run = await engine.start(generate_invoices, "acct_f", 2, "0s", 999)  # a price list that does not exist
    with pytest.raises(RunFailed):
        await run.result(timeout=10)
    body = await (await api.client.get(f"/api/runs/{run.run_id}")).json()
    summary = "StepFailed: Step invoices.workflow.issue_invoice failed: FatalError: price list version 999 does not exist"
    assert (body["status"], body["error"], body["errorType"]) == ("failed", summary, "StepFailed")
    assert body["errorMessage"] == summary.removeprefix("StepFailed: ")
    assert body["errorStack"].startswith("Traceback (most recent call last):")
    assert body["errorStack"].rstrip().endswith("FatalError: price list version 999 does not exist")
    (attempt,) = body["timeline"][0]["attempts"]
    assert attempt["error"] == "FatalError: price list version 999 does not exist"
    assert attempt["stack"].rstrip().endswith("FatalError: price list version 999 does not exist")
    ok = await api.start(total=1)
    await api.events(ok)
    done = await (await api.client.get(f"/api/runs/{ok}")).json()
    assert (done["errorType"], done["errorMessage"], done["errorStack"]) == (None, None, None)
