"""Child process for replay-order tests: ``python tests/race_child.py DB RACE``.

Starts the race, prints ``started <run id>``, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

import race_workflows

from durable import Engine


async def main(db: str, race: str) -> None:
    async with Engine(db, workflows=list(race_workflows.RACES.values())) as engine:
        run = await engine.start(race_workflows.RACES[race])
        print(f"started {run.run_id}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
