"""Child runs: ids from the parent's journal, outcomes recorded in it, cancelled with it, bounded by its deadline."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness import until

from durable import (
    ChildCancelled,
    ChildRun,
    Engine,
    RunCancelled,
    RunFailed,
    RunStatus,
    get_workflow_metadata,
    sleep,
    start_child,
    step,
    workflow,
)

executions: list[str] = []
gates: dict[str, asyncio.Event] = {}


@step
async def add_one(x: int) -> int:
    executions.append(f"add_one {x}")
    return x + 1


@workflow(name="children.leaf")
async def leaf(x: int) -> int:
    return await add_one(x)


@workflow(name="children.parent")
async def parent(n: int) -> list[Any]:
    child: ChildRun[int] = await start_child(leaf, n)
    direct = await leaf(n + 10)  # a workflow called in a workflow body: a child, awaited
    return [child.run_id, await child.result(), direct, get_workflow_metadata().run_id]


@workflow(name="children.broken")
async def broken() -> None:
    raise ValueError("no stock")


@workflow(name="children.catches")
async def catches() -> dict[str, str]:
    try:
        await broken()
    except RunFailed as exc:
        return {"run_id": exc.run_id, "error": exc.error}
    return {}


@workflow(name="children.lets_it_fail")
async def lets_it_fail() -> None:
    await broken()


@workflow(name="children.napper")
async def napper(i: int) -> int:
    await add_one(i)
    await sleep("1h")
    return i


@workflow(name="children.waits_for_napper")
async def waits_for_napper() -> str:
    child = await start_child(napper, 1)
    try:
        await child.result()
    except ChildCancelled as exc:
        return f"went on after {exc}"
    return "child woke"


@workflow(name="children.fan_out")
async def fan_out(count: int) -> list[int]:
    kids = await asyncio.gather(*(start_child(napper, i) for i in range(count)))
    return list(await asyncio.gather(*(kid.result() for kid in kids)))


@step
async def held(i: int) -> int:
    executions.append(f"held {i}")
    if len([e for e in executions if e.startswith("held")]) == 10:
        gates["all held"].set()
    await gates["release"].wait()
    executions.append(f"released {i}")
    return i


@workflow(name="children.held_child")
async def held_child(i: int) -> int:
    await held(i)
    await add_one(i)  # never starts: the child is cancelled while held() runs
    return i


@workflow(name="children.held_parent")
async def held_parent(count: int) -> list[int]:
    kids = await asyncio.gather(*(start_child(held_child, i) for i in range(count)))
    return [await kid.result() for kid in kids]


@workflow(name="children.bounded")
async def bounded() -> str:
    child = await start_child(napper.with_options(timeout="1h"), 0)
    await child.result()
    return "unreachable"


@workflow(name="children.outlived")
async def outlived() -> int:
    value = await leaf(1)
    await sleep("1h")
    return value


def children_of(sql: sqlite3.Connection, run_id: str) -> list[tuple[str, str]]:
    return sql.execute("SELECT run_id, status FROM runs WHERE parent_run_id = ? ORDER BY run_id", (run_id,)).fetchall()


async def test_a_child_and_a_called_workflow_are_child_runs(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(parent, 1)
    assert await run.result() == [f"{run.run_id}~0", 2, 12, run.run_id]
    assert children_of(sql, run.run_id) == [(f"{run.run_id}~0", "completed"), (f"{run.run_id}~1", "completed")]
    child = await engine.get_run(f"{run.run_id}~0").describe()
    assert (child.parent_run_id, child.workflow_name, child.args) == (run.run_id, "children.leaf", [1])
    assert [(op.seq, op.kind, op.name, op.status) for op in await run.timeline()] == [
        (0, "child", "children.leaf", "completed"),
        (1, "child", "children.leaf", "completed"),
    ]


async def test_a_failed_child_raises_run_failed_in_its_parent(engine: Engine) -> None:
    caught = await engine.start(catches)
    assert await caught.result() == {"run_id": f"{caught.run_id}~0", "error": "ValueError: no stock"}
    failing = await engine.start(lets_it_fail)
    with pytest.raises(RunFailed) as err:
        await failing.result()
    assert err.value.error == f"RunFailed: Workflow run {failing.run_id}~0 failed: ValueError: no stock"


async def test_a_cancelled_child_is_not_its_parents_cancellation(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(waits_for_napper)
    child_id = f"{run.run_id}~0"
    sleeping = "SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'"
    await until(lambda: sql.execute(sleeping, (child_id,)).fetchone() == (1,), what="the child to sleep")
    assert await engine.get_run(child_id).cancel() is RunStatus.RUNNING
    assert await run.result() == f"went on after Child workflow run {child_id} was cancelled"
    assert await run.status() is RunStatus.COMPLETED


async def test_cancelling_a_parent_stops_its_ten_children_before_it_returns(engine: Engine, sql: sqlite3.Connection) -> None:
    executions.clear()
    run = await engine.start(fan_out, 10)
    await until(
        lambda: (
            sql.execute("SELECT COUNT(*) FROM ops WHERE run_id LIKE ? AND kind = 'sleep'", (f"{run.run_id}~%",)).fetchone()
            == (10,)
        ),
        what="ten sleeping children",
    )
    assert await run.cancel() is RunStatus.RUNNING
    assert engine.stats()["active_runs"] == 0
    note = f"parent run {run.run_id} was cancelled"
    assert sql.execute(
        "SELECT status, error, COUNT(*) FROM runs WHERE parent_run_id = ? GROUP BY status, error", (run.run_id,)
    ).fetchall() == [("cancelled", note, 10)]
    for i in range(10):
        with pytest.raises(RunCancelled, match=note):
            await engine.get_run(f"{run.run_id}~{i}").result()


async def test_children_cancelled_mid_step_finish_it_and_start_no_other(engine: Engine, sql: sqlite3.Connection) -> None:
    executions.clear()
    gates.update({"all held": asyncio.Event(), "release": asyncio.Event()})
    run = await engine.start(held_parent, 10)
    await gates["all held"].wait()
    cancelling = asyncio.ensure_future(run.cancel())

    async def children_cancelled() -> bool:
        return all([await engine.get_run(f"{run.run_id}~{i}").status() is RunStatus.CANCELLED for i in range(10)])

    await until(children_cancelled, what="the children to be cancelled")
    assert not cancelling.done()  # it waits for the steps in flight
    gates["release"].set()
    assert await cancelling is RunStatus.RUNNING
    assert sorted(executions) == sorted([f"held {i}" for i in range(10)] + [f"released {i}" for i in range(10)])
    assert engine.stats()["active_runs"] == 0
    # Each child's step in flight recorded its result; none started another.
    assert sql.execute(
        "SELECT kind, state, COUNT(*) FROM ops WHERE run_id LIKE ? GROUP BY kind, state", (f"{run.run_id}~%",)
    ).fetchall() == [("step", "completed", 10)]


async def test_a_parents_deadline_bounds_its_children(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(bounded.with_options(timeout="300ms"))
    with pytest.raises(RunCancelled, match="deadline of 300ms passed"):
        await run.result()
    child_id = f"{run.run_id}~0"
    (parent_deadline,) = sql.execute("SELECT deadline FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    rows = sql.execute("SELECT run_id, status, deadline, completed_at FROM runs ORDER BY run_id").fetchall()
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (run.run_id, "cancelled", parent_deadline),
        (child_id, "cancelled", parent_deadline),  # its own 1h came later
    ]
    assert all(completed >= parent_deadline for *_, completed in rows)
    assert engine.stats()["active_runs"] == 0


async def test_a_childs_outcome_replays_from_the_parents_journal(db_path: Path, sql: sqlite3.Connection) -> None:
    executions.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(outlived)
        await until(
            lambda: sql.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep'", (run.run_id,)).fetchone() == (1,),
            what="the parent to sleep after its child",
        )
    assert sql.execute("SELECT kind, state, result FROM ops WHERE run_id = ? AND seq = 0", (run.run_id,)).fetchone() == (
        "child",
        "completed",
        b"2",
    )
    async with Engine(db_path) as engine:
        # The replay meets the recorded child: no new child, no second execution.
        await until(lambda: engine.stats()["active_runs"] == 1, what="the parent to resume")
        assert await engine.get_run(run.run_id).cancel() is RunStatus.RUNNING
    assert executions == ["add_one 1"]
    assert children_of(sql, run.run_id) == [(f"{run.run_id}~0", "completed")]


@workflow(name="children.with_id")
async def with_id() -> str:
    try:
        await start_child(leaf.with_options(run_id="mine"), 1)
    except ValueError as exc:
        return str(exc)
    return "started"


async def test_start_child_outside_a_workflow_body_and_with_a_run_id(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match=r"^start_child\(\) must be called in a workflow body"):
        start_child(leaf, 1)
    assert await leaf(4) == 5  # a plain call outside a workflow body
    run = await engine.start(with_id)
    assert await run.result() == (
        "a child's run id comes from its parent's id and sequence number: start_child() takes no run_id"
    )


@workflow(name="children.queued_child")
async def queued_child() -> int:
    child = await start_child(leaf.with_options(queue="narrow"), 1)
    return await child.result()


@workflow(name="children.sleeper")
async def sleeper() -> None:
    await sleep("1h")


async def test_cancelling_a_parent_takes_its_queued_child_out_of_the_queue(engine: Engine, sql: sqlite3.Connection) -> None:
    executions.clear()
    engine.queue("narrow", concurrency=1)
    hold = await engine.start(sleeper.with_options(queue="narrow"))
    run = await engine.start(queued_child)
    child = engine.get_run(f"{run.run_id}~0")

    async def child_queued() -> bool:
        return (
            sql.execute("SELECT COUNT(*) FROM runs WHERE parent_run_id = ?", (run.run_id,)).fetchone() == (1,)
            and (await child.describe()).queue_position == 1
        )

    await until(child_queued, what="the child to wait in its queue")
    assert await run.cancel() is RunStatus.RUNNING
    info = await child.describe()
    assert (info.status, info.started_at, info.queue_position, info.error) == (
        RunStatus.CANCELLED,
        None,
        None,
        f"parent run {run.run_id} was cancelled",
    )
    assert sql.execute("SELECT unwound FROM runs WHERE run_id = ?", (child.run_id,)).fetchone() == (1,)
    assert engine.stats()["queued_runs"] == 0
    assert await hold.cancel() is RunStatus.RUNNING
    assert executions == []


async def test_a_parent_cancel_its_caller_gave_up_on_still_ends_its_queued_child(engine: Engine, sql: sqlite3.Connection) -> None:
    executions.clear()
    engine.queue("narrow", concurrency=1)
    hold = await engine.start(sleeper.with_options(queue="narrow"))
    run = await engine.start(queued_child)
    child = engine.get_run(f"{run.run_id}~0")

    async def child_queued() -> bool:
        return (
            sql.execute("SELECT COUNT(*) FROM runs WHERE parent_run_id = ?", (run.run_id,)).fetchone() == (1,)
            and (await child.describe()).queue_position == 1
        )

    await until(child_queued, what="the child to wait in its queue")
    # The caller of cancel() is cancelled while the cancellation (the child's with it) commits.
    caller = asyncio.create_task(run.cancel())
    await asyncio.sleep(0)  # one loop turn: the caller queues the cancellation and waits for its commit
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(RunCancelled, match=f"parent run {run.run_id} was cancelled"):
        await child.result(timeout=10)  # it ends, rather than wait out of its queue forever
    assert engine.stats()["queued_runs"] == 0
    assert await hold.cancel() is RunStatus.RUNNING
    assert executions == []


async def test_a_parent_cancelled_after_a_restart_still_stops_its_children(db_path: Path, sql: sqlite3.Connection) -> None:
    executions.clear()
    async with Engine(db_path) as engine:
        run = await engine.start(fan_out, 3)
        sleeping = "SELECT COUNT(*) FROM ops WHERE run_id LIKE ? AND kind = 'sleep'"
        await until(lambda: sql.execute(sleeping, (f"{run.run_id}~%",)).fetchone() == (3,), what="three sleeping children")
    async with Engine(db_path) as engine:
        await until(lambda: engine.stats()["active_runs"] == 4, what="the parent and its children to resume")
        assert await engine.get_run(run.run_id).cancel() is RunStatus.RUNNING
        assert engine.stats()["active_runs"] == 0
    assert children_of(sql, run.run_id) == [(f"{run.run_id}~{i}", "cancelled") for i in range(3)]
    assert sorted(executions) == ["add_one 0", "add_one 1", "add_one 2"]
