"""Replay after restart, sequence numbers at call time, non-determinism, pass by value."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import make_unfinished

from durable import Engine, RunFailed, RunStatus, StepFailed, step, workflow

executions: list[str] = []


# Set by a step as it finishes, for the steps that must finish after it. Fresh for each test.
step_done: dict[str, asyncio.Event] = {}


@step
async def echo_after(label: str, after: str | None) -> str:
    """Returns ``label`` once the step ``after`` has finished."""
    executions.append(label)
    if after is not None:
        await step_done.setdefault(after, asyncio.Event()).wait()
    step_done.setdefault(label, asyncio.Event()).set()
    return label


@workflow(name="replay.gather")
async def gathered() -> list[str]:
    # Completion order (c, b, a) differs from call order (a, b, c).
    first = await asyncio.gather(echo_after("a", "b"), echo_after("b", "c"), echo_after("c", None))
    last = await echo_after("d", None)
    return [*first, last]


async def test_gather_takes_sequence_numbers_at_call_time_and_replays(db_path: Path, sql: sqlite3.Connection) -> None:
    executions.clear()
    step_done.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(gathered)
        assert await run.result(timeout=5) == ["a", "b", "c", "d"]
    assert executions == ["a", "b", "c", "d"]
    rows = sql.execute("SELECT seq, result FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
    assert rows == [(0, b'"a"'), (1, b'"b"'), (2, b'"c"'), (3, b'"d"')]
    finished = sql.execute("SELECT completed_at FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
    assert finished[2][0] < finished[1][0] < finished[0][0]  # c finished first, yet holds seq 2

    make_unfinished(db_path, run.run_id)
    executions.clear()
    async with Engine(db_path) as engine:  # open resumes the run
        assert await engine.get_run(run.run_id).result(timeout=5) == ["a", "b", "c", "d"]
    assert executions == []  # every step came from the journal


async def test_replay_reexecutes_only_unjournaled_steps(db_path: Path) -> None:
    executions.clear()
    step_done.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(gathered)
        await run.result(timeout=5)
    make_unfinished(db_path, run.run_id, delete_ops_from_seq=2)
    executions.clear()
    step_done.clear()  # c runs again (d too); b, which waits for c, is replayed from the journal
    async with Engine(db_path) as engine:
        assert await engine.get_run(run.run_id).result(timeout=5) == ["a", "b", "c", "d"]
    assert executions == ["c", "d"]


@step
async def step_a() -> str:
    return "a"


@step
async def step_b() -> str:
    return "b"


VERSION = {"current": 1}


@workflow(name="replay.changing")
async def changing() -> str:
    if VERSION["current"] == 1:
        return await step_a()
    return await step_b()


async def test_non_determinism_fails_the_run_naming_seq_and_operations(db_path: Path) -> None:
    VERSION["current"] = 1
    async with Engine(db_path) as engine:
        run = await engine.start(changing)
        assert await run.result(timeout=5) == "a"
    make_unfinished(db_path, run.run_id)
    VERSION["current"] = 2
    try:
        async with Engine(db_path) as engine:
            handle = engine.get_run(run.run_id)
            with pytest.raises(Exception, match="NonDeterminismError"):
                await handle.result(timeout=5)
            info = await handle.describe()
    finally:
        VERSION["current"] = 1
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert "operation 0 was recorded as step 'test_replay.step_a'" in info.error
    assert "now calls step 'test_replay.step_b'" in info.error


@workflow(name="replay.swallows")
async def swallows() -> str:
    try:
        return await step_b() if VERSION["current"] == 2 else await step_a()
    except Exception:
        return "swallowed"  # catching it must not rescue the run


async def test_non_determinism_cannot_be_swallowed(db_path: Path) -> None:
    VERSION["current"] = 1
    async with Engine(db_path) as engine:
        run = await engine.start(swallows)
        await run.result(timeout=5)
    make_unfinished(db_path, run.run_id)
    VERSION["current"] = 2
    try:
        async with Engine(db_path) as engine:
            handle = engine.get_run(run.run_id)
            with pytest.raises(RunFailed, match="NonDeterminismError") as caught:
                await handle.result(timeout=5)
            assert await handle.status() is RunStatus.FAILED
            info = await handle.describe()
    finally:
        VERSION["current"] = 1
    assert caught.value.run_id == run.run_id
    assert info.error is not None and info.error.startswith(
        f"NonDeterminismError: Workflow run {run.run_id}: operation 0 was recorded as step 'test_replay.step_a'"
        " but the workflow now calls step 'test_replay.step_b'."
    ), info.error


@dataclass
class Receipt:
    order: str
    cents: int


@step
async def make_receipt(order: str) -> Receipt:
    return Receipt(order, 1250)


@step
async def make_pair() -> tuple[int, str]:
    return (1, "x")


@step
async def mutate(items: list[int]) -> int:
    items.append(99)  # must not reach the caller's list
    return len(items)


@workflow(name="replay.values")
async def values() -> dict[str, Any]:
    mine = [1, 2]
    length = await mutate(mine)
    return {"receipt": await make_receipt("o-1"), "pair": await make_pair(), "mine": mine, "length": length}


async def test_pass_by_value_live_and_on_replay(db_path: Path) -> None:
    # Types survive the journal: a dataclass stays a dataclass, a tuple a tuple.
    expected = {"receipt": Receipt("o-1", 1250), "pair": (1, "x"), "mine": [1, 2], "length": 3}
    async with Engine(db_path) as engine:
        run = await engine.start(values)
        live = await run.result(timeout=5)
    assert live == expected
    assert (type(live["receipt"]), type(live["pair"])) == (Receipt, tuple)
    make_unfinished(db_path, run.run_id)
    async with Engine(db_path) as engine:
        replayed = await engine.get_run(run.run_id).result(timeout=5)
    assert replayed == expected
    assert (type(replayed["receipt"]), type(replayed["pair"])) == (Receipt, tuple)


@step
async def takes_anything(value: Any) -> str:
    return "ran"


@workflow(name="replay.bad_argument")
async def bad_argument() -> str:
    try:
        takes_anything(object())
    except TypeError as exc:
        return f"TypeError: {exc}"
    return "no error"


async def test_unserializable_step_argument_raises_at_the_call_before_writing(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(bad_argument)
    result = await run.result(timeout=5)
    assert result == (
        "TypeError: cannot store object at args[0]: not a JSON type, dataclass, Enum or registered class"
        " (register it with durable.register_type)"
    )
    assert sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ?", (run.run_id,)).fetchone() == (0,)


@step
async def returns_object() -> Any:
    return object()


@workflow(name="replay.bad_result")
async def bad_result() -> str:
    try:
        await returns_object()
    except StepFailed as exc:
        return exc.error_type
    return "no error"


async def test_unserializable_step_result_fails_the_step_at_once(engine: Engine) -> None:
    run = await engine.start(bad_result)
    assert await run.result(timeout=5) == "FatalError"
    [op] = await run.timeline()
    assert len(op.attempts) == 1


async def test_unregistered_workflow_stays_as_it_is(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(changing)
        await run.result(timeout=5)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE runs SET status = 'running', workflow_name = 'gone.workflow' WHERE run_id = ?", (run.run_id,))
    conn.close()
    with caplog.at_level("WARNING", logger="durable"):
        async with Engine(db_path) as engine:
            assert await engine.get_run(run.run_id).status() is RunStatus.RUNNING
    assert any("gone.workflow" in r.getMessage() and run.run_id in r.getMessage() for r in caplog.records)
