"""Workflows shared by crash tests and the child processes they kill."""

from __future__ import annotations

import asyncio
import time

from durable import Engine, get_step_metadata, sleep, start_child, step, workflow

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects (step_id TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS executions (step_id TEXT NOT NULL, pid INTEGER NOT NULL)",
)


@step
async def side_effect(n: int) -> int:
    """Records its execution, and its effect keyed by step_id (so at most once)."""
    import os

    engine: Engine = ENGINE["engine"]
    step_id = get_step_metadata().step_id
    await engine.execute("INSERT INTO executions (step_id, pid) VALUES (?, ?)", (step_id, os.getpid()))
    await asyncio.sleep(0.003)
    await engine.execute("INSERT OR IGNORE INTO effects (step_id, n) VALUES (?, ?)", (step_id, n))
    return n * 2


ENGINE: dict[str, Engine] = {}


@workflow(name="crash.steps")
async def many_steps(count: int) -> int:
    total = 0
    for n in range(count):
        total += await side_effect(n)
    return total


@workflow(name="crash.sleeper")
async def sleeper(seconds: float) -> float:
    await sleep(seconds)
    return time.time()


@workflow(name="crash.family")
async def family(count: int) -> dict[str, object]:
    """A parent whose child does the steps: the child's id and outcome live in the parent's journal."""
    child = await start_child(many_steps, count)
    total = await child.result()
    return {"child": child.run_id, "total": total}
