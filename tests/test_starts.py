"""Starting with options: known run ids return their run, deadlines cancel, and both survive restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import until

from durable import (
    Engine,
    RunCancelled,
    RunConflict,
    RunStatus,
    get_writable,
    sleep,
    step,
    workflow,
)

events: list[str] = []
gates: dict[str, asyncio.Event] = {}


@workflow(name="starts.echo")
async def echo(x: int) -> int:
    return x


@workflow(name="starts.other")
async def other() -> str:
    return "other"


@workflow(name="starts.sleepy")
async def sleepy() -> str:
    await sleep("1h")
    return "woke"


@step
async def gated(name: str) -> str:
    events.append(f"start {name}")
    gates["in step"].set()
    await gates["release"].wait()
    events.append(f"end {name}")
    return name


@workflow(name="starts.two_steps")
async def two_steps() -> str:
    try:
        await gated("first")
        await gated("second")
    except RunCancelled as exc:
        await get_writable().write({"cancelled": str(exc)})
        raise
    return "done"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored(sql: sqlite3.Connection, run_id: str) -> tuple[float, float, float | None, str | None, str]:
    row = sql.execute("SELECT created_at, deadline, completed_at, error, status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


# -- run ids -------------------------------------------------------------------------


async def test_a_thousand_concurrent_starts_of_fifty_ids_make_fifty_runs(engine: Engine, sql: sqlite3.Connection) -> None:
    runs = await asyncio.gather(*(engine.start(echo.with_options(run_id=f"order-{i % 50}"), i) for i in range(1000)))
    assert [run.run_id for run in runs] == [f"order-{i % 50}" for i in range(1000)]
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (50,)
    assert sorted(row[0] for row in sql.execute("SELECT run_id FROM runs")) == sorted(f"order-{i}" for i in range(50))
    # The first start of each id made its run; every later start returned that run.
    assert [await run.result() for run in runs] == [i % 50 for i in range(1000)]

    # Starting ids that exist writes nothing, also once the runs are over.
    commits = engine.stats()["commits"]
    again = await asyncio.gather(*(engine.start(echo.with_options(run_id=f"order-{i}"), 999) for i in range(50)))
    assert [await run.result() for run in again] == list(range(50))
    assert engine.stats()["commits"] == commits
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (50,)


async def test_a_start_whose_caller_is_cancelled_once_its_insert_is_queued_still_runs(
    engine: Engine, sql: sqlite3.Connection
) -> None:
    # The caller (a request handler whose client went away, say) is cancelled while the
    # run's insert waits for its commit. The insert commits all the same, so the run
    # must run now, not sit recorded as running until the next open.
    caller = asyncio.create_task(engine.start(echo, 7))
    await asyncio.sleep(0)  # one loop turn: the caller queues the insert and waits for its commit
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await until(lambda: sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,), what="the run's insert")
    (run_id,) = sql.execute("SELECT run_id FROM runs").fetchone()
    await until(lambda: stored(sql, run_id)[4] == "completed", what="the run to complete")
    assert await engine.get_run(run_id).result() == 7


async def test_a_known_run_id_returns_its_run_after_a_restart(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path) as engine:
        first = await engine.start(sleepy.with_options(run_id="nightly-2026-11-30"))
        await until(lambda: sql.execute("SELECT COUNT(*) FROM ops WHERE kind = 'sleep'").fetchone() == (1,), what="the sleep")
    async with Engine(db_path) as engine:
        commits = engine.stats()["commits"]
        again = await engine.start(sleepy.with_options(run_id="nightly-2026-11-30"))
        assert again.run_id == first.run_id == "nightly-2026-11-30"
        assert engine.stats()["commits"] == commits
        assert await again.cancel() is RunStatus.RUNNING
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


async def test_a_run_id_of_another_workflow_is_a_conflict(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(echo.with_options(run_id="shared"), 1)
    with pytest.raises(RunConflict) as caught:
        await engine.start(other.with_options(run_id="shared"))
    assert (caught.value.run_id, caught.value.existing, caught.value.attempted) == ("shared", "starts.echo", "starts.other")
    assert str(caught.value) == (
        "Workflow run shared already exists as a run of 'starts.echo', so it cannot be started as 'starts.other': "
        "use another run_id for this workflow."
    )
    assert await run.result() == 1
    # Concurrent starts of one id with two workflows: the first wins, the second conflicts.
    outcomes = await asyncio.gather(
        engine.start(other.with_options(run_id="raced")),
        engine.start(echo.with_options(run_id="raced"), 2),
        return_exceptions=True,
    )
    assert [type(outcome).__name__ for outcome in outcomes] == ["Run", "RunConflict"]
    assert sql.execute("SELECT run_id, workflow_name FROM runs ORDER BY run_id").fetchall() == [
        ("raced", "starts.other"),
        ("shared", "starts.echo"),
    ]


async def test_options_are_checked_where_they_are_given(engine: Engine, sql: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="Invalid duration 'soon'"):
        echo.with_options(timeout="soon")
    with pytest.raises(ValueError, match=r"^run_id must be a non-empty string or None, got ''$"):
        echo.with_options(run_id="")
    with pytest.raises(ValueError, match=r"^run_id must not contain '~', which marks the ids of child runs, got 'a~1'$"):
        echo.with_options(run_id="a~1")
    with pytest.raises(ValueError, match=r"^queue_key and priority order runs in a queue: give queue=\.\.\. as well$"):
        echo.with_options(priority=1)
    with pytest.raises(ValueError, match=r"^priority must be an integer or None \(smaller starts first\), got True$"):
        echo.with_options(queue="q", priority=True)
    with pytest.raises(ValueError) as unknown:
        await engine.start(echo.with_options(queue="nowhere"), 1)
    assert str(unknown.value) == (
        "queue 'nowhere' is not declared on this engine: call engine.queue('nowhere', concurrency=...) before starting runs on it"
    )
    with pytest.raises(TypeError, match=r"engine\.start\(\) needs a function decorated with @workflow"):
        await engine.start(print)  # type: ignore[arg-type]
    assert sql.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
    with pytest.raises(RuntimeError, match="can only be called in a workflow body"):
        echo.with_options(timeout="1s")(1)  # type: ignore[unused-coroutine]


# -- deadlines ------------------------------------------------------------------------


async def test_a_deadline_cancels_the_run_never_early_and_says_so(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(sleepy.with_options(timeout="200ms"))
    with pytest.raises(RunCancelled) as caught:
        await run.result()
    created, deadline, completed, error, status = stored(sql, run.run_id)
    assert deadline == created + 0.2
    assert completed is not None and completed >= deadline
    assert status == "cancelled"
    assert error == f"deadline of 200ms passed at {iso(deadline)}"
    assert str(caught.value) == f"Workflow run {run.run_id} was cancelled: {error}"
    assert caught.value.reason == error
    info = await run.describe()
    assert (info.status, info.error) == (RunStatus.CANCELLED, error)
    assert info.deadline == datetime.fromtimestamp(deadline, tz=UTC)
    assert info.completed_at is not None and info.completed_at >= info.deadline


async def test_a_deadline_lets_the_step_in_flight_finish_and_starts_no_other(engine: Engine, sql: sqlite3.Connection) -> None:
    events.clear()
    gates.update({"in step": asyncio.Event(), "release": asyncio.Event()})
    run = await engine.start(two_steps.with_options(timeout=0.05))
    await gates["in step"].wait()

    async def cancelled() -> bool:
        return await run.status() is RunStatus.CANCELLED

    await until(cancelled, what="the deadline to cancel the run")
    gates["release"].set()
    with pytest.raises(RunCancelled):
        await run.result()
    assert events == ["start first", "end first"]
    assert [(op.kind, op.name, op.status) for op in await run.timeline()] == [("step", "test_starts.gated", "completed")]
    created, deadline, completed, error, _ = stored(sql, run.run_id)
    assert completed is not None and completed >= deadline == created + 0.05
    assert error == f"deadline of 0.05s passed at {iso(deadline)}"
    # The body saw why it was cancelled.
    assert [chunk async for chunk in run.readable()] == [{"cancelled": f"Workflow run {run.run_id} was cancelled: {error}"}]


async def test_a_deadline_that_passed_while_closed_fires_at_open(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(sleepy.with_options(timeout="1500ms"))
        await until(lambda: sql.execute("SELECT COUNT(*) FROM ops WHERE kind = 'sleep'").fetchone() == (1,), what="the sleep")
    created, deadline, completed, error, status = stored(sql, run.run_id)
    assert (status, completed, error) == ("running", None, None)
    await until(lambda: time.time() > deadline, timeout=30, what="the deadline to pass while the engine is closed")
    async with Engine(db_path) as engine:
        with pytest.raises(RunCancelled, match="deadline of 1500ms passed"):
            await engine.get_run(run.run_id).result()
    created, deadline, completed, error, status = stored(sql, run.run_id)
    assert status == "cancelled" and completed is not None and completed >= deadline == created + 1.5
    assert error == f"deadline of 1500ms passed at {iso(deadline)}"


async def test_a_run_that_ends_before_its_deadline_keeps_its_result(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(echo.with_options(timeout="1h"), 5)
    assert await run.result() == 5
    assert engine.stats()["deadlines"] == 0  # disarmed when the run ended
    assert stored(sql, run.run_id)[3:] == (None, "completed")
