"""Helpers for tests: child processes to kill, and waiting on state another connection writes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


async def spawn_child(*args: str, script: str = "crash_child.py") -> tuple[asyncio.subprocess.Process, str]:
    """Start a child script of tests/ (crash_child.py by default) and wait for its 'started <run id>' line."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / script), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    assert line.startswith("started "), line
    return proc, line.split()[1]


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def until(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "condition", *, interval: float = 0.002
) -> None:
    """Wait for a condition that another connection or process makes true (nothing to await there)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
