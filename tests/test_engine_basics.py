from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import until

from durable import (
    Engine,
    EngineClosed,
    Run,
    RunFailed,
    RunNotFound,
    RunStatus,
    get_step_metadata,
    get_workflow_metadata,
    sleep,
    step,
    workflow,
)
from durable._schema import MIGRATIONS, check_sqlite

seen: list[object] = []


@step
async def double(x: int) -> int:
    meta = get_step_metadata()
    seen.append((meta.step_name, meta.attempt, get_workflow_metadata().workflow_name))
    return x * 2


@step
async def triple(x: int) -> int:
    return x * 3


@workflow
async def doubler(x: int) -> dict[str, object]:
    wf = get_workflow_metadata()
    return {"value": await double(x), "run_id": wf.run_id}


@workflow(name="basics.fails")
async def fails() -> None:
    raise ValueError("broken input")


@workflow(name="basics.gate")
async def gated(name: str) -> str:
    await GATES[name].wait()
    return name


GATES: dict[str, asyncio.Event] = {}


async def test_start_runs_to_completion_with_statuses_and_times(engine: Engine) -> None:
    seen.clear()
    before = datetime.now(UTC)
    run = await engine.start(doubler, 21)
    assert await run.result(timeout=5) == {"value": 42, "run_id": run.run_id}
    info = await run.describe()
    assert info.run_id == run.run_id
    assert info.workflow_name == "test_engine_basics.doubler"
    assert info.status is RunStatus.COMPLETED
    assert info.error is None
    assert (info.args, info.kwargs) == ([21], {})
    assert info.started_at is not None and info.completed_at is not None
    assert before <= info.created_at <= info.started_at <= info.completed_at <= datetime.now(UTC)
    assert info.created_at.tzinfo is UTC
    assert await run.status() is RunStatus.COMPLETED
    assert seen == [("test_engine_basics.double", 1, "test_engine_basics.doubler")]


async def test_start_commits_the_run_as_started_before_returning(engine: Engine, sql: sqlite3.Connection) -> None:
    GATES["started"] = asyncio.Event()
    run = await engine.start(gated, "started")
    # start() returned once the run was committed: running since its creation (its body
    # starts now, and a crash from here on resumes it at the next open).
    status, created, started = sql.execute(
        "SELECT status, created_at, started_at FROM runs WHERE run_id = ?", (run.run_id,)
    ).fetchone()
    assert (status, started) == ("running", created)
    info = await run.describe()
    assert info.status is RunStatus.RUNNING and info.started_at == info.created_at
    GATES["started"].set()
    assert await run.result(timeout=5) == "started"
    assert sql.execute("SELECT status, started_at FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == ("completed", created)


async def test_running_status_while_in_progress(engine: Engine) -> None:
    GATES["running"] = asyncio.Event()
    run = await engine.start(gated, "running")
    await until(lambda: _status_is(run, RunStatus.RUNNING), what="running")
    info = await run.describe()
    assert info.status is RunStatus.RUNNING
    assert info.started_at is not None and info.completed_at is None
    GATES["running"].set()
    await run.result(timeout=5)


async def _status_is(run: Run, status: RunStatus) -> bool:
    return (await run.describe()).status is status


async def test_failed_run_records_error(engine: Engine) -> None:
    run = await engine.start(fails)
    with pytest.raises(RunFailed, match="ValueError: broken input") as caught:
        await run.result(timeout=5)
    assert caught.value.run_id == run.run_id
    info = await run.describe()
    assert info.status is RunStatus.FAILED
    assert info.error == "ValueError: broken input"
    assert info.completed_at is not None


async def test_result_timeout(engine: Engine) -> None:
    GATES["timeout"] = asyncio.Event()
    run = await engine.start(gated, "timeout")
    with pytest.raises(TimeoutError):
        await run.result(timeout=0.05)
    GATES["timeout"].set()
    assert await run.result(timeout=5) == "timeout"


async def test_unknown_run_raises_not_found_on_first_use(engine: Engine) -> None:
    run = engine.get_run("wrun_NOPE")  # synchronous, no error yet
    assert run.run_id == "wrun_NOPE"
    for call in (run.status, run.describe, run.cancel, run.result, run.timeline):
        with pytest.raises(RunNotFound, match="wrun_NOPE"):
            await call()


async def test_get_run_by_id_sees_the_same_run(engine: Engine) -> None:
    run = await engine.start(doubler, 1)
    await run.result(timeout=5)
    again = engine.get_run(run.run_id)
    assert await again.status() is RunStatus.COMPLETED
    assert await again.result() == {"value": 2, "run_id": run.run_id}


async def test_list_runs_newest_first_and_by_status(engine: Engine) -> None:
    runs = [await engine.start(doubler, i) for i in range(3)]
    failed = await engine.start(fails)
    for r in runs:
        await r.result(timeout=5)
    with pytest.raises(RunFailed):
        await failed.result(timeout=5)
    listed = await engine.list_runs()
    assert [i.run_id for i in listed] == [failed.run_id] + [r.run_id for r in reversed(runs)]
    assert [i.run_id for i in await engine.list_runs(RunStatus.FAILED)] == [failed.run_id]
    assert len(await engine.list_runs(limit=2)) == 2


async def test_steps_outside_workflows_are_plain_calls() -> None:
    assert await triple(4) == 12
    with pytest.raises(RuntimeError, match="inside a @step"):
        get_step_metadata()
    with pytest.raises(RuntimeError, match="inside a workflow"):
        get_workflow_metadata()


async def test_unserializable_workflow_input_writes_nothing(engine: Engine, sql: sqlite3.Connection) -> None:
    with pytest.raises(TypeError) as caught:
        await engine.start(doubler, object())
    assert str(caught.value) == (
        "cannot store object at args[0]: not a JSON type, dataclass, Enum or registered class"
        " (register it with durable.register_type)"
    )
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)


