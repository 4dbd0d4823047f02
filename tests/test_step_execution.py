"""How a step executes: in a Task of its own, in a context of its own, in call order.

A step is its own task: ``asyncio.timeout`` or a ``TaskGroup`` in a step acts
on the step, never on the workflow body (a step run eagerly inside the body's
task, as tried once to save a Task per step, broke exactly that, and
``durable.fetch`` with it). The body never sees what a step did to context
variables, and steps start in the order they were called.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextvars import ContextVar

from durable import Engine, get_step_metadata, step, workflow

mood: ContextVar[str] = ContextVar("test_step_execution_mood", default="calm")
order: list[str] = []
gate: dict[str, asyncio.Event] = {}


@step
async def set_mood_and_return(value: str) -> str:
    mood.set(value)
    return mood.get()


@step
async def set_mood_then_suspend(value: str) -> str:
    mood.set(value)
    await asyncio.sleep(0)
    # After the suspension, in the Task that goes on: the same context, the same step.
    return f"{mood.get()} {get_step_metadata().step_name}"


@step
async def times_out_inside() -> str:
    try:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()  # never set: the step's own timeout ends it
    except TimeoutError:
        return "the step timed out"
    return "not reached"


@workflow(name="execution.step_timeout")
async def step_with_a_timeout() -> list[str]:
    return [await times_out_inside(), "the body went on"]


@workflow(name="execution.moods")
async def moods() -> list[str]:
    seen = [await set_mood_and_return("eager"), mood.get()]
    seen += [await set_mood_then_suspend("suspended"), mood.get()]
    return seen


@step
async def note(name: str, suspend: bool) -> str:
    order.append(f"start {name}")
    if suspend:
        await gate[name].wait()
    order.append(f"end {name}")
    return name


@workflow(name="execution.order")
async def concurrent_notes() -> list[str]:
    calls = [note("a", False), note("b", True), note("c", False)]
    order.append("all called")
    gate["b"].set()
    return list(await asyncio.gather(*calls))


async def test_a_steps_context_variables_never_reach_the_body(engine: Engine) -> None:
    run = await engine.start(moods)
    assert await run.result() == ["eager", "calm", "suspended test_step_execution.set_mood_then_suspend", "calm"]
    assert mood.get() == "calm"


async def test_steps_start_in_call_order_and_a_suspended_one_finishes_after(engine: Engine, sql: sqlite3.Connection) -> None:
    order.clear()
    gate["b"] = asyncio.Event()
    run = await engine.start(concurrent_notes)
    assert await run.result() == ["a", "b", "c"]
    # The steps start once the body waits, in call order; b finds its gate open.
    assert order == ["all called", "start a", "end a", "start b", "end b", "start c", "end c"]
    ops = sql.execute("SELECT seq, name, state FROM ops WHERE run_id = ? ORDER BY seq", (run.run_id,)).fetchall()
    assert ops == [(seq, "test_step_execution.note", "completed") for seq in range(3)]
    assert engine.stats()["active_runs"] == 0


async def test_a_timeout_inside_a_step_ends_the_step_not_the_body(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(step_with_a_timeout)
    assert await run.result(timeout=10) == ["the step timed out", "the body went on"]
    ops = sql.execute("SELECT state, result FROM ops WHERE run_id = ?", (run.run_id,)).fetchall()
    assert ops == [("completed", b'"the step timed out"')]
