"""Child process for hook crash tests: starts a race, then resumes hooks as told on stdin.

python tests/hook_child.py DB NAP      prints 'started <run id>'; stdin lines 'TOKEN JSON' -> 'resumed TOKEN'
"""

from __future__ import annotations

import asyncio
import sys

import hook_workflows as hw
import orjson

from durable import Engine


async def main(db: str, nap: float) -> None:
    engine = Engine(db, workflows=[hw.race])
    engine.resources = engine
    async with engine:
        await engine.execute(hw.EFFECTS_DDL)
        run = await engine.start(hw.race, nap)
        print(f"started {run.run_id}", flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            token, _, payload = line.decode().strip().partition(" ")
            await engine.resume_hook(token, orjson.loads(payload))
            print(f"resumed {token}", flush=True)
        await asyncio.Event().wait()  # stay up until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
