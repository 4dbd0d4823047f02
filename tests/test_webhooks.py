"""Webhooks and durable.web: requests resuming runs over a real loopback server, responses back."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from harness import until

from durable import (
    Engine,
    EngineClosed,
    HookNotFound,
    RunFailed,
    WebhookRequest,
    WebhookResponse,
    create_hook,
    create_webhook,
    define_hook,
    get_workflow_metadata,
    step,
    workflow,
)
from durable.web import WEBHOOK_PREFIX, make_app, make_webhook_app
from invoices import create_app


@dataclass
class Site:
    engine: Engine
    http: aiohttp.ClientSession
    base: str


# How long a manual webhook waits for its answer: generous where the answer comes (a
# loaded machine must not turn it into a 504), short where the 504 is what is tested.
ANSWER_TIMEOUT_S = 30.0
NO_ANSWER_TIMEOUT_S = 0.3


@pytest.fixture
def response_timeout() -> float:
    return ANSWER_TIMEOUT_S


@pytest.fixture
async def site(engine: Engine, response_timeout: float) -> AsyncIterator[Site]:
    """An app mounting durable.web twice, as the invoices service does, on 127.0.0.1."""
    app = web.Application()
    app.add_subapp("/wf/", make_app(engine, max_body_bytes=1024, response_timeout=response_timeout))
    app.add_subapp(WEBHOOK_PREFIX, make_webhook_app(engine, max_body_bytes=1024, response_timeout=response_timeout))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Site(engine, http, str(server.make_url("")).rstrip("/"))
    await server.close()


async def hook_ready(engine: Engine, token: str) -> None:
    async def registered() -> bool:
        return any(info.token == token for info in await engine.list_hooks())

    await until(registered, what=f"hook {token}")


async def _request_fields(request: WebhookRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "type": request.headers.get("content-type"),
        "tags": request.headers.get("x-tag"),
        "text": await request.text(),
        "json": await request.json(),
        "token": request.token,
    }


@workflow(name="webhooks.plain")
async def plain(token: str) -> dict[str, Any]:
    return await _request_fields(await create_webhook(token=token))


@workflow(name="webhooks.static")
async def static(token: str) -> str:
    webhook = create_webhook(
        token=token, respond_with={"status": 201, "headers": {"Content-Type": "text/plain"}, "body": "thanks"}
    )
    return await (await webhook).text()


@workflow(name="webhooks.manual")
async def manual(token: str, requests: int) -> list[str]:
    webhook = create_webhook(token=token, respond_with="manual")
    bodies = []
    async for request in webhook:
        text = await request.text()
        answered = await request.respond_with(status=200, headers={"X-Run": get_workflow_metadata().run_id}, body=f"got {text}")
        bodies.append(f"{text}:{answered}")
        if len(bodies) == requests:
            return bodies
    return bodies


@workflow(name="webhooks.manual_step")
async def manual_from_step(token: str) -> str:
    request = await create_webhook(token=token, respond_with="manual")

    @step(name="webhooks.reply")
    async def reply() -> bool:  # a step answers (here it closes over the request)
        return await request.respond_with(status=418, body=b"\x00teapot")

    return f"answered={await reply()}"


@workflow(name="webhooks.silent")
async def silent(token: str, finish: bool) -> str:
    request = await create_webhook(token=token, respond_with="manual")
    if finish:
        return "ended without answering"
    await create_hook(token=f"{token}:hold")  # never answers, keeps the run
    return request.method


async def test_default_webhook_answers_202_empty_and_delivers_the_request(site: Site) -> None:
    run = await site.engine.start(plain, "wh-plain")
    await hook_ready(site.engine, "wh-plain")
    headers = {"Content-Type": "application/json", "X-Tag": "a"}
    url = f"{site.base}{WEBHOOK_PREFIX}/wh-plain?x=1"
    async with site.http.post(url, data=b'{"event": "paid"}', headers=headers) as response:
        assert (response.status, await response.read()) == (202, b"")
    assert await run.result(timeout=5) == {
        "method": "POST",
        "url": url,
        "type": "application/json",
        "tags": "a",
        "text": '{"event": "paid"}',
        "json": {"event": "paid"},
        "token": "wh-plain",
    }
    # Released with the run: the token is unknown now, and the answer says nothing more.
    async with site.http.post(url, data=b"{}") as response:
        assert (response.status, await response.read()) == (404, b"")


async def test_static_response(site: Site) -> None:
    run = await site.engine.start(static, "wh-static")
    await hook_ready(site.engine, "wh-static")
    async with site.http.put(f"{site.base}{WEBHOOK_PREFIX}/wh-static", data=b"payload") as response:
        assert (response.status, response.headers["Content-Type"], await response.text()) == (201, "text/plain", "thanks")
    assert await run.result(timeout=5) == "payload"


async def test_manual_responses_from_the_body(site: Site) -> None:
    run = await site.engine.start(manual, "wh-manual", 2)
    await hook_ready(site.engine, "wh-manual")
    answers = []
    for text in ("one", "two"):
        async with site.http.post(f"{site.base}{WEBHOOK_PREFIX}/wh-manual", data=text.encode()) as response:
            answers.append((response.status, response.headers["X-Run"], await response.text()))
    assert answers == [(200, run.run_id, "got one"), (200, run.run_id, "got two")]
    assert await run.result(timeout=5) == ["one:True", "two:True"]


async def test_manual_response_from_a_step(site: Site, sql: sqlite3.Connection) -> None:
    run = await site.engine.start(manual_from_step, "wh-step")
    await hook_ready(site.engine, "wh-step")
    async with site.http.get(f"{site.base}{WEBHOOK_PREFIX}/wh-step") as response:
        assert (response.status, await response.read()) == (418, b"\x00teapot")
    assert await run.result(timeout=5) == "answered=True"
    steps = sql.execute("SELECT name, result FROM ops WHERE run_id = ? AND kind = 'step'", (run.run_id,)).fetchall()
    assert steps == [("webhooks.reply", b"true")]


@pytest.mark.parametrize("response_timeout", [NO_ANSWER_TIMEOUT_S])
async def test_manual_response_that_does_not_come(site: Site) -> None:
    run = await site.engine.start(silent, "wh-silent", False)
    await hook_ready(site.engine, "wh-silent")
    async with site.http.post(f"{site.base}{WEBHOOK_PREFIX}/wh-silent", data=b"x") as response:
        assert (response.status, await response.read()) == (504, b"")  # after response_timeout
    await hook_ready(site.engine, "wh-silent:hold")
    await run.cancel()


async def test_manual_webhook_whose_run_ends_without_answering(engine: Engine) -> None:
    run = await engine.start(silent, "wh-ends", True)
    await hook_ready(engine, "wh-ends")
    response = await engine.resume_webhook("wh-ends", method="POST", body=b"x", timeout=30)
    assert response == WebhookResponse(500, {}, b"")  # at once, not after 30 s
    assert await run.result(timeout=5) == "ended without answering"


async def test_webhook_body_is_bounded(site: Site, sql: sqlite3.Connection) -> None:
    run = await site.engine.start(plain, "wh-big")
    await hook_ready(site.engine, "wh-big")
    async with site.http.post(f"{site.base}{WEBHOOK_PREFIX}/wh-big", data=b"x" * 1025) as response:
        assert (response.status, await response.read()) == (413, b"")
    assert sql.execute("SELECT COUNT(*) FROM hook_payloads").fetchone() == (0,)
    await run.cancel()


@workflow(name="webhooks.default_token")
async def default_token() -> list[str]:
    webhook = create_webhook()
    return [webhook.token, webhook.path]


async def test_default_webhook_tokens_are_unguessable(engine: Engine) -> None:
    first = await (await engine.start(default_token)).result(timeout=5)
    second = await (await engine.start(default_token)).result(timeout=5)
    assert first[0] != second[0]
    assert len(first[0]) == 32  # 192 random bits, URL-safe
    assert first[1] == f"/.well-known/workflow/v1/webhook/{first[0]}"


async def test_webhook_and_hook_tokens_do_not_mix(engine: Engine) -> None:
    run = await engine.start(plain, "wh-kind")
    await hook_ready(engine, "wh-kind")
    with pytest.raises(HookNotFound, match="No active hook has the token 'wh-kind'"):
        await engine.resume_hook("wh-kind", {"x": 1})
    with pytest.raises(HookNotFound, match="No active webhook has the token 'nope'"):
        await engine.resume_webhook("nope")
    with pytest.raises(RunFailed, match="ValueError: respond_with must be None, 'manual', or a mapping"):
        await (await engine.start(bad_config, "automatic")).result(timeout=5)
    await engine.resume_webhook("wh-kind", method="DELETE", url="http://x/y", headers={"X-Tag": "b"}, body=b'"z"')
    result = await run.result(timeout=5)
    assert (result["method"], result["url"], result["tags"], result["json"]) == ("DELETE", "http://x/y", "b", "z")


@workflow(name="webhooks.bad_config")
async def bad_config(respond_with: Any) -> None:
    create_webhook(respond_with=respond_with)


@workflow(name="webhooks.hook")
async def hook_wf(token: str) -> Any:
    return await create_hook(token=token, metadata={"who": "tester"})


def whole_number(value: Any) -> int:
    if not isinstance(value, int):
        raise ValueError("amount: expected int")
    return value


Amount = define_hook(whole_number)


@workflow(name="webhooks.typed")
async def typed_wf() -> int:
    value: int = await Amount.create(token="typed")
    return value


async def _post(site: Site, path: str, body: bytes, **headers: str) -> tuple[int, Any]:
    async with site.http.post(f"{site.base}{path}", data=body, headers={"Content-Type": "application/json", **headers}) as r:
        return r.status, await r.json()


async def test_post_hooks_route(site: Site, sql: sqlite3.Connection) -> None:
    run = await site.engine.start(hook_wf, "review:d1")
    await hook_ready(site.engine, "review:d1")
    info = await site.engine.get_hook_by_token("review:d1")
    status, body = await _post(site, "/wf/hooks/review:d1", b'{"ok": true}', **{"Idempotency-Key": "k"})
    created = info.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{info.created_at.microsecond // 1000:03d}Z"
    expected = {"token": "review:d1", "runId": run.run_id, "kind": "hook", "metadata": {"who": "tester"}, "createdAt": created}
    assert (status, body) == (200, expected)
    assert await _post(site, "/wf/hooks/review:d1", b'{"ok": "again"}', **{"Idempotency-Key": "k"}) == (200, expected)
    assert await run.result(timeout=5) == {"ok": True}
    assert sql.execute("SELECT COUNT(*) FROM hook_payloads").fetchone() == (1,)
    status, body = await _post(site, "/wf/hooks/review:d1", b"{}")
    assert status == 404 and body["error"].startswith("No active hook has the token 'review:d1'")


async def test_post_hooks_route_errors(site: Site) -> None:
    webhook_run = await site.engine.start(plain, "a-webhook")
    typed_run = await site.engine.start(typed_wf)
    await hook_ready(site.engine, "a-webhook")
    await hook_ready(site.engine, "typed")
    assert await _post(site, "/wf/hooks/typed", b"{not json") == (
        400,
        {"error": "Request body is not valid JSON: unexpected character, expected a string key: line 1 column 2 (char 1)"},
    )
    assert await _post(site, "/wf/hooks/typed", b'"seven"') == (400, {"error": "amount: expected int"})
    status, body = await _post(site, "/wf/hooks/a-webhook", b"{}")
    assert (status, body) == (
        409,
        {"error": "Token 'a-webhook' belongs to a webhook: send the request to its webhook URL instead"},
    )
    status, body = await _post(site, "/wf/hooks/typed", b"1" * 1025)
    assert (status, body) == (413, {"error": "Request body too large: the limit is 1024 bytes"})
    async with site.http.post(f"{site.base}/wf/hooks/typed", data=b"7", headers={"Content-Type": "text/plain"}) as r:
        assert (r.status, await r.json()) == (415, {"error": "Content-Type must be application/json, got 'text/plain'"})
    assert (await _post(site, "/wf/hooks/typed", b"7"))[0] == 200
    assert await typed_run.result(timeout=5) == 7
    await webhook_run.cancel()


async def test_invoices_mounts_webhooks_at_the_root_without_the_api_token(tmp_path: Path) -> None:
    app = create_app(tmp_path / "invoices.db", token="s3cret")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as http:
            # The webhook route: no bearer token asked, Origin not checked, Host guard kept.
            url = f"{base}/.well-known/workflow/v1/webhook/unknown-token"
            async with http.post(url, data=b"{}", headers={"Origin": "https://elsewhere.example"}) as r:
                assert (r.status, await r.read()) == (404, b"")
            async with http.post(url, data=b"{}", headers={"Host": "evil.example"}) as r:
                assert r.status == 421
            # The hooks route: under the API's token and Origin rules.
            hooks = f"{base}/workflows/hooks/unknown-token"
            async with http.post(hooks, data=b"{}", headers={"Content-Type": "application/json"}) as r:
                assert r.status == 401
            async with http.post(hooks, data=b"{}", headers={**auth, "Origin": "https://elsewhere.example"}) as r:
                assert r.status == 403
            async with http.post(hooks, data=b"{}", headers=auth) as r:
                body = orjson.loads(await r.read())
                assert (r.status, body["error"][:40]) == (404, "No active hook has the token 'unknown-to")
    finally:
        await server.close()


async def test_closing_the_engine_ends_a_waiting_manual_webhook(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "closing.db")
    async with engine:
        await engine.start(silent, "wh-close", False)
        await hook_ready(engine, "wh-close")
        waiting = asyncio.ensure_future(engine.resume_webhook("wh-close", body=b"x", timeout=60))
        await until(lambda: _payloads(engine.path) == 1, what="the request to be stored")
    with pytest.raises(EngineClosed, match="while a webhook waited for its response"):
        await waiting


def _payloads(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM hook_payloads").fetchone()[0])
    finally:
        conn.close()
