"""Races whose winner must be the same live and after a SIGKILL and restart.

Each workflow writes the winner it saw live, waits for the loser's result to be
journaled too (so the replay has both), parks in a short durable sleep (the
moment the test kills the process), and returns the winner it sees then.
"""

from __future__ import annotations

import asyncio
from typing import cast

from durable import get_writable, sleep, step, workflow

PARK_S = 1.5


@step
async def pause(label: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return label


async def _report(winner: str) -> str:
    await get_writable().write({"winner": winner})
    await sleep(PARK_S)
    return winner


@workflow(name="race.wait_first")
async def wait_first() -> str:
    # In a workflow body a step call returns a future (what asyncio.wait takes).
    slow, fast = cast("asyncio.Future[str]", pause("slow", 0.8)), cast("asyncio.Future[str]", pause("fast", 0.1))
    done, _ = await asyncio.wait([slow, fast], return_when=asyncio.FIRST_COMPLETED)
    winner = "+".join(sorted(f.result() for f in done))
    await slow
    return await _report(winner)


@workflow(name="race.as_completed")
async def as_completed() -> str:
    slow, fast = pause("slow", 0.8), pause("fast", 0.1)
    first = ""
    for next_done in asyncio.as_completed([slow, fast]):
        first = await next_done
        break
    await slow
    return await _report(first)


@workflow(name="race.sleep_vs_step")
async def sleep_vs_step() -> str:
    nap, work = cast("asyncio.Future[object]", sleep("300ms")), cast("asyncio.Future[object]", pause("step", 0.8))
    done, _ = await asyncio.wait([nap, work], return_when=asyncio.FIRST_COMPLETED)
    winner = "+".join(sorted("sleep" if f is nap else "step" for f in done))
    await work
    return await _report(winner)


@workflow(name="race.wait_for")
async def wait_for() -> str:
    try:
        winner = await asyncio.wait_for(pause("step", 0.8), timeout=0.3)
    except TimeoutError:
        winner = "timeout"
    await pause("after", 0.9)  # outlasts the abandoned step, so its result is journaled before the kill
    return await _report(winner)


RACES = {"wait_first": wait_first, "as_completed": as_completed, "sleep_vs_step": sleep_vs_step, "wait_for": wait_for}
