"""A database that refuses writes mid-run: the run stops as after a crash, and resumes by itself
once writes succeed again. (tests/test_http.py fills the disk for the HTTP side.)"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Awaitable
from pathlib import Path

import pytest
from harness import until

from durable import Engine, RunStatus, get_writable, sleep, step, workflow

executed: list[int] = []
gate: dict[str, asyncio.Event] = {}


@step
async def record(n: int) -> int:
    executed.append(n)
    if n == 3:
        gate["reached"].set()
        await gate["go"].wait()
    return n


@workflow(name="faults.steps")
async def steps(count: int) -> list[int]:
    return [await record(n) for n in range(count)]


async def test_a_run_stopped_by_a_read_only_database_resumes_when_writes_succeed(db_path: Path, sql: sqlite3.Connection) -> None:
    executed.clear()
    gate.update(reached=asyncio.Event(), go=asyncio.Event())
    async with Engine(db_path) as engine:
        run = await engine.start(steps, 6)
        await gate["reached"].wait()
        # The writer connection turns read-only, as when the file's permissions change.
        await engine.execute("PRAGMA query_only = 1")
        gate["go"].set()  # step 3 finishes, but its result cannot be journaled
        await until(lambda: engine.stats()["active_runs"] == 0, what="the run to stop on the fault")
        assert await run.status() is RunStatus.RUNNING  # not failed: nothing half-written
        journaled = sql.execute("SELECT seq FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
        assert journaled == [(0,), (1,), (2,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await engine.start(steps, 1)  # refused, not acknowledged

        await engine.execute("PRAGMA query_only = 0")  # the fault clears
        assert await run.result(timeout=10) == [0, 1, 2, 3, 4, 5]
    # Step 3 ran again (its result was lost); the journaled steps did not.
    assert executed == [0, 1, 2, 3, 3, 4, 5]
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


@workflow(name="faults.last_write")
async def last_write() -> str:
    await record(10)
    gate["reached"].set()
    await gate["go"].wait()  # the database turns read-only here: the final status cannot be written
    return "done"


async def test_a_final_status_that_cannot_be_written_is_written_later(db_path: Path, sql: sqlite3.Connection) -> None:
    executed.clear()
    gate.update(reached=asyncio.Event(), go=asyncio.Event())
    async with Engine(db_path) as engine:
        run = await engine.start(last_write)
        await gate["reached"].wait()
        await engine.execute("PRAGMA query_only = 1")
        gate["go"].set()
        await until(lambda: engine.stats()["active_runs"] == 0, what="the run to stop on the fault")
        assert await run.status() is RunStatus.RUNNING
        gate["reached"] = asyncio.Event()
        await engine.execute("PRAGMA query_only = 0")
        assert await run.result(timeout=10) == "done"  # resumed: the step replayed, the status written
    assert executed == [10]
    assert sql.execute("SELECT status FROM runs").fetchall() == [("completed",)]


naps: list[Awaitable[None]] = []


@workflow(name="faults.raced_sleep")
async def raced_sleep() -> str:
    gate["reached"].set()
    await gate["go"].wait()
    written = get_writable().write("x")  # the writer takes this write on its own...
    await asyncio.sleep(0)
    nap = sleep("10s")  # ...and the sleep's record in its next commit
    naps.append(nap)
    # A timeout raced against the write: cancelling the run's task does not cancel `nap`.
    await asyncio.wait([asyncio.ensure_future(written), asyncio.ensure_future(nap)], return_when=asyncio.FIRST_COMPLETED)
    return "done"


async def test_a_sleep_refused_after_its_run_stopped_logs_no_unretrieved_error(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate.update(reached=asyncio.Event(), go=asyncio.Event())
    async with Engine(db_path) as engine:
        run = await engine.start(raced_sleep)
        await gate["reached"].wait()
        await engine.execute("PRAGMA query_only = 1")
        gate["go"].set()  # the write fails and stops the run; then the sleep's record fails too
        await until(lambda: engine.stats()["active_runs"] == 0, what="the run to stop on the fault")
        first = naps[0]
        assert isinstance(first, asyncio.Future)
        await until(first.done, what="the sleep's record to be refused")
        naps.clear()
        del first
        await engine.execute("PRAGMA query_only = 0")
        assert await run.result(timeout=10) == "done"
    naps.clear()
    gc.collect()  # an unretrieved exception is logged when its future is collected
    assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []


@step
async def emit(name: str) -> str:
    await get_writable().write(name)
    return name


@workflow(name="faults.pair")
async def emit_pair() -> list[str]:
    return list(await asyncio.gather(emit("a"), emit("b")))


async def test_writes_queued_behind_a_failed_one_do_not_land(db_path: Path) -> None:
    """A run's writes behind its failed one are refused: its stream keeps no hole and no reordering."""
    async with Engine(db_path) as engine:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute(
            "CREATE TRIGGER refuse_a BEFORE INSERT ON chunks WHEN CAST(NEW.data AS TEXT) = '\"a\"'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        run = await engine.start(emit_pair)
        await until(lambda: engine.stats()["active_runs"] == 0, what="the run to stop on the refused write")
        conn.execute("DROP TRIGGER refuse_a")
        conn.close()
        assert await run.result(timeout=30) == ["a", "b"]  # resumed from the journal once writes succeed
        assert [(chunk.index, chunk.value) async for chunk in run.chunks()] == [(0, "a"), (1, "b")]