async def test_start_needs_a_workflow(engine: Engine) -> None:
    with pytest.raises(TypeError, match="@workflow"):
        await engine.start(double)  # type: ignore[arg-type]


async def test_close_is_idempotent_and_use_after_close_is_named(db_path: Path) -> None:
    engine = Engine(db_path)
    with pytest.raises(EngineClosed, match="not open"):
        await engine.start(doubler, 1)
    await engine.open()
    await engine.close()
    await engine.close()
    with pytest.raises(EngineClosed):
        await engine.start(doubler, 1)
    with pytest.raises(EngineClosed):
        await engine.get_run("wrun_X").status()
    with pytest.raises(EngineClosed, match="Cannot reopen"):
        await engine.open()


async def test_pragmas_and_schema_version(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path, synchronous="NORMAL") as engine:
        assert await engine.fetchall("PRAGMA synchronous") == [(1,)]
        assert await engine.fetchall("PRAGMA foreign_keys") == [(1,)]
    async with Engine(db_path) as engine:
        assert await engine.fetchall("PRAGMA synchronous") == [(2,)]  # FULL by default
    assert sql.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert sql.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    with pytest.raises(ValueError, match="synchronous must be one of"):
        Engine(db_path, synchronous="SOMETIMES")


async def test_an_sqlite_older_than_the_journals_sql_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_sqlite((3, 32, 0))  # the oldest it runs on
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    engine = Engine(tmp_path / "data" / "app.db")
    with pytest.raises(sqlite3.NotSupportedError) as refused:
        await engine.open()
    assert str(refused.value) == (
        "durable needs SQLite 3.32.0 or later (window functions, 32,766 parameters per statement);"
        " this Python's sqlite3 module uses SQLite 3.31.1: run it with a Python built against a newer SQLite"
    )
    assert not (tmp_path / "data").exists()  # neither the folder, the lock file nor the database
    with pytest.raises(EngineClosed, match="Cannot reopen"):  # closed, as after any failed open
        await engine.open()


async def test_no_task_or_fd_leak_across_open_close(db_path: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with Engine(db_path) as engine:
        await (await engine.start(doubler, 1)).result(timeout=5)
    baseline_fds, baseline_tasks = fds(), len(asyncio.all_tasks())
    for _ in range(5):
        async with Engine(db_path) as engine:
            await (await engine.start(doubler, 1)).result(timeout=5)
            assert engine.stats()["active_runs"] == 0
    assert fds() == baseline_fds
    assert len(asyncio.all_tasks()) == baseline_tasks


class Returned:
    """How many bodies of returns_at_once returned, and an event set when all did."""

    def __init__(self) -> None:
        self.count = 0
        self.all = asyncio.Event()


returned = Returned()


@workflow(name="basics.returns_at_once")
async def returns_at_once(total: int) -> int:
    returned.count += 1
    if returned.count == total:
        returned.all.set()
    return total


async def test_closing_while_runs_record_their_end_loses_nothing_and_logs_no_error(
    db_path: Path, sql: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    returned.count, returned.all = 0, asyncio.Event()
    async with Engine(db_path) as engine:
        await asyncio.gather(*(engine.start(returns_at_once, 300) for _ in range(300)))
        await returned.all.wait()  # every body returned; their final commits may still be queued
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []
    assert sql.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall() == [("completed", 300)]


@workflow(name="basics.steps_and_sleep")
async def steps_and_sleep(n: int) -> int:
    total = 0
    for i in range(n):
        total += await double(i)
    await sleep("1ms")
    return total


@step
async def napping(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@workflow(name="basics.leaves_steps_behind")
async def leaves_steps_behind() -> int:
    napping(0.001)  # never awaited: still running when the body returns
    await asyncio.sleep(0)
    napping(0.0)  # never awaited either, and the body returns before it has run at all
    return 2


async def _cyclic_garbage_after(engine: Engine, wf: Any, *args: Any) -> set[str]:
    """The kinds of engine objects left to the cyclic collector by 50 runs of ``wf``."""
    await (await engine.start(wf, *args)).result(timeout=10)  # warm up caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            await (await engine.start(wf, *args)).result(timeout=10)
        await until(lambda: _no_tasks_left(engine), what="the runs' tasks to end")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = {type(obj).__name__ for obj in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return kinds & {"RunContext", "StepCall", "Task", "Context"}


def _no_tasks_left(engine: Engine) -> bool:
    return engine.stats()["tasks"] == 0 and len(asyncio.all_tasks()) == 1


async def test_a_finished_run_leaves_no_cyclic_garbage(engine: Engine) -> None:
    """Freed by reference counting: a full collection over thousands of ended runs would stall the loop."""
    assert await _cyclic_garbage_after(engine, steps_and_sleep, 3) == set()


async def test_steps_a_run_never_awaited_leave_no_cyclic_garbage(engine: Engine) -> None:
    # Its end cancels them: one before it ever ran, one in the middle of its sleep.
    assert await _cyclic_garbage_after(engine, leaves_steps_behind) == set()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12")
async def test_under_an_eager_task_factory_a_finished_run_leaves_no_cyclic_garbage(engine: Engine) -> None:
    # A step that never suspends then ends inside create_task, before its run records it.
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        assert await _cyclic_garbage_after(engine, steps_and_sleep, 3) == set()
    finally:
        loop.set_task_factory(None)
