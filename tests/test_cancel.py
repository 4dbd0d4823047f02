"""Cancellation: at once when sleeping, after the in-flight step otherwise, and for good."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from harness import before_the_timer, until

from durable import (
    CannotCancel,
    Engine,
    HookTimeout,
    Run,
    RunCancelled,
    RunStatus,
    create_hook,
    get_workflow_metadata,
    get_writable,
    sleep,
    step,
    workflow,
)

events: list[str] = []
gates: dict[str, asyncio.Event] = {}


@step
async def work(n: int) -> int:
    events.append(f"start {n}")
    gate = gates.get(f"step {n}")
    if gate is not None:
        gates[f"in step {n}"].set()
        await gate.wait()
    events.append(f"end {n}")
    return n


@workflow(name="cancel.steps")
async def steps_then_sleep(count: int) -> int:
    done = 0
    try:
        for n in range(count):
            done += await work(n)
        await sleep("1h")
    except RunCancelled:
        events.append("unwinding")
        await get_writable().write({"cancelled_after": done})
        raise
    return done


async def _has_sleep(run: Run) -> bool:
    return any(op.kind == "sleep" for op in await run.timeline())


@workflow(name="cancel.swallow")
async def swallow_attempt() -> str:
    try:
        await sleep("1h")
    except Exception:
        return "swallowed"
    return "woke"


@workflow(name="cancel.quick")
async def quick() -> str:
    return "done"


@workflow(name="cancel.fails")
async def fails() -> None:
    raise RuntimeError("nope")


async def test_sleeping_run_is_cancelled_at_once(engine: Engine, sql: sqlite3.Connection) -> None:
    events.clear()
    run = await engine.start(steps_then_sleep, 1)
    await until(lambda: _has_sleep(run), what="the run to sleep")
    previous = await before_the_timer(run.cancel(), "cancel() of a run sleeping 1 h")
    assert previous is RunStatus.RUNNING
    assert events == ["start 0", "end 0", "unwinding"]
    info = await run.describe()
    assert info.status is RunStatus.CANCELLED and info.completed_at is not None
    assert sql.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == ("cancelled",)
    with pytest.raises(RunCancelled):
        await run.result(timeout=1)
    # The stream got the workflow's last word and is closed.
    assert [c async for c in run.readable()] == [{"cancelled_after": 0}]


async def test_in_flight_step_finishes_and_is_recorded_then_nothing_more(db_path: Path, sql: sqlite3.Connection) -> None:
    events.clear()
    gates.update({"step 1": asyncio.Event(), "in step 1": asyncio.Event()})
    try:
        async with Engine(db_path) as engine:
            run = await engine.start(steps_then_sleep, 5)
            await gates["in step 1"].wait()
            cancelling = asyncio.ensure_future(run.cancel())
            # cancel() commits 'cancelled' while the step is still running
            await until(
                lambda: sql.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == ("cancelled",),
                what="'cancelled' to be committed",
            )
            assert not cancelling.done()  # it waits for the in-flight step
            events.append("releasing step 1")
            gates["step 1"].set()
            assert await cancelling is RunStatus.RUNNING
            events.append("cancel returned")
            assert events == ["start 0", "end 0", "start 1", "releasing step 1", "end 1", "unwinding", "cancel returned"]
            ops = sql.execute("SELECT seq, state, result FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
            assert ops == [(0, "completed", b"0"), (1, "completed", b"1")]
        # After a restart the cancelled run does not resume.
        async with Engine(db_path) as engine:
            assert engine.stats()["active_runs"] == 0
            assert await engine.get_run(run.run_id).status() is RunStatus.CANCELLED
        assert events[-1] == "cancel returned"
    finally:
        gates.clear()


async def test_cancel_twice_is_a_no_op(engine: Engine) -> None:
    run = await engine.start(steps_then_sleep, 0)
    # gather's tasks run after the run's, which start() created: the first finds its body
    # running, the second finds the first's cancellation under way and waits for it.
    first, second = await asyncio.gather(run.cancel(), run.cancel())
    assert (first, second) == (RunStatus.RUNNING, RunStatus.CANCELLED)
    assert await run.cancel() is RunStatus.CANCELLED
    assert await run.status() is RunStatus.CANCELLED


@workflow(name="cancel.announces")
async def announces_then_sleeps(key: str) -> None:
    gates[key].set()  # the body runs: before any of its writes commits
    await sleep("1h")


async def test_a_run_is_running_once_its_body_runs_not_once_that_is_acknowledged(engine: Engine) -> None:
    """A reader can see what the body wrote (a hook, a sleep) before the loop hears of the commit: the
    run must not look pending then, and a cancel must not report it as never started."""
    gates["announce"] = asyncio.Event()
    try:
        run = await engine.start(announces_then_sleeps, "announce")
        await gates["announce"].wait()
        assert await run.status() is RunStatus.RUNNING
        assert await run.cancel() is RunStatus.RUNNING
        info = await run.describe()
        assert info.status is RunStatus.CANCELLED and info.started_at is not None
    finally:
        gates.clear()


async def test_cancel_before_the_body_runs_starts_no_step_but_the_body_sees_the_cancellation(engine: Engine) -> None:
    events.clear()
    run = await engine.start(steps_then_sleep, 3)
    assert await run.cancel() is RunStatus.RUNNING  # started, though its task had no chance to run yet
    assert events == ["unwinding"]  # the first step call raised RunCancelled; no step started
    info = await run.describe()
    # Journaled as started when it was created; cancelled before any operation.
    assert info.status is RunStatus.CANCELLED and info.started_at == info.created_at and info.completed_at is not None
    assert [c async for c in run.readable()] == [{"cancelled_after": 0}]


async def test_a_cancel_cut_short_by_a_crash_unwinds_at_the_next_open(db_path: Path, sql: sqlite3.Connection) -> None:
    events.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(steps_then_sleep, 2)
        await until(lambda: _has_sleep(run), what="the run to sleep")
    # What a crash right after cancel() committed leaves: cancelled, body not unwound.
    sql.execute("UPDATE runs SET status = 'cancelled', completed_at = 1, unwound = 0 WHERE run_id = ?", (run.run_id,))
    events.clear()
    for _ in range(2):  # and a second open finds nothing more to do
        async with Engine(db_path) as engine:
            handle = engine.get_run(run.run_id)
            with pytest.raises(RunCancelled):
                await handle.result(timeout=5)
            assert [c async for c in handle.readable()] == [{"cancelled_after": 1}]
    # Journaled steps replayed without running; no new step started; the last word written once.
    assert events == ["unwinding"]
    assert sql.execute("SELECT unwound FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == (1,)


async def test_cancel_completed_or_failed_run_raises(engine: Engine) -> None:
    done = await engine.start(quick)
    await done.result(timeout=5)
    with pytest.raises(CannotCancel, match=f"Cannot cancel workflow run {done.run_id} with status completed"):
        await done.cancel()
    failed = await engine.start(fails)
    with pytest.raises(Exception, match="RuntimeError: nope"):
        await failed.result(timeout=5)
    with pytest.raises(CannotCancel, match="with status failed") as caught:
        await failed.cancel()
    assert caught.value.status == "failed"


async def test_except_exception_cannot_swallow_cancellation(engine: Engine) -> None:
    run = await engine.start(swallow_attempt)
    await until(lambda: _has_sleep(run), what="the run to sleep")
    await run.cancel()
    with pytest.raises(RunCancelled):
        await run.result(timeout=1)


async def test_cancel_of_a_run_not_loaded_by_this_engine(db_path: Path) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(quick)
        await run.result(timeout=5)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE runs SET status = 'running', workflow_name = 'not.registered' WHERE run_id = ?", (run.run_id,))
    conn.close()
    async with Engine(db_path) as engine:
        handle = engine.get_run(run.run_id)
        assert await handle.cancel() is RunStatus.RUNNING
        assert await handle.status() is RunStatus.CANCELLED
        with pytest.raises(RunCancelled):
            await handle.result(timeout=1)


@step
async def stubborn() -> str:
    events.append("stubborn start")
    await asyncio.Event().wait()  # never set: the step only ends when it is stopped
    return "never"


@workflow(name="cancel.stubborn")
async def stubborn_wf() -> str:
    try:
        return await stubborn()
    except RunCancelled:
        events.append("unwinding")
        await get_writable().write({"cancelled": True})
        raise


async def test_a_step_outliving_the_grace_period_is_stopped_and_the_body_still_unwinds(db_path: Path) -> None:
    events.clear()
    async with Engine(db_path, cancel_grace=0.2) as engine:
        run = await engine.start(stubborn_wf)
        await until(lambda: events == ["stubborn start"], what="the step to start")
        assert await run.cancel() is RunStatus.RUNNING
        assert events == ["stubborn start", "unwinding"]
        assert [c async for c in run.readable()] == [{"cancelled": True}]
        assert await run.timeline() == []  # the step never completed


async def test_close_during_cancel_leaves_the_unwinding_to_the_next_open(db_path: Path, sql: sqlite3.Connection) -> None:
    events.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(stubborn_wf)
        await until(lambda: events == ["stubborn start"], what="the step to start")
        cancelling = asyncio.ensure_future(run.cancel())
        await until(
            lambda: sql.execute("SELECT status FROM runs").fetchone() == ("cancelled",), what="'cancelled' to be committed"
        )
    # The cancel is committed and the workflow stopped (the engine closed under it).
    assert await cancelling is RunStatus.RUNNING
    assert sql.execute("SELECT status, unwound FROM runs").fetchone() == ("cancelled", 0)
    events.clear()
    async with Engine(db_path) as engine:
        handle = engine.get_run(run.run_id)
        with pytest.raises(RunCancelled):
            await handle.result(timeout=5)
        assert [c async for c in handle.readable()] == [{"cancelled": True}]
    assert events == ["unwinding"]  # the step did not run again


@workflow(name="cancel.gives_up")
async def gives_up() -> str:
    hook = create_hook(token=f"decide:{get_workflow_metadata().run_id}")
    try:
        return str(await hook.wait(timeout="50ms"))
    except HookTimeout:
        raise RunCancelled(get_workflow_metadata().run_id, "nobody decided within 50ms") from None


async def test_a_body_that_raises_its_own_cancellation_ends_cancelled_with_its_reason(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(gives_up)
        with pytest.raises(RunCancelled) as raised:
            await run.result(timeout=10)
        assert raised.value.reason == "nobody decided within 50ms"
        info = await run.describe()
        assert (info.status, info.error) == (RunStatus.CANCELLED, "nobody decided within 50ms")
        assert await engine.list_hooks(run.run_id) == []  # released with the final status
    # Ended, not waiting to unwind: the next open does not resume it.
    assert sql.execute("SELECT status, error, unwound FROM runs").fetchall() == [("cancelled", "nobody decided within 50ms", 1)]
    async with Engine(db_path) as engine:
        assert engine.stats()["active_runs"] == 0
        assert (await engine.get_run(run.run_id).describe()).error == "nobody decided within 50ms"


@workflow(name="cancel.leaves_a_step")
async def leaves_a_step() -> None:
    work(7)  # started, not awaited: the body unwinds from its sleep while the step runs
    await sleep("1h")


async def test_cancel_returns_after_the_result_of_the_step_it_let_finish_is_committed(
    db_path: Path, sql: sqlite3.Connection
) -> None:
    gates.update({"step 7": asyncio.Event(), "in step 7": asyncio.Event()})
    try:
        async with Engine(db_path) as engine:
            run = await engine.start(leaves_a_step)
            await gates["in step 7"].wait()
            await until(lambda: _has_sleep(run), what="the run to sleep")
            cancelling = asyncio.ensure_future(run.cancel())
            with pytest.raises(RunCancelled):
                await run.result(timeout=5)  # the body has unwound; its step still runs
            assert not cancelling.done()  # it waits for the in-flight step
            sql.execute("BEGIN IMMEDIATE")  # nothing commits until this transaction ends
            try:
                gates["step 7"].set()
                # The step has finished but its result cannot commit: cancel() must not return.
                done, _ = await asyncio.wait({cancelling}, timeout=0.3)
            finally:
                sql.execute("ROLLBACK")
            assert not done, "cancel() returned before the result of the step it let finish was committed"
            assert await cancelling is RunStatus.RUNNING
            ops = sql.execute("SELECT seq, state, result FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
            assert ops == [(0, "completed", b"7"), (1, "waiting", None)]
    finally:
        gates.clear()
