"""engine.resume_run and engine.fork: what a failed or cancelled run continues with, and what a fork copies."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import until
from inspect_workflows import WORKFLOWS, charging_parent, lift, log_lines, parent, pipeline, retrying, reviewed, sleeper

from durable import CannotResume, Engine, EngineClosed, HookNotFound, Run, RunCancelled, RunFailed, RunNotFound, RunStatus


@pytest.fixture
async def eng(db_path: Path) -> AsyncIterator[Engine]:
    async with Engine(db_path, workflows=WORKFLOWS) as engine:
        yield engine


@pytest.fixture
def gate(tmp_path: Path) -> str:
    path = tmp_path / "gate"
    path.touch()
    return str(path)


async def values(run: Run) -> list[object]:
    return [value async for value in run.readable()]


async def failed_pipeline(eng: Engine, gate: str) -> Run:
    run = await eng.start(pipeline, gate, 3)
    with pytest.raises(Exception, match="card declined"):
        await run.result(timeout=10)
    return run


async def test_resume_failed_run_reexecutes_only_the_failed_step(eng: Engine, gate: str) -> None:
    run = await failed_pipeline(eng, gate)
    assert [(op.seq, op.name, op.status) for op in await run.timeline()] == [
        (0, "inspect.record", "completed"),
        (2, "inspect.record", "completed"),
        (4, "inspect.record", "completed"),
        (6, "inspect.guarded", "failed"),
    ]
    assert [(op.seq, op.status, len(op.attempts)) for op in await run.timeline()] == [
        (0, "completed", 1),
        (2, "completed", 1),
        (4, "completed", 1),
        (6, "failed", 1),
    ]
    lift(gate)

    assert await eng.resume_run(run.run_id) == RunStatus.FAILED
    assert await run.result(timeout=10) == {"total": 30, "receipt": "charged"}
    # Completed steps replayed; the failed one ran afresh: attempt 1 again, not 2.
    assert log_lines(gate) == [
        "record 0 attempt 1",
        "record 1 attempt 1",
        "record 2 attempt 1",
        "guarded attempt 1",
        "guarded attempt 1",
    ]
    assert await values(run) == [{"step": 0}, {"step": 1}, {"step": 2}, {"done": "charged"}]
    timeline = await run.timeline()
    assert [(op.seq, op.status, [a.error for a in op.attempts]) for op in timeline] == [
        (0, "completed", [None]),
        (2, "completed", [None]),
        (4, "completed", [None]),
        (6, "completed", [None]),
    ]
    info = await run.describe()
    assert (info.status, info.error) == (RunStatus.COMPLETED, None)


async def test_resume_failed_run_that_fails_again_keeps_one_failure(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await failed_pipeline(eng, gate)
    assert await eng.resume_run(run.run_id) == RunStatus.FAILED
    with pytest.raises(Exception, match="card declined"):
        await run.result(timeout=10)
    assert sql.execute("SELECT seq, attempt, error FROM attempts WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall() == [
        (6, 1, "FatalError: card declined")
    ]
    assert await values(run) == [{"step": 0}, {"step": 1}, {"step": 2}]


async def test_resume_cancelled_run_continues_after_its_last_step(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await eng.start(sleeper, gate, "1s")
    await until(
        lambda: sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'", (run.run_id,)).fetchone()[0] == 1
    )
    assert await run.cancel() == RunStatus.RUNNING
    first_sleep = sql.execute("SELECT started_at FROM ops WHERE run_id = ? AND seq = 1", (run.run_id,)).fetchone()[0]

    assert await eng.resume_run(run.run_id) == RunStatus.CANCELLED
    assert await run.status() == RunStatus.RUNNING
    assert sql.execute("SELECT status, completed_at, unwound FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == (
        "running",
        None,
        1,
    )
    assert await run.result(timeout=10) == "woke"
    # The sleep after the last completed step was slept again, from the resume on.
    assert sql.execute("SELECT started_at > ? FROM ops WHERE run_id = ? AND seq = 1", (first_sleep, run.run_id)).fetchone() == (
        1,
    )
    assert log_lines(gate) == ["record 0 attempt 1", "record 1 attempt 1"]


async def test_a_resume_whose_caller_is_cancelled_goes_to_its_end(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await eng.start(sleeper, gate, "1s")
    await until(
        lambda: sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'", (run.run_id,)).fetchone()[0] == 1
    )
    assert await run.cancel() == RunStatus.RUNNING
    # asyncio.wait_for(engine.resume_run(...), ...) timing out, say: once called, the resume
    # commits the run's return and brings it back to memory all the same.
    caller = asyncio.create_task(eng.resume_run(run.run_id))
    await asyncio.sleep(0)  # one loop turn: the resume begins
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await until(lambda: eng.stats()["active_runs"] == 1, what="the run back in memory")
    assert sql.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone() == ("running",)
    assert await run.result(timeout=10) == "woke"
    assert log_lines(gate) == ["record 0 attempt 1", "record 1 attempt 1"]


async def test_a_resume_that_close_cut_short_raises_engine_closed_and_happens_at_the_next_open(
    db_path: Path, gate: str, sql: sqlite3.Connection
) -> None:
    async with Engine(db_path, workflows=WORKFLOWS) as engine:
        run = await engine.start(sleeper, gate, "1s")
        assert await run.cancel() == RunStatus.RUNNING
        caller = asyncio.create_task(engine.resume_run(run.run_id))
        await asyncio.sleep(0)  # one loop turn: the resume begins
    # Not a CancelledError: the caller was not cancelled, the engine closed under it.
    with pytest.raises(EngineClosed):
        await caller
    status = sql.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    assert status == ("cancelled",)  # it had not committed: nothing holds at the next open
    async with Engine(db_path, workflows=WORKFLOWS) as engine:
        assert await engine.get_run(run.run_id).status() == RunStatus.CANCELLED


async def test_resume_refuses_runs_that_did_not_fail_or_get_cancelled(eng: Engine, gate: str) -> None:
    lift(gate)
    done = await eng.start(retrying, gate)
    assert await done.result(timeout=10) == "ok after 3"
    with pytest.raises(CannotResume) as refused:
        await eng.resume_run(done.run_id)
    assert str(refused.value) == (
        f"Cannot continue workflow run {done.run_id}: its status is completed; only failed or cancelled runs can be resumed"
    )
    sleeping = await eng.start(sleeper, gate, "1h")
    with pytest.raises(CannotResume, match=r"its status is (pending|running);"):
        await eng.resume_run(sleeping.run_id)
    with pytest.raises(RunNotFound):
        await eng.resume_run("wrun_nope")


async def test_resume_refuses_a_workflow_the_engine_does_not_know(db_path: Path, gate: str) -> None:
    async with Engine(db_path, workflows=WORKFLOWS) as engine:
        run = await failed_pipeline(engine, gate)
    async with Engine(db_path, workflows=[retrying]) as engine:
        with pytest.raises(CannotResume) as refused:
            await engine.resume_run(run.run_id)
        assert "its workflow 'inspect.pipeline' is not registered in this engine" in str(refused.value)
        assert await engine.get_run(run.run_id).status() == RunStatus.FAILED


async def test_fork_copies_the_journal_before_the_step(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await failed_pipeline(eng, gate)
    lift(gate)
    # seq 0 record 0, 1 write, 2 record 1, 3 write, 4 record 2, 5 write, 6 guarded
    fork = await eng.fork(run.run_id, 4)
    assert fork.run_id != run.run_id
    assert await fork.result(timeout=10) == {"total": 30, "receipt": "charged"}
    assert log_lines(gate) == [
        "record 0 attempt 1",
        "record 1 attempt 1",
        "record 2 attempt 1",
        "guarded attempt 1",
        "record 2 attempt 1",
        "guarded attempt 1",
    ]
    assert await values(fork) == [{"step": 0}, {"step": 1}, {"step": 2}, {"done": "charged"}]
    assert sql.execute(
        "SELECT workflow_name, forked_from, forked_at_seq FROM runs WHERE run_id = ?", (fork.run_id,)
    ).fetchone() == (
        "inspect.pipeline",
        run.run_id,
        4,
    )
    assert (await run.describe()).status == RunStatus.FAILED  # the source is left as it was
    assert [op.seq for op in await fork.timeline()] == [0, 2, 4, 6]


async def test_fork_renumbers_stream_chunks_and_checks_its_arguments(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await failed_pipeline(eng, gate)
    fork = await eng.fork(run.run_id, 3)  # keeps record 0, its write, record 1
    with pytest.raises(Exception, match="card declined"):
        await fork.result(timeout=10)
    assert sql.execute("SELECT idx, seq FROM chunks WHERE run_id = ? ORDER BY idx", (fork.run_id,)).fetchall() == [
        (0, 1),
        (1, 3),
        (2, 5),
    ]
    with pytest.raises(ValueError, match="from_seq must be an integer >= 0, got -1"):
        await eng.fork(run.run_id, -1)
    with pytest.raises(RunNotFound):
        await eng.fork("wrun_nope", 0)


async def test_resume_brings_back_the_children_its_cancel_cancelled(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    run = await eng.start(parent, gate, "1s")
    child_id = f"{run.run_id}~1"

    def child_sleeps() -> bool:
        return bool(sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'", (child_id,)).fetchone()[0] == 1)

    await until(child_sleeps, what="the child to sleep")
    assert await run.cancel() == RunStatus.RUNNING
    assert await eng.get_run(child_id).status() == RunStatus.CANCELLED

    assert await eng.resume_run(run.run_id) == RunStatus.CANCELLED
    assert await run.result(timeout=10) == "child woke"
    assert await eng.get_run(child_id).status() == RunStatus.COMPLETED
    # Each ran its first step once; the child's sleep and last step ran after the resume.
    assert log_lines(gate) == ["record 0 attempt 1", "record 0 attempt 1", "record 1 attempt 1"]


async def test_resume_of_a_run_stopped_by_its_deadline_has_no_deadline_left(eng: Engine, gate: str) -> None:
    run = await eng.start(sleeper.with_options(timeout="200ms"), gate, "400ms")
    with pytest.raises(RunCancelled):
        await run.result(timeout=10)
    assert await eng.resume_run(run.run_id) == RunStatus.CANCELLED
    assert await run.result(timeout=10) == "woke"


async def test_fork_waits_in_the_source_queue_and_starts_its_own_child(eng: Engine, gate: str, sql: sqlite3.Connection) -> None:
    eng.queue("inspect", concurrency=1)
    source = await eng.start(parent.with_options(queue="inspect", queue_key="k"), gate, "1h")
    child_id = f"{source.run_id}~1"

    def child_sleeps() -> bool:
        return bool(sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'", (child_id,)).fetchone()[0] == 1)

    await until(child_sleeps, what="the child to sleep")
    fork = await eng.fork(source.run_id, 2)  # the child is started (seq 1) but has not answered
    assert sql.execute("SELECT queue, queue_key FROM runs WHERE run_id = ?", (fork.run_id,)).fetchone() == ("inspect", "k")
    assert await fork.status() == RunStatus.PENDING  # the source holds the queue's one slot
    await source.cancel()  # frees the slot: the fork starts, and starts a child of its own
    await until(lambda: sql.execute("SELECT COUNT(*) FROM runs WHERE run_id = ?", (f"{fork.run_id}~1",)).fetchone()[0] == 1)
    assert sql.execute("SELECT parent_run_id FROM runs WHERE run_id = ?", (f"{fork.run_id}~1",)).fetchone() == (fork.run_id,)
    await fork.cancel()


async def test_a_resumed_parent_awaits_its_failed_child_again(eng: Engine, gate: str) -> None:
    run = await eng.start(charging_parent, gate)
    with pytest.raises(RunFailed, match="card declined"):
        await run.result(timeout=10)
    child = eng.get_run(f"{run.run_id}~0")
    assert await child.status() == RunStatus.FAILED
    lift(gate)
    # The child was not resumed: the parent receives its failure again.
    assert await eng.resume_run(run.run_id) == RunStatus.FAILED
    with pytest.raises(RunFailed, match="card declined"):
        await run.result(timeout=10)
    # Resumed, the child completes; resumed after it, the parent receives that.
    assert await eng.resume_run(child.run_id) == RunStatus.FAILED
    assert await child.result(timeout=10) == {"total": 0, "receipt": "charged"}
    assert await eng.resume_run(run.run_id) == RunStatus.FAILED
    assert await run.result(timeout=10) == {"total": 0, "receipt": "charged"}
    assert log_lines(gate) == ["record 0 attempt 1", "guarded attempt 1", "guarded attempt 1"]


async def hooked(eng: Engine, run: Run) -> None:
    async def has_hook() -> bool:
        return len(await eng.list_hooks(run.run_id)) == 1

    await until(has_hook, what="the run's hook")


async def test_a_resumed_run_gets_its_hook_back(eng: Engine, gate: str) -> None:
    run = await eng.start(reviewed, gate, "d1")
    await hooked(eng, run)
    await run.cancel()
    assert await eng.list_hooks(run.run_id) == []  # released with the run
    with pytest.raises(HookNotFound):
        await eng.resume_hook("review:d1", {"ok": True})

    assert await eng.resume_run(run.run_id) == RunStatus.CANCELLED
    assert [(h.token, h.run_id) for h in await eng.list_hooks(run.run_id)] == [("review:d1", run.run_id)]
    await eng.resume_hook("review:d1", {"ok": True})
    assert await run.result(timeout=10) == {"ok": True}
    assert log_lines(gate) == ["record 0 attempt 1"]  # its step was not run again


async def test_resume_refuses_while_another_run_holds_its_token(eng: Engine, gate: str) -> None:
    first = await eng.start(reviewed, gate, "d2")
    await hooked(eng, first)
    await first.cancel()
    second = await eng.start(reviewed, gate, "d2")
    await hooked(eng, second)
    with pytest.raises(CannotResume) as refused:
        await eng.resume_run(first.run_id)
    assert str(refused.value) == (
        f"Cannot continue workflow run {first.run_id}: its hook token 'review:d2' is now held by run "
        f"{second.run_id}: let that run release it first"
    )
    assert await first.status() == RunStatus.CANCELLED


async def test_a_fork_creates_its_hooks_again(eng: Engine, gate: str) -> None:
    source = await eng.start(reviewed, gate, "d3")
    await hooked(eng, source)
    await eng.resume_hook("review:d3", "first")
    assert await source.result(timeout=10) == "first"
    fork = await eng.fork(source.run_id, 2)  # step 0 and the hook at 1 are before 2: the hook is created anew
    await hooked(eng, fork)
    await eng.resume_hook("review:d3", "second")
    assert await fork.result(timeout=10) == "second"
    assert log_lines(gate) == ["record 0 attempt 1"]
