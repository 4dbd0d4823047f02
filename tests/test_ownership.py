"""One engine per database file, and nothing shared between engines of one process."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from harness import ROOT, read_line, spawn, until

from durable import (
    DatabaseLocked,
    DuplicateWorkflow,
    Engine,
    Run,
    RunStatus,
    get_resources,
    step,
    workflow,
)
from durable._registry import WorkflowCatalog
from invoices import create_app

HOLDER = """
import asyncio, sys
from durable import Engine

async def main() -> None:
    async with Engine(sys.argv[1]):
        print("holding", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def spawn_holder(db: Path) -> asyncio.subprocess.Process:
    script = db.parent / "hold.py"
    script.write_text(HOLDER)
    proc = await spawn(script, str(db))
    assert await read_line(proc) == "holding"
    return proc


# -- the file lock ------------------------------------------------------------------


async def test_second_engine_in_one_process_is_refused_naming_file_and_pid(db_path: Path) -> None:
    async with Engine(db_path):
        second = Engine(db_path)
        with pytest.raises(DatabaseLocked) as caught:
            await second.open()
        assert caught.value.path == db_path
        assert caught.value.holder_pid == os.getpid()
        assert str(caught.value) == (
            f"{db_path} is in use by process {os.getpid()}: one engine owns a database file at a time. "
            "Stop that process, or open another file."
        )
    async with Engine(db_path) as third:  # released at close
        assert await third.list_runs() == []


async def test_engine_in_another_process_is_refused_and_sigkill_releases_it(db_path: Path) -> None:
    holder = await spawn_holder(db_path)
    try:
        with pytest.raises(DatabaseLocked) as caught:
            await Engine(db_path).open()
        assert caught.value.holder_pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        assert await holder.wait() == -signal.SIGKILL
    async with Engine(db_path) as engine:  # at once: the kernel released the dead holder's lock
        assert await engine.list_runs() == []


async def test_server_on_a_held_file_exits_1_with_the_sentence_and_touches_nothing(db_path: Path) -> None:
    async with Engine(db_path) as engine:
        await engine.execute("CREATE TABLE marker (x INTEGER)")
        before = {p.name: file_digest(p) for p in db_path.parent.iterdir() if p.name != db_path.name + ".lock"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "server.py"),
            "--port",
            "0",
            "--db",
            str(db_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert out == b""
        assert err.decode().splitlines()[-1] == (
            f"server.py: {db_path} is in use by process {os.getpid()}: one engine owns a database file at a time. "
            "Stop that process, or open another file."
        )
        after = {p.name: file_digest(p) for p in db_path.parent.iterdir() if p.name != db_path.name + ".lock"}
        assert after == before


# -- workflows per engine -----------------------------------------------------------------


@step
async def echo(value: str) -> str:
    return value


@workflow(name="ownership.first")
async def first_wf(value: str) -> str:
    return await echo(value)


@workflow(name="ownership.second")
async def second_wf(value: str) -> str:
    return "second:" + await echo(value)


async def _other(value: str) -> str:
    return value


def test_two_workflows_under_one_name_are_refused_naming_both() -> None:
    with pytest.raises(DuplicateWorkflow) as caught:
        workflow(name="ownership.first")(_other)
    assert str(caught.value) == (
        "Workflow name 'ownership.first' is taken by test_ownership.first_wf; "
        "test_ownership._other cannot use it too. Give one of them another name with @workflow(name=...)."
    )


def test_an_engine_scope_refuses_two_workflows_under_one_name() -> None:
    catalog = WorkflowCatalog([first_wf])
    clash = workflow(name="ownership.clash")(_other)

    async def again(value: str) -> str:
        return value

    catalog.add(clash)
    with pytest.raises(DuplicateWorkflow, match=r"'ownership\.clash' is taken by test_ownership\._other"):
        catalog.add(workflow(name="ownership.clash")(again))
    assert catalog.get("ownership.clash") is clash


async def test_scoped_engine_starts_only_its_workflows(db_path: Path) -> None:
    async with Engine(db_path, workflows=[first_wf]) as engine:
        assert await (await engine.start(first_wf, "a")).result() == "a"
        with pytest.raises(ValueError, match=r"'ownership\.second' is not one of this engine's workflows"):
            await engine.start(second_wf, "b")
        assert [info.workflow_name for info in await engine.list_runs()] == ["ownership.first"]


@workflow(name="ownership.parked")
async def parked_wf() -> str:
    from durable import sleep

    await sleep("1h")
    return "woke"


async def _is_running(run: Run) -> bool:
    return await run.status() is RunStatus.RUNNING


async def test_scoped_engine_leaves_other_workflows_runs_as_they_are(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(parked_wf)
        run_id = run.run_id
        await until(lambda: _is_running(run), what="the run to start")
    with caplog.at_level(logging.WARNING, logger="durable"):
        async with Engine(db_path, workflows=[first_wf]) as engine:
            assert await engine.get_run(run_id).status() is RunStatus.RUNNING
            assert engine.stats()["active_runs"] == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"run {run_id}: workflow 'ownership.parked' is not registered; "
        "it stays running until a process that registers it opens the journal"
    ]


# -- resources -------------------------------------------------------------------------


class Counter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []


@step
async def count_call(label: str) -> str:
    counter = get_resources(Counter)
    counter.calls.append(label)
    return counter.name


@workflow(name="ownership.counted")
async def counted_wf(label: str) -> str:
    return await count_call(label)


async def test_each_engine_gives_its_steps_its_own_resources(tmp_path: Path) -> None:
    one, two = Counter("one"), Counter("two")
    async with Engine(tmp_path / "one.db", resources=one) as e1, Engine(tmp_path / "two.db", resources=two) as e2:
        runs = await asyncio.gather(e1.start(counted_wf, "a"), e2.start(counted_wf, "b"), e1.start(counted_wf, "c"))
        assert [await r.result() for r in runs] == ["one", "two", "one"]
    assert sorted(one.calls) == ["a", "c"]
    assert two.calls == ["b"]


async def test_resources_of_another_type_fail_the_step_with_a_clear_error(db_path: Path) -> None:
    @step(max_retries=0)
    async def wrong() -> None:
        get_resources(Counter)

    @workflow(name="ownership.wrong_resources")
    async def wrong_wf() -> None:
        await wrong()

    async with Engine(db_path, workflows=[wrong_wf], resources="a string") as engine:
        run = await engine.start(wrong_wf)
        with pytest.raises(Exception) as caught:
            await run.result()
    assert "the engine's resources are str, not Counter: pass them with Engine(path, resources=...)" in str(caught.value)


async def test_resources_cannot_change_once_open(db_path: Path) -> None:
    async with Engine(db_path) as engine:
        with pytest.raises(RuntimeError, match="before it opens"):
            engine.resources = object()


# -- two invoices apps in one process -------------------------------------------------------


async def _batch(client: TestClient[web.Request, web.Application], account: str, total: int) -> dict[str, Any]:
    response = await client.post("/api/start", json={"accountId": account, "total": total, "delay": "0s"})
    assert response.status == 200
    run_id = (await response.json())["runId"]
    async with client.get(f"/api/stream/{run_id}") as stream:
        await stream.read()  # the stream ends when the run ends
    status = await client.get("/api/status", params={"runId": run_id})
    return dict(await status.json())


def _invoice_rows(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return [(str(a), str(b)) for a, b in conn.execute("SELECT invoice_id, run_id FROM invoices ORDER BY invoice_id")]


async def test_two_apps_in_one_process_keep_their_invoices_apart(tmp_path: Path) -> None:
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    async with (
        TestClient(TestServer(create_app(db_a), host="127.0.0.1")) as client_a,
        TestClient(TestServer(create_app(db_b), host="127.0.0.1")) as client_b,
    ):
        status_a, status_b = await asyncio.gather(_batch(client_a, "acct_a", 7), _batch(client_b, "acct_b", 5))
    assert (status_a["status"], status_a["current"], status_a["total"]) == ("completed", 7, 7)
    assert (status_b["status"], status_b["current"], status_b["total"]) == ("completed", 5, 5)
    rows_a, rows_b = _invoice_rows(db_a), _invoice_rows(db_b)
    assert [invoice for invoice, _ in rows_a] == [f"INV-acct_a-{n:04d}" for n in range(1, 8)]
    assert {run for _, run in rows_a} == {status_a["runId"]}
    assert [invoice for invoice, _ in rows_b] == [f"INV-acct_b-{n:04d}" for n in range(1, 6)]
    assert {run for _, run in rows_b} == {status_b["runId"]}
