"""durable.fetch against a real aiohttp server on 127.0.0.1 that counts the requests it gets."""

from __future__ import annotations

import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from harness import until

from durable import Engine, FetchResponse, RunFailed, create_hook, fetch, workflow
from durable._fetch import retry_after


@dataclass
class Upstream:
    base: str
    hits: Counter[str] = field(default_factory=Counter)


def _app(hits: Counter[str]) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        hits["ok"] += 1
        body = await request.read()
        return web.json_response({"method": request.method, "got": body.decode(), "tag": request.headers.get("X-Tag")})

    async def flaky(request: web.Request) -> web.Response:
        hits["flaky"] += 1
        if hits["flaky"] <= 2:
            return web.Response(status=503, headers={"Retry-After": "0"}, text="busy")
        return web.Response(text="finally", headers={"Set-Cookie": "a=1"})

    async def limited(request: web.Request) -> web.Response:
        hits["limited"] += 1
        if hits["limited"] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text="allowed")

    async def missing(request: web.Request) -> web.Response:
        hits["missing"] += 1
        return web.Response(status=404, text="no such thing")

    async def down(request: web.Request) -> web.Response:
        hits["down"] += 1
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/limited", limited)
    app.router.add_get("/missing", missing)
    app.router.add_get("/down", down)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    hits: Counter[str] = Counter()
    server = TestServer(_app(hits), host="127.0.0.1")
    await server.start_server()
    yield Upstream(str(server.make_url("")).rstrip("/"), hits)
    await server.close()


async def hook_ready(engine: Engine, token: str) -> None:
    async def registered() -> bool:
        return any(info.token == token for info in await engine.list_hooks())

    await until(registered, what=f"hook {token}")


async def _summary(response: FetchResponse) -> list[Any]:
    return [response.status, response.ok, response.headers.get("content-type"), await response.json()]


@workflow(name="fetch.post_then_wait")
async def post_then_wait(base: str) -> list[Any]:
    response = await fetch(f"{base}/ok", method="post", headers={"X-Tag": "t"}, body="hello")
    summary = await _summary(response)
    summary.append(await create_hook(token="fetch:finish"))
    return summary


async def test_fetch_is_journaled_and_replays_without_a_request(db_path: Path, upstream: Upstream) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(post_then_wait, upstream.base)
        await hook_ready(engine, "fetch:finish")
    assert upstream.hits["ok"] == 1
    async with Engine(db_path) as engine:  # the run resumes: the response comes from the journal
        await hook_ready(engine, "fetch:finish")
        await engine.resume_hook("fetch:finish", "done")
        expected = [200, True, "application/json; charset=utf-8", {"method": "POST", "got": "hello", "tag": "t"}, "done"]
        assert await engine.get_run(run.run_id).result(timeout=5) == expected
    assert upstream.hits["ok"] == 1  # no new request on replay


@workflow(name="fetch.retries")
async def with_retries(base: str) -> list[Any]:
    flaky = await fetch(f"{base}/flaky")
    limited = await fetch(f"{base}/limited")
    missing = await fetch(f"{base}/missing")
    return [
        [flaky.status, await flaky.text(), flaky.headers["set-cookie"]],
        [limited.status, await limited.text()],
        [missing.status, missing.ok, await missing.text()],
    ]


async def test_5xx_and_429_are_retried_honouring_retry_after(engine: Engine, upstream: Upstream, sql: sqlite3.Connection) -> None:
    run = await engine.start(with_retries, upstream.base)
    assert await run.result(timeout=10) == [[200, "finally", "a=1"], [200, "allowed"], [404, False, "no such thing"]]
    assert upstream.hits == Counter({"flaky": 3, "limited": 2, "missing": 1})  # a 404 is an answer, not retried
    attempts = sql.execute(
        "SELECT seq, attempt, error, retry_at - ended_at FROM attempts WHERE run_id = ? ORDER BY seq, attempt", (run.run_id,)
    ).fetchall()
    flaky_url, limited_url = f"{upstream.base}/flaky", f"{upstream.base}/limited"
    assert [row[:3] for row in attempts] == [
        (0, 1, f"RetryableError: GET {flaky_url}: HTTP 503"),
        (0, 2, f"RetryableError: GET {flaky_url}: HTTP 503"),
        (1, 1, f"RetryableError: GET {limited_url}: HTTP 429"),
    ]
    assert [round(row[3], 6) for row in attempts] == [0.0, 0.0, 1.0]  # the delays Retry-After asked for
    names = sql.execute("SELECT DISTINCT name FROM ops WHERE run_id = ?", (run.run_id,)).fetchall()
    assert names == [("durable.fetch",)]


@workflow(name="fetch.gives_up")
async def gives_up(url: str) -> None:
    await fetch(url, max_retries=1)


async def test_failing_for_good_raises_step_failed(engine: Engine, upstream: Upstream) -> None:
    run = await engine.start(gives_up, f"{upstream.base}/down")
    with pytest.raises(RunFailed, match=r"StepFailed: Step durable.fetch failed: RetryableError: GET .*/down: HTTP 500"):
        await run.result(timeout=10)
    assert upstream.hits["down"] == 2


@workflow(name="fetch.until_up")
async def until_up(url: str) -> int:
    return (await fetch(url, timeout=5)).status


async def test_connection_errors_are_retried(engine: Engine) -> None:
    with socket.socket() as probe:  # a port nothing listens on, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hits: Counter[str] = Counter()
    run = await engine.start(until_up, f"http://127.0.0.1:{port}/ok")
    await until(lambda: _attempts(engine.path, run.run_id) == 1, what="the first attempt to fail")
    server = TestServer(_app(hits), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        assert await run.result(timeout=10) == 200  # the retry, after the default 1 s backoff
    finally:
        await server.close()
    assert hits["ok"] == 1


def _attempts(path: Path, run_id: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ?", (run_id,)).fetchone()[0])
    finally:
        conn.close()


async def test_fetch_outside_a_workflow_is_one_request(upstream: Upstream) -> None:
    response = await fetch(f"{upstream.base}/down")
    assert (response.status, response.ok, upstream.hits["down"]) == (500, False, 1)


def test_retry_after_values() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert retry_after("120", now) == 120.0
    assert retry_after(format_datetime(datetime(2026, 1, 2, 3, 4, 35, tzinfo=UTC), usegmt=True), now) == 30.0
    assert retry_after("Fri, 01 Jan 2021 00:00:00 GMT", now) == 0.0  # in the past: no wait
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None
