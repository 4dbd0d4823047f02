"""Retries: backoff, retry_after, FatalError, max_retries, StepFailed live and on replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from harness import before_the_timer, make_unfinished, until

from durable import (
    Engine,
    FatalError,
    RetryableError,
    Run,
    RunCancelled,
    RunStatus,
    StepFailed,
    get_step_metadata,
    step,
    workflow,
)

attempts: dict[str, list[tuple[int, str, float]]] = {}
FIRST_BACKOFF_S = 1.0  # the doubling wait's first retry (docs/engine.md, "Retries and backoff")


def record(key: str) -> int:
    meta = get_step_metadata()
    attempts.setdefault(key, []).append((meta.attempt, meta.step_id, time.time()))
    return meta.attempt


@step
async def flaky(key: str, failures: int, retry_after: str | None) -> str:
    attempt = record(key)
    if attempt <= failures:
        raise RetryableError(f"try {attempt} failed", retry_after=retry_after)
    return f"ok after {attempt}"


@step
async def boom(key: str) -> str:
    record(key)
    raise ValueError("card declined")


@step(max_retries=1)
async def boom_once(key: str) -> str:
    record(key)
    raise ValueError("still broken")


@step
async def fatal(key: str) -> str:
    record(key)
    raise FatalError("no such customer")


@workflow(name="retries.flaky")
async def flaky_wf(key: str, failures: int, retry_after: str | None) -> str:
    return await flaky(key, failures, retry_after)


@workflow(name="retries.catching")
async def catching(kind: str, key: str) -> list[str]:
    step_fn = {"boom": boom, "boom_once": boom_once, "fatal": fatal}[kind]
    try:
        await step_fn(key)
    except StepFailed as exc:
        return [exc.step_name, exc.error_type, exc.message, str(exc)]
    return ["no failure"]


async def _timeline_nonempty(run: Run) -> bool:
    return bool(await run.timeline())


async def test_retryable_error_with_retry_after(engine: Engine) -> None:
    run = await engine.start(flaky_wf, "ra", 2, "50ms")
    assert await run.result(timeout=5) == "ok after 3"
    tries = attempts["ra"]
    assert [a for a, _, _ in tries] == [1, 2, 3]
    assert len({sid for _, sid, _ in tries}) == 1  # step_id is stable across retries
    gaps = [tries[i + 1][2] - tries[i][2] for i in range(2)]
    # At least the 50 ms asked for, and not the exponential backoff's 1 s and 2 s.
    assert all(0.05 <= g < FIRST_BACKOFF_S for g in gaps), gaps
    [op] = await run.timeline()
    assert op.status == "completed"
    assert [(a.attempt, a.error) for a in op.attempts] == [
        (1, "RetryableError: try 1 failed"),
        (2, "RetryableError: try 2 failed"),
        (3, None),
    ]


async def test_default_backoff_starts_at_one_second(engine: Engine) -> None:
    run = await engine.start(flaky_wf, "backoff", 1, None)
    assert await run.result(timeout=5) == "ok after 2"
    [op] = await run.timeline()
    gap = (op.attempts[1].started_at - op.attempts[0].ended_at).total_seconds()
    assert 1.0 <= gap < 1.5


async def test_generic_exception_retries_three_times_then_step_failed(engine: Engine) -> None:
    # Backoff 1 s, 2 s, 4 s would take 7 s; retry_after is not available to a plain
    # exception, so this test uses max_retries=1 and checks the default count on its own.
    run = await engine.start(catching, "boom_once", "b1")
    assert await run.result(timeout=5) == [
        "test_retries.boom_once",
        "ValueError",
        "still broken",
        "Step test_retries.boom_once failed: ValueError: still broken",
    ]
    assert [a for a, _, _ in attempts["b1"]] == [1, 2]
    assert boom.max_retries == 3


async def test_fatal_error_stops_at_once(engine: Engine) -> None:
    run = await engine.start(catching, "fatal", "f1")
    assert await run.result(timeout=5) == [
        "test_retries.fatal",
        "FatalError",
        "no such customer",
        "Step test_retries.fatal failed: FatalError: no such customer",
    ]
    assert [a for a, _, _ in attempts["f1"]] == [1]
    [op] = await run.timeline()
    assert op.status == "failed"
    assert [(a.attempt, a.error) for a in op.attempts] == [(1, "FatalError: no such customer")]


async def test_step_failed_is_identical_on_replay(db_path: Path) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(catching, "fatal", "f2")
        live = await run.result(timeout=5)
    make_unfinished(db_path, run.run_id)
    async with Engine(db_path) as engine:
        assert await engine.get_run(run.run_id).result(timeout=5) == live
    assert [a for a, _, _ in attempts["f2"]] == [1]  # not executed again


async def test_uncaught_step_failure_fails_the_run(engine: Engine) -> None:
    run = await engine.start(flaky_wf, "never", 99, "1ms")
    with pytest.raises(Exception, match=r"StepFailed: Step test_retries\.flaky failed: RetryableError: try 4 failed"):
        await run.result(timeout=5)
    assert [a for a, _, _ in attempts["never"]] == [1, 2, 3, 4]


async def test_retry_wait_is_durable_across_restart(db_path: Path) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(flaky_wf, "durable", 1, "1500ms")
        await until(lambda: _timeline_nonempty(run), what="the failed attempt to be journaled")
    failed_at = attempts["durable"][0][2]
    # The engine stays closed for most of the wait: a retry counted from the reopen comes
    # a second later than one counted from the failure, far more than a loaded machine delays it.
    closed_s = 1.0
    await asyncio.sleep(max(0.0, failed_at + closed_s - time.time()))
    reopened_at = time.time()
    async with Engine(db_path) as engine:
        assert await engine.get_run(run.run_id).result(timeout=5) == "ok after 2"
    retried_at = attempts["durable"][1][2]
    assert failed_at + 1.5 <= retried_at < reopened_at + 1.5  # counted from the failure, not from the reopen
    assert attempts["durable"][1][0] == 2  # attempt numbering survives the restart


async def test_cancel_interrupts_a_retry_wait(engine: Engine) -> None:
    run = await engine.start(flaky_wf, "cancel-wait", 1, "1h")
    await until(lambda: _timeline_nonempty(run), what="the failed attempt to be journaled")
    assert await before_the_timer(run.cancel(), "cancel() of a run waiting 1 h to retry") is RunStatus.RUNNING
    with pytest.raises(RunCancelled):
        await run.result(timeout=1)
    assert [a for a, _, _ in attempts["cancel-wait"]] == [1]
