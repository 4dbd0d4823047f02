"""Child process for crash tests: starts a workflow, prints its run id, runs until killed.

python tests/crash_child.py DB steps COUNT
python tests/crash_child.py DB sleep SECONDS
python tests/crash_child.py DB family COUNT
python tests/crash_child.py DB resume
"""

from __future__ import annotations

import asyncio
import sys

import crash_workflows as cw

from durable import Engine


async def main(db: str, mode: str, arg: str | None) -> None:
    async with Engine(db) as engine:
        cw.ENGINE["engine"] = engine
        for ddl in cw.EFFECTS_DDL:
            await engine.execute(ddl)
        if mode == "steps":
            run = await engine.start(cw.many_steps, int(arg or "200"))
        elif mode == "family":
            run = await engine.start(cw.family, int(arg or "200"))
        elif mode == "sleep":
            run = await engine.start(cw.sleeper, float(arg or "2"))
        else:
            await asyncio.Event().wait()
            return
        print(f"started {run.run_id}", flush=True)
        await run.result()
        print("finished", flush=True)
        await asyncio.Event().wait()  # stay up until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
