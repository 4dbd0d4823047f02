"""Child process for hook crash tests: starts a race and serves durable.web on 127.0.0.1 until killed.

python tests/hook_child.py DB NAP      prints 'started <run id> <port>'; POST /wf/hooks/{token} resumes
"""

from __future__ import annotations

import asyncio
import sys

import hook_workflows as hw
from aiohttp import web

from durable import Engine
from durable.web import make_app


async def main(db: str, nap: float) -> None:
    engine = Engine(db, workflows=[hw.race])
    engine.resources = engine
    app = web.Application()
    app.add_subapp("/wf/", make_app(engine))
    runner = web.AppRunner(app)
    async with engine:
        await engine.execute(hw.EFFECTS_DDL)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        run = await engine.start(hw.race, nap)
        print(f"started {run.run_id} {port}", flush=True)
        await asyncio.Event().wait()  # stay up until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
