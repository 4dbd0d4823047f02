"""The inspector's HTTP endpoints: on a bare aiohttp app with an engine, and mounted in the invoices service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from harness import until
from inspect_workflows import WORKFLOWS, lift, pipeline, retrying, sleeper

from durable import Engine, Run, RunStatus
from durable.web import add_inspector
from invoices import create_app

JSON = {"Content-Type": "application/json"}
Client = TestClient[web.Request, web.Application]


@dataclass
class Inspector:
    client: Client
    engine: Engine
    gate: str
    failed: Run
    done: Run
    asleep: Run

    async def get(self, path: str, status: int = 200) -> Any:
        response = await self.client.get(path)
        assert response.status == status, await response.text()
        return await response.json()

    async def post(self, path: str, body: Any, status: int = 200) -> Any:
        response = await self.client.post(path, data=orjson.dumps(body), headers=JSON)
        assert response.status == status, await response.text()
        return await response.json()


@pytest.fixture
async def inspector(tmp_path: Path) -> AsyncIterator[Inspector]:
    gate = tmp_path / "gate"
    gate.touch()
    async with Engine(tmp_path / "journal.db", workflows=WORKFLOWS) as engine:
        failed = await engine.start(pipeline, str(gate), 2)
        with pytest.raises(Exception, match="card declined"):
            await failed.result(timeout=10)
        done = await engine.start(retrying, str(gate))
        await done.result(timeout=10)
        asleep = await engine.start(sleeper, str(gate), "1h")

        async def sleeping() -> bool:
            return len(await asleep.timeline()) == 2

        await until(sleeping, what="the sleeper to sleep")
        app = web.Application()
        add_inspector(app, engine)
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            yield Inspector(client, engine, str(gate), failed, done, asleep)
        finally:
            await client.close()


async def test_run_list_pages_and_filters(inspector: Inspector) -> None:
    infos = [await run.describe() for run in (inspector.asleep, inspector.done, inspector.failed)]
    first = await inspector.get("/runs.json?limit=2")
    assert [row["run_id"] for row in first["runs"]] == [infos[0].run_id, infos[1].run_id]
    assert first["runs"][0] == {
        "run_id": infos[0].run_id,
        "workflow_name": "inspect.sleeper",
        "status": "running",
        "created_at": first["runs"][0]["created_at"],
        "started_at": first["runs"][0]["started_at"],
        "completed_at": None,
        "error": None,
        "forked_from": None,
        "forked_at_seq": None,
        "parent_run_id": None,
    }
    rest = await inspector.get(f"/runs.json?limit=2&after={first['next']}")
    assert ([row["run_id"] for row in rest["runs"]], rest["next"]) == ([infos[2].run_id], None)
    failed = await inspector.get("/runs.json?status=failed")
    assert [row["run_id"] for row in failed["runs"]] == [infos[2].run_id]
    named = await inspector.get("/runs.json?workflow=inspect.retrying")
    assert [row["run_id"] for row in named["runs"]] == [infos[1].run_id]
    assert await inspector.get("/workflows.json") == {"workflows": ["inspect.pipeline", "inspect.retrying", "inspect.sleeper"]}
    assert await inspector.get("/runs.json?status=lost", 400) == {
        "error": "status must be one of pending, running, completed, failed, cancelled, got 'lost'"
    }
    assert await inspector.get("/runs.json?limit=5000", 400) == {"error": "limit must be an integer from 1 to 1000, got '5000'"}
    assert await inspector.get("/runs.json?after=yesterday", 400) == {
        "error": "cursor must be a value from a previous page's 'next', got 'yesterday'"
    }


async def test_run_json_and_not_found(inspector: Inspector) -> None:
    data = await inspector.get(f"/runs/{inspector.failed.run_id}.json")
    assert (data["status"], data["args"], data["output"], data["hooks"]) == ("failed", [inspector.gate, 2], None, [])
    assert [(op["seq"], op["name"], op["status"]) for op in data["timeline"]] == [
        (0, "inspect.record", "completed"),
        (2, "inspect.record", "completed"),
        (4, "inspect.guarded", "failed"),
    ]
    assert data["streams"] == [{"namespace": "", "length": 2, "closed": False}]
    assert await inspector.get("/runs/wrun_nope.json", 404) == {"error": "Workflow run wrun_nope not found"}
    assert await inspector.get("/hooks.json") == {"hooks": []}


async def test_cancel_resume_fork(inspector: Inspector) -> None:
    asleep, failed, done = inspector.asleep.run_id, inspector.failed.run_id, inspector.done.run_id
    response = await inspector.client.post(f"/runs/{asleep}/cancel", data="{}", headers={"Content-Type": "text/plain"})
    assert (response.status, await response.json()) == (415, {"error": "Content-Type must be application/json, got 'text/plain'"})
    assert await inspector.post(f"/runs/{asleep}/cancel", {}) == {
        "run_id": asleep,
        "previous_status": "running",
        "status": "cancelled",
    }
    assert await inspector.post(f"/runs/{done}/cancel", {}, 409) == {
        "error": f"Cannot cancel workflow run {done} with status completed"
    }
    assert await inspector.post(f"/runs/{done}/resume", {}, 409) == {
        "error": f"Cannot continue workflow run {done}: its status is completed; only failed or cancelled runs can be resumed"
    }
    lift(inspector.gate)
    assert await inspector.post(f"/runs/{failed}/resume", {}) == {
        "run_id": failed,
        "previous_status": "failed",
        "status": "running",
    }
    assert await inspector.failed.result(timeout=10) == {"total": 10, "receipt": "charged"}

    assert await inspector.post(f"/runs/{failed}/fork", {"from_seq": "2"}, 400) == {
        "error": "from_seq must be an integer >= 0 (the step to run again), got '2'"
    }
    fork = await inspector.post(f"/runs/{failed}/fork", {"from_seq": 2})
    assert (fork["forked_from"], fork["forked_at_seq"]) == (failed, 2)
    assert await inspector.engine.get_run(fork["run_id"]).result(timeout=10) == {"total": 10, "receipt": "charged"}
    assert await inspector.post("/runs/wrun_nope/fork", {"from_seq": 0}, 404) == {"error": "Workflow run wrun_nope not found"}


async def test_stream_as_server_sent_events(inspector: Inspector) -> None:
    response = await inspector.client.get(f"/runs/{inspector.failed.run_id}/stream?from=1")
    assert (response.status, response.headers["Content-Type"]) == (200, "text/event-stream")
    assert (await response.read()).decode() == 'id: 1\ndata: {"index":1,"value":{"step":1}}\n\nevent: end\ndata: {}\n\n'
    resumed = await inspector.client.get(f"/runs/{inspector.failed.run_id}/stream", headers={"Last-Event-ID": "0"})
    assert (await resumed.read()).decode().startswith("id: 1\n")
    assert (await inspector.client.get("/runs/wrun_nope/stream")).status == 404


async def test_pages_and_only_their_files(inspector: Inspector) -> None:
    for path, marker in (("/", "<title>Workflow runs</title>"), ("/run", "<title>Workflow run</title>")):
        response = await inspector.client.get(path)
        assert (response.status, response.content_type) == (200, "text/html")
        assert marker in await response.text()
    script = await inspector.client.get("/static/timeline.js")
    assert (script.status, script.content_type) == (200, "text/javascript")
    for path in ("/static/nope.js", "/static/..%2F_inspector.py", "/static/.hidden"):
        assert (await inspector.client.get(path)).status == 404, path


# -- mounted in the invoices service ----------------------------------------------------------------


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Client]:
    client: Client = TestClient(TestServer(create_app(tmp_path / "invoices.db", token="t0k"), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_the_service_guards_the_inspector(service: Client) -> None:
    page = await service.get("/workflows/")
    assert page.status == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    assert (await service.get("/workflows/static/run.js")).status == 200
    assert (await service.get("/workflows/run")).status == 200
    redirect = await service.get("/workflows", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (308, "/workflows/")

    listing = await service.get("/workflows/runs.json")
    assert listing.status == 401
    assert (await listing.json())["error"].startswith("Missing or wrong token")
    bearer = {"Authorization": "Bearer t0k"}
    assert await (await service.get("/workflows/runs.json", headers=bearer)).json() == {"runs": [], "next": None}

    started = await service.post(
        "/api/start", data=orjson.dumps({"accountId": "acct_w", "total": 2, "delay": "0s"}), headers={**JSON, **bearer}
    )
    run_id = (await started.json())["runId"]
    foreign = await service.post(
        f"/workflows/runs/{run_id}/cancel", data=b"{}", headers={**JSON, **bearer, "Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    assert (await service.post(f"/workflows/runs/{run_id}/cancel", data=b"{}", headers=JSON)).status == 401

    stream = await service.get(f"/workflows/runs/{run_id}/stream?token=t0k")
    assert stream.status == 200
    body = (await stream.read()).decode()
    assert body.endswith("event: end\ndata: {}\n\n")
    assert body.count('"type":"progress"') == 2
    assert (await service.get(f"/workflows/runs/{run_id}/stream?token=wrong")).status == 401
    assert RunStatus((await (await service.get(f"/workflows/runs/{run_id}.json", headers=bearer)).json())["status"]) in (
        RunStatus.RUNNING,
        RunStatus.COMPLETED,
    )
