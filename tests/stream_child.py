"""A process for test_streams.py to SIGKILL: one workflow whose steps and body write chunks.

    python tests/stream_child.py DB_PATH STEPS

Prints the run id, then ``step <i>`` once step i's chunk is committed. The test
imports this module too, so the names below are explicit: they must match
whether the module runs as ``__main__`` or is imported as ``stream_child``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from durable import Engine, get_writable, step, workflow

WORKFLOW_NAME = "stream_child.steps"
_progress = {"print": False}


@step(name="stream_child.write_step")
async def write_step(i: int) -> int:
    await get_writable().write({"step": i})
    if _progress["print"]:
        print(f"step {i}", flush=True)
    # A step that is killed after its write but before its result commits re-executes on resume.
    await asyncio.sleep(0.002)
    return i


@workflow(name=WORKFLOW_NAME)
async def steps_wf(n: int) -> int:
    w = get_writable()
    for i in range(n):
        await write_step(i)
        await w.write({"body": i})
    return n


def expected_stream(n: int) -> list[dict[str, int]]:
    """The stream a run of ``steps_wf(n)`` ends with, crash or not."""
    return [item for i in range(n) for item in ({"step": i}, {"body": i})]


async def _main(db: str, n: int) -> None:
    _progress["print"] = True
    async with Engine(db) as engine:
        run = await engine.start(steps_wf, n)
        print(run.run_id, flush=True)
        await run.result()
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
