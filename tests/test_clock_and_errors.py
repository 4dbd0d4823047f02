"""The deterministic clock, metadata times, errors with stacks, and runs started from steps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import until

from durable import (
    Engine,
    RunFailed,
    StepFailed,
    get_resources,
    get_step_metadata,
    get_workflow_metadata,
    now,
    sleep,
    step,
    workflow,
)


@step
async def stamp(label: str) -> dict[str, Any]:
    meta = get_step_metadata()
    return {"label": label, "step_id": meta.step_id, "started": meta.started_at.timestamp()}


@workflow(name="clock.times")
async def times_wf() -> list[float]:
    seen = [now().timestamp()]
    await stamp("a")
    seen.append(now().timestamp())
    await sleep("50ms")
    seen.append(now().timestamp())
    started = get_workflow_metadata().started_at
    assert started is not None
    seen.append(started.timestamp())
    await sleep("1h")  # parked: the test closes the engine here and replays
    return seen


def _micro(epoch: float) -> float:
    """An epoch time as a datetime keeps it: to the microsecond."""
    return datetime.fromtimestamp(epoch, UTC).timestamp()


async def _parked(engine: Engine, run_id: str) -> bool:
    ops = await engine.fetchall("SELECT COUNT(*) FROM ops WHERE run_id = ? AND name = '1h'", (run_id,))
    return bool(ops[0][0])


async def test_now_is_the_same_on_replay_and_follows_recorded_completions(tmp_path: Path) -> None:
    db = tmp_path / "clock.db"
    before = datetime.now(UTC).timestamp()
    async with Engine(db, workflows=[times_wf]) as engine:
        run = await engine.start(times_wf)
        await until(lambda: _parked(engine, run.run_id), what="the run to park")
        rows = await engine.fetchall("SELECT kind, completed_at, wake_at FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,))
        (started_at,) = (await engine.fetchall("SELECT started_at FROM runs WHERE run_id = ?", (run.run_id,)))[0]
    step_done, nap_wake = rows[0][1], rows[1][2]
    # Replayed in a new engine: the list the body builds is made of journaled times only.
    async with Engine(db, workflows=[times_wf]) as engine:
        await engine.execute("UPDATE ops SET wake_at = 0 WHERE run_id = ? AND name = '1h'", (run.run_id,))
    async with Engine(db, workflows=[times_wf]) as engine:
        seen = await engine.get_run(run.run_id).result(timeout=30)
    assert seen == [_micro(started_at), _micro(step_done), _micro(nap_wake), _micro(started_at)]
    assert before <= started_at <= step_done < nap_wake


async def test_now_outside_a_body_is_the_wall_clock() -> None:
    before = datetime.now(UTC)
    assert before <= now() <= datetime.now(UTC)


async def test_step_metadata_started_at_is_each_attempts_start(engine: Engine) -> None:
    @workflow(name="clock.stamp")
    async def stamp_wf() -> dict[str, Any]:
        return await stamp("x")

    t0 = datetime.now(UTC).timestamp()
    out = await (await engine.start(stamp_wf)).result(timeout=10)
    assert out["label"] == "x"
    assert t0 <= out["started"] <= datetime.now(UTC).timestamp()


# -- errors keep their stack ---------------------------------------------------------------------


def _explode(value: int) -> None:
    raise ValueError(f"bad value {value}")


@step(max_retries=0)
async def failing(value: int) -> None:
    _explode(value)


@workflow(name="errors.catches")
async def catches_wf() -> dict[str, str]:
    try:
        await failing(7)
    except StepFailed as exc:
        return {"type": exc.error_type, "message": exc.message, "stack": exc.stack, "step": exc.step_name}
    return {}


@workflow(name="errors.raises")
async def raises_wf() -> None:
    await failing(8)


async def test_step_failed_carries_type_message_and_the_original_stack(tmp_path: Path) -> None:
    db = tmp_path / "errors.db"
    async with Engine(db, workflows=[catches_wf]) as engine:
        run = await engine.start(catches_wf)
        live = await run.result(timeout=10)
    assert live["type"] == "ValueError"
    assert live["message"] == "bad value 7"
    assert live["step"] == "test_clock_and_errors.failing"
    lines = live["stack"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad value 7"
    assert any("in _explode" in line for line in lines)
    # The stored failure replays with the identical stack.
    async with Engine(db, workflows=[catches_wf]) as engine:
        await engine.execute("UPDATE runs SET status = 'running', output = NULL WHERE run_id = ?", (run.run_id,))
    async with Engine(db, workflows=[catches_wf]) as engine:
        assert await engine.get_run(run.run_id).result(timeout=10) == live


async def test_run_failed_carries_the_workflow_stack_and_the_steps(tmp_path: Path) -> None:
    db = tmp_path / "errors.db"
    async with Engine(db, workflows=[raises_wf]) as engine:
        run = await engine.start(raises_wf)
        with pytest.raises(RunFailed) as caught:
            await run.result(timeout=10)
        info = await run.describe()
    error = caught.value
    assert error.error_type == "StepFailed"
    assert error.message == "Step test_clock_and_errors.failing failed: ValueError: bad value 8"
    assert error.error == "StepFailed: Step test_clock_and_errors.failing failed: ValueError: bad value 8"
    assert "in raises_wf" in error.stack
    assert "The error of step test_clock_and_errors.failing:" in error.stack
    assert error.stack.rstrip().endswith("ValueError: bad value 8")
    assert (info.error_type, info.error_message, info.error_stack) == (error.error_type, error.message, error.stack)
    async with Engine(db, workflows=[raises_wf]) as engine:  # the same after a restart
        with pytest.raises(RunFailed) as again:
            await engine.get_run(run.run_id).result(timeout=10)
    assert (again.value.error_type, again.value.message, again.value.stack) == (error.error_type, error.message, error.stack)


async def test_timeline_attempts_keep_their_stack(engine: Engine) -> None:
    run = await engine.start(raises_wf)
    with pytest.raises(RunFailed):
        await run.result(timeout=10)
    (op,) = await run.timeline()
    (attempt,) = op.attempts
    assert attempt.error == "ValueError: bad value 8"
    assert attempt.stack is not None and attempt.stack.rstrip().endswith("ValueError: bad value 8")


# -- a run started from a step is a run of its own ----------------------------------------------


@step
async def child_step(n: int) -> str:
    return get_step_metadata().step_id


@workflow(name="spawn.child")
async def spawned_wf(n: int) -> dict[str, Any]:
    ids = [await child_step(n), await child_step(n + 1)]
    await sleep("10ms")
    return {"run": get_workflow_metadata().run_id, "step_ids": ids}


@step
async def spawner() -> str:
    engine = get_resources(Engine)
    run = await engine.start(spawned_wf, 1)
    return run.run_id


@workflow(name="spawn.parent")
async def spawner_wf() -> str:
    return await spawner()


async def test_a_run_started_from_a_step_has_its_own_steps_sleeps_and_ids(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "spawn.db", workflows=[spawner_wf, spawned_wf])
    engine.resources = engine
    async with engine:
        child_id = await (await engine.start(spawner_wf)).result(timeout=10)
        out = await engine.get_run(child_id).result(timeout=10)
        timeline = await engine.get_run(child_id).timeline()
    assert out == {"run": child_id, "step_ids": [f"{child_id}:0", f"{child_id}:1"]}
    assert [(op.seq, op.kind, op.name) for op in timeline] == [
        (0, "step", "test_clock_and_errors.child_step"),
        (1, "step", "test_clock_and_errors.child_step"),
        (2, "sleep", "10ms"),
    ]


async def test_gathered_steps_are_not_mixed_up(engine: Engine) -> None:
    @workflow(name="spawn.gather")
    async def gather_wf() -> list[str]:
        results = await asyncio.gather(*(child_step(i) for i in range(5)))
        return list(results)

    run = await engine.start(gather_wf)
    assert await run.result(timeout=10) == [f"{run.run_id}:{i}" for i in range(5)]
