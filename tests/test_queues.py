"""Queues: limits counted inside the steps, priority and start order, restarts, cancels, rates."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness import until

from durable import Engine, Queue, RunCancelled, RunStatus, sleep, step, workflow

# Each test resets the state it uses.
crowd: dict[str, Any] = {}
order_log: list[int] = []
started_at: list[float] = []


def reset_crowd(wave_size: int) -> None:
    crowd.clear()
    crowd.update(wave_size=wave_size, now=0, peak=0, arrived=0, per_key={}, key_peak={}, key_index={}, waves={}, counts={})


async def _wave(index: int) -> None:
    """Hold the step until ``wave_size`` steps of its wave are inside at once."""
    counts, waves = crowd["counts"], crowd["waves"]
    counts[index] = counts.get(index, 0) + 1
    event = waves.setdefault(index, asyncio.Event())
    if counts[index] == crowd["wave_size"]:
        event.set()
    await event.wait()


@step
async def enter(key: str | None) -> None:
    crowd["now"] += 1
    crowd["peak"] = max(crowd["peak"], crowd["now"])
    if key is None:
        index = crowd["arrived"] // crowd["wave_size"]
    else:
        per_key, key_peak, key_index = crowd["per_key"], crowd["key_peak"], crowd["key_index"]
        per_key[key] = per_key.get(key, 0) + 1
        key_peak[key] = max(key_peak.get(key, 0), per_key[key])
        index = key_index.get(key, 0)  # the i-th run of each key makes wave i
        key_index[key] = index + 1
    crowd["arrived"] += 1
    await _wave(index)
    crowd["now"] -= 1
    if key is not None:
        crowd["per_key"][key] -= 1


@workflow(name="queues.crowd")
async def crowd_wf(key: str | None) -> str:
    await enter(key)
    return key or "-"


@step
async def record(n: int) -> int:
    order_log.append(n)
    started_at.append(asyncio.get_running_loop().time())
    return n


@workflow(name="queues.recorded")
async def recorded(n: int) -> int:
    return await record(n)


@workflow(name="queues.blocker")
async def blocker() -> None:
    await sleep("1h")


def expected_order(priorities: list[int | None]) -> list[int]:
    """DBOS order: no priority first, then smaller priority first, then start order."""
    return sorted(range(len(priorities)), key=lambda n: (priorities[n] is not None, priorities[n] or 0, n))


async def test_concurrency_three_never_runs_more_than_three(engine: Engine) -> None:
    reset_crowd(wave_size=3)
    engine.queue("three", concurrency=3)
    runs = [await engine.start(crowd_wf.with_options(queue="three"), None) for _ in range(21)]
    assert await asyncio.gather(*(run.result() for run in runs)) == ["-"] * 21
    assert crowd["peak"] == 3
    assert crowd["arrived"] == 21
    assert engine.stats()["queued_runs"] == 0


async def test_per_key_one_serializes_each_key_while_keys_run_in_parallel(engine: Engine) -> None:
    reset_crowd(wave_size=3)
    engine.queue("accounts", per_key_concurrency=1)
    runs = [await engine.start(crowd_wf.with_options(queue="accounts", queue_key=key), key) for _ in range(4) for key in "abc"]
    assert await asyncio.gather(*(run.result() for run in runs)) == list("abc") * 4
    assert crowd["key_peak"] == {"a": 1, "b": 1, "c": 1}
    assert crowd["peak"] == 3  # the three keys ran side by side
    assert crowd["key_index"] == {"a": 4, "b": 4, "c": 4}


async def test_a_busy_key_lets_other_keys_pass_and_its_runs_wait_their_turn(engine: Engine) -> None:
    order_log.clear()
    engine.queue("keyed", concurrency=2, per_key_concurrency=1)
    hold_a = await engine.start(blocker.with_options(queue="keyed", queue_key="a"))
    a1 = await engine.start(recorded.with_options(queue="keyed", queue_key="a"), 1)
    a2 = await engine.start(recorded.with_options(queue="keyed", queue_key="a"), 2)
    hold_b = await engine.start(blocker.with_options(queue="keyed", queue_key="b"))  # passes the waiting a-runs
    b1 = await engine.start(recorded.with_options(queue="keyed", queue_key="b"), 3)
    infos = [await run.describe() for run in (hold_a, a1, a2, hold_b, b1)]
    assert [info.queue_position for info in infos] == [None, 1, 2, None, 3]
    assert [infos[n].status for n in (1, 2, 4)] == [RunStatus.PENDING] * 3
    await hold_b.cancel()  # b's slot frees: b1 starts, not the a-runs, whose key is still busy
    assert await b1.result() == 3
    assert [(await run.describe()).queue_position for run in (a1, a2)] == [1, 2]
    await hold_a.cancel()
    assert [await a1.result(), await a2.result()] == [1, 2]
    assert order_log == [3, 1, 2]


async def test_priority_then_start_order_and_a_restart_keeps_every_place(db_path: Path, sql: sqlite3.Connection) -> None:
    order_log.clear()
    priorities: list[int | None] = [None if n % 3 == 0 else (n * 7) % 5 for n in range(100)]
    expected = expected_order(priorities)
    first = Engine(db_path)
    first.queue("line", concurrency=1)  # declared before open
    async with first as engine:
        hold = await engine.start(blocker.with_options(queue="line"))
        runs = [await engine.start(recorded.with_options(queue="line", priority=p), n) for n, p in enumerate(priorities)]
        positions = [(await run.describe()).queue_position for run in runs]
        assert [positions[n] for n in expected] == list(range(1, 101))
        assert await hold.status() is RunStatus.RUNNING
        assert engine.stats()["queued_runs"] == 100
    assert sql.execute("SELECT COUNT(*) FROM runs WHERE status = 'pending'").fetchone() == (100,)

    second = Engine(db_path)
    second.queue("line", concurrency=1)
    async with second as engine:
        again = [(await engine.get_run(run.run_id).describe()).queue_position for run in runs]
        assert again == positions
        assert order_log == []
        await engine.get_run(hold.run_id).cancel()  # frees the one slot: the queue drains in order
        assert await asyncio.gather(*(engine.get_run(run.run_id).result() for run in runs)) == list(range(100))
    assert order_log == expected


async def test_a_queued_run_cancelled_never_starts(db_path: Path, sql: sqlite3.Connection) -> None:
    order_log.clear()
    engine = Engine(db_path)
    engine.queue("one", concurrency=1)
    async with engine:
        hold = await engine.start(blocker.with_options(queue="one"))
        waiting = await engine.start(recorded.with_options(queue="one"), 7)
        behind = await engine.start(recorded.with_options(queue="one"), 8)
        assert [(await run.describe()).queue_position for run in (hold, waiting, behind)] == [None, 1, 2]
        assert await waiting.cancel() is RunStatus.PENDING
        assert await waiting.cancel() is RunStatus.CANCELLED  # a second cancel is a no-op
        assert (await behind.describe()).queue_position == 1
        with pytest.raises(RunCancelled):
            await waiting.result()
        info = await waiting.describe()
        assert (info.status, info.started_at, info.queue_position, info.queue) == (RunStatus.CANCELLED, None, None, "one")
        assert [chunk async for chunk in waiting.readable()] == []  # its stream is closed
    # Nothing to unwind: it does not come back at the next open either.
    assert sql.execute("SELECT status, unwound FROM runs WHERE run_id = ?", (waiting.run_id,)).fetchone() == ("cancelled", 1)
    again = Engine(db_path)
    again.queue("one", concurrency=1)
    async with again as engine:
        await engine.get_run(hold.run_id).cancel()
        assert await engine.get_run(behind.run_id).result() == 8
        assert engine.stats()["active_runs"] == 0
    assert order_log == [8]


async def test_a_queued_run_whose_cancel_was_abandoned_after_its_commit_never_starts(
    engine: Engine, sql: sqlite3.Connection
) -> None:
    # asyncio.wait_for(run.cancel(), ...) timing out, say: the caller is cancelled while
    # the cancellation waits for its commit, which goes through all the same.
    order_log.clear()
    engine.queue("one", concurrency=1)
    hold = await engine.start(blocker.with_options(queue="one"))
    waiting = await engine.start(recorded.with_options(queue="one"), 7)
    behind = await engine.start(recorded.with_options(queue="one"), 8)
    caller = asyncio.create_task(waiting.cancel())
    await asyncio.sleep(0)  # one loop turn: the caller queues the cancellation and waits for its commit
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await hold.cancel() is RunStatus.RUNNING
    assert await behind.result() == 8
    assert order_log == [8]
    with pytest.raises(RunCancelled):
        await waiting.result()
    stored = sql.execute("SELECT status, started_at FROM runs WHERE run_id = ?", (waiting.run_id,)).fetchone()
    assert stored == ("cancelled", None)
    assert await waiting.cancel() is RunStatus.CANCELLED


async def test_a_queued_run_whose_cancel_could_not_be_committed_keeps_its_place(engine: Engine) -> None:
    order_log.clear()
    engine.queue("one", concurrency=1)
    hold = await engine.start(blocker.with_options(queue="one"))
    waiting = await engine.start(recorded.with_options(queue="one"), 7)
    behind = await engine.start(recorded.with_options(queue="one"), 8)
    await engine.execute("PRAGMA query_only = 1")  # the writer connection turns read-only
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await waiting.cancel()
    await engine.execute("PRAGMA query_only = 0")
    assert [(await run.describe()).queue_position for run in (waiting, behind)] == [1, 2]
    assert await hold.cancel() is RunStatus.RUNNING
    assert [await waiting.result(), await behind.result()] == [7, 8]
    assert order_log == [7, 8]


async def test_a_deadline_passing_in_the_queue_cancels_the_run_unstarted(engine: Engine, sql: sqlite3.Connection) -> None:
    engine.queue("slow", concurrency=1)
    hold = await engine.start(blocker.with_options(queue="slow"))
    late = await engine.start(recorded.with_options(queue="slow", timeout="100ms"), 1)
    with pytest.raises(RunCancelled, match="deadline of 100ms passed"):
        await late.result()
    info = await late.describe()
    assert (info.status, info.started_at, info.queue_position) == (RunStatus.CANCELLED, None, None)
    assert info.completed_at is not None and info.deadline is not None and info.completed_at >= info.deadline
    assert await hold.cancel() is RunStatus.RUNNING


async def test_rate_limits_starts_per_period(engine: Engine) -> None:
    order_log.clear()
    started_at.clear()
    engine.queue("rated", rate=(2, "300ms"))
    loop = asyncio.get_running_loop()
    before = loop.time()
    runs = [await engine.start(recorded.with_options(queue="rated"), n) for n in range(6)]
    assert await asyncio.gather(*(run.result() for run in runs)) == list(range(6))
    assert order_log == list(range(6))
    # Runs 2k and 2k+1 start in the k-th window of 300 ms (a lower bound: never sooner).
    for n in range(6):
        assert started_at[n] - before >= 0.3 * (n // 2)


async def test_declaring_queues(db_path: Path) -> None:
    engine = Engine(db_path)
    assert engine.queue("billing", concurrency=8, per_key_concurrency=1, rate=(100, "1m")) == Queue("billing", 8, 1, (100, 60.0))
    assert engine.queue("billing", concurrency=8, per_key_concurrency=1, rate=(100, 60)) == Queue("billing", 8, 1, (100, 60.0))
    with pytest.raises(ValueError, match=r"^queue 'billing' is already declared as"):
        engine.queue("billing", concurrency=2)
    for kwargs, message in [
        ({"concurrency": 0}, "concurrency must be a positive integer or None (no limit), got 0"),
        ({"per_key_concurrency": True}, "per_key_concurrency must be a positive integer or None (no limit), got True"),
        ({"rate": (5,)}, "rate must be (count, period) such as (100, '1m'), got (5,)"),
        ({"rate": (5, 0)}, "rate's period must be more than 0, got 0"),
    ]:
        with pytest.raises(ValueError) as caught:
            engine.queue("other", **kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == message


async def test_a_queue_declared_after_open_starts_the_runs_that_waited_for_it(db_path: Path) -> None:
    order_log.clear()
    first = Engine(db_path)
    first.queue("later", concurrency=1)
    async with first as engine:
        hold = await engine.start(blocker.with_options(queue="later"))
        waiting = await engine.start(recorded.with_options(queue="later"), 3)
    async with Engine(db_path) as engine:  # resumed without its queue: both wait for it
        assert (await engine.get_run(waiting.run_id).describe()).queue_position == 1
        with pytest.raises(ValueError, match="queue 'later' is not declared"):
            await engine.start(recorded.with_options(queue="later"), 4)
        engine.queue("later", concurrency=1)
        await engine.get_run(hold.run_id).cancel()
        assert await engine.get_run(waiting.run_id).result() == 3
    assert order_log == [3]


async def test_a_queued_run_waits_pending_until_its_slot(engine: Engine, sql: sqlite3.Connection) -> None:
    engine.queue("solo", concurrency=1)
    hold = await engine.start(blocker.with_options(queue="solo"))
    waiting = await engine.start(recorded.with_options(queue="solo"), 1)
    assert await waiting.status() is RunStatus.PENDING
    assert sql.execute("SELECT status FROM runs WHERE run_id = ?", (waiting.run_id,)).fetchone() == ("pending",)
    listed = {info.run_id: info.queue_position for info in await engine.list_runs()}
    assert listed == {hold.run_id: None, waiting.run_id: 1}
    await hold.cancel()
    assert await waiting.result() == 1

    async def idle() -> bool:
        return engine.stats()["active_runs"] == 0

    await until(idle, what="the queue to be idle")
    assert engine.stats()["queued_runs"] == 0


async def test_a_better_priority_arriving_for_a_waiting_key_goes_first(engine: Engine) -> None:
    order_log.clear()
    engine.queue("mixed", concurrency=1, per_key_concurrency=1)
    hold = await engine.start(blocker.with_options(queue="mixed", queue_key="z"))
    runs = [
        await engine.start(recorded.with_options(queue="mixed", queue_key=key, priority=priority), n)
        for n, (key, priority) in enumerate([("a", 5), ("a", 1), ("b", 3), (None, None)])
    ]
    assert [(await run.describe()).queue_position for run in runs] == [4, 2, 3, 1]
    await hold.cancel()
    assert await asyncio.gather(*(run.result() for run in runs)) == [0, 1, 2, 3]
    assert order_log == [3, 1, 2, 0]
