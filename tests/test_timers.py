"""Durable timers: never early, late by milliseconds, and counted across restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import crash_workflows  # noqa: F401  (registers crash.sleeper for the reopened engine)
import pytest
from harness import kill_child, spawn_crash_child, sql_rows, until

from durable import Engine, sleep, workflow


@workflow(name="timers.nap")
async def nap(seconds: float) -> float:
    await sleep(seconds)
    return time.time()


@workflow(name="timers.until")
async def nap_until(iso: str) -> float:
    await sleep(datetime.fromisoformat(iso))
    return time.time()


def sleep_rows(path: Path, run_id: str) -> list[tuple[float, float]]:
    """(started_at, wake_at) of the run's journaled sleeps."""
    return sql_rows(path, "SELECT started_at, wake_at FROM ops WHERE run_id = ? AND kind = 'sleep'", (run_id,))


def wake_at(path: Path, run_id: str) -> tuple[float, float]:
    [(started, due)] = sleep_rows(path, run_id)
    return float(started), float(due)


def shift_sleep(path: Path, run_id: str, seconds: float) -> None:
    """Move the run's journaled sleep ``seconds`` into the past: as if the process had died that long ago."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "UPDATE ops SET started_at = started_at - ?, wake_at = wake_at - ? WHERE run_id = ? AND kind = 'sleep'",
            (seconds, seconds, run_id),
        )


async def test_sleep_is_never_early_and_late_by_milliseconds(engine: Engine, db_path: Path) -> None:
    runs = [await engine.start(nap, s) for s in (0.05, 0.1, 0.2, 0.3)]
    for run, seconds in zip(runs, (0.05, 0.1, 0.2, 0.3), strict=True):
        woke = await run.result(timeout=5)
        slept, due = wake_at(db_path, run.run_id)
        assert due - slept == pytest_approx(seconds)
        assert due <= woke < due + 0.05


async def test_sleep_until_a_datetime(engine: Engine, db_path: Path) -> None:
    target = datetime.now(UTC) + timedelta(milliseconds=150)
    run = await engine.start(nap_until, target.isoformat())
    woke = await run.result(timeout=5)
    assert target.timestamp() <= woke < target.timestamp() + 0.05
    assert wake_at(db_path, run.run_id)[1] == pytest_approx(target.timestamp())


async def test_killed_sleeper_wakes_on_schedule_after_reopen(db_path: Path) -> None:
    proc, run_id = await spawn_crash_child(db_path, "sleep", "2")
    await until(lambda: len(sleep_rows(db_path, run_id)) == 1, what="the child's sleep to be journaled")
    await kill_child(proc)
    slept, due = wake_at(db_path, run_id)
    assert due - slept == pytest_approx(2.0)
    shift_sleep(db_path, run_id, 1.0)  # as if it was killed 1 s into its sleep
    _, due = wake_at(db_path, run_id)
    assert time.time() < due  # still asleep at the reopen, for about 1 s
    async with Engine(db_path) as engine:
        woke = await engine.get_run(run_id).result(timeout=5)
    # 2 s after it slept, not 2 s after the reopen.
    assert due <= woke < due + 0.1


async def test_overdue_wait_fires_at_open(db_path: Path) -> None:
    proc, run_id = await spawn_crash_child(db_path, "sleep", "0.3")
    await until(lambda: len(sleep_rows(db_path, run_id)) == 1, what="the child's sleep to be journaled")
    await kill_child(proc)
    shift_sleep(db_path, run_id, 0.6)  # killed, and not reopened until 0.3 s after it was due
    _, due = wake_at(db_path, run_id)
    assert due < time.time() - 0.3
    opened = time.time()
    async with Engine(db_path) as engine:
        woke = await engine.get_run(run_id).result(timeout=5)
    assert opened <= woke < opened + 0.2


async def test_waits_queued_out_of_order_wake_in_time_order(engine: Engine, db_path: Path) -> None:
    # Longest first: each later sleep is due before the ones already queued.
    durations = [0.6, 0.5, 0.1, 0.4, 0.2, 0.3, 0.15, 0.45]
    runs = await asyncio.gather(*(engine.start(nap, s) for s in durations))
    woke = await asyncio.gather(*(run.result(timeout=5) for run in runs))
    dues = [wake_at(db_path, run.run_id)[1] for run in runs]
    for due, time_woken in zip(dues, woke, strict=True):
        assert due <= time_woken < due + 0.1  # never early, and not held behind a later wait
    by_due = [d for _, d in sorted(zip(dues, durations, strict=True))]
    by_waking = [d for _, d in sorted(zip(woke, durations, strict=True))]
    assert by_waking == by_due == sorted(durations)


@workflow(name="timers.fan_out")
async def fan_out(n: int) -> int:
    await asyncio.gather(*(sleep("300ms") for _ in range(n)))
    return n


async def test_a_fan_out_of_sleeps_does_not_hold_up_other_timers(engine: Engine, db_path: Path) -> None:
    # Starting thousands of waits in one run must cost each wait O(1): a quadratic
    # step there blocked the loop for seconds, and every other timer with it.
    other = await engine.start(nap, 0.2)
    fan = await engine.start(fan_out, 10_000)
    woke = await other.result(timeout=10)
    assert await fan.result(timeout=10) == 10_000
    _, due = wake_at(db_path, other.run_id)
    assert due <= woke < due + 0.5


@workflow(name="timers.park")
async def park() -> None:
    await sleep("1h")


async def test_cancelled_sleeps_leave_the_timer_queue(engine: Engine, sql: sqlite3.Connection) -> None:
    runs = await asyncio.gather(*(engine.start(park) for _ in range(300)))
    await until(lambda: engine.stats()["timers"] == 300, what="300 sleeps to be queued")
    for run in runs:
        await run.cancel()
    # Each cancelled sleep held its run's frames until its hour was up; once most
    # queued waits had ended, the queue was rebuilt without them.
    assert engine.stats()["timers"] < 100
    assert engine.stats()["active_runs"] == 0


def pytest_approx(value: float) -> object:
    return pytest.approx(value, abs=0.002)
