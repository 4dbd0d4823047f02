"""Workflows shared by the hook crash tests and the child process they kill."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from durable import Engine, create_hook, get_resources, get_step_metadata, sleep, step, workflow

EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS executions (step_id TEXT NOT NULL, name TEXT NOT NULL, pid INTEGER NOT NULL)"


async def _record(name: str) -> None:
    engine = get_resources(Engine)
    await engine.execute(
        "INSERT INTO executions (step_id, name, pid) VALUES (?, ?, ?)", (get_step_metadata().step_id, name, os.getpid())
    )


@step
async def hook_won(payload: Any) -> str:
    await _record("hook_won")
    return f"hook:{payload}"


@step
async def sleep_won() -> str:
    await _record("sleep_won")
    return "sleep"


@workflow(name="hookcrash.race")
async def race(nap: float) -> list[Any]:
    """A hook raced against a sleep; the loser's outcome is taken afterwards."""
    hook = create_hook(token="race")
    waiting = hook.wait()
    napping = asyncio.ensure_future(sleep(nap))
    done, _ = await asyncio.wait({waiting, napping}, return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        outcome = [await hook_won(waiting.result())]
    else:
        outcome = [await sleep_won(), await waiting]  # the pending receive gets the next payload
    finish = create_hook(token="race:finish")
    outcome.append(await finish)
    return outcome
