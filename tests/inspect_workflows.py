"""Workflows for the inspect, resume and fork tests, importable by ``python -m durable --import``.

They are steered through files, so that a test, the CLI and a server process all
see the same switches: a step fails while its ``gate`` file exists, and every
execution of a step appends a line to ``<gate>.log``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from durable import (
    FatalError,
    RetryableError,
    WorkflowFunction,
    create_hook,
    get_step_metadata,
    get_writable,
    sleep,
    start_child,
    step,
    workflow,
)


def log_lines(gate: str) -> list[str]:
    path = Path(gate + ".log")
    return path.read_text().splitlines() if path.exists() else []


def lift(gate: str) -> None:
    """Remove the gate: guarded steps succeed from now on."""
    Path(gate).unlink()


def _shut(gate: str) -> bool:
    return Path(gate).exists()


def _log(gate: str, what: str) -> None:
    with Path(gate + ".log").open("a") as log:
        log.write(f"{what} attempt {get_step_metadata().attempt}\n")


@step(name="inspect.record")
async def record(gate: str, i: int) -> int:
    _log(gate, f"record {i}")
    return i * 10


@step(name="inspect.guarded", max_retries=1)
async def guarded(gate: str) -> str:
    _log(gate, "guarded")
    if _shut(gate):
        raise FatalError("card declined")
    return "charged"


@step(name="inspect.flaky")
async def flaky(gate: str, failures: int) -> str:
    attempt = get_step_metadata().attempt
    _log(gate, "flaky")
    if attempt <= failures:
        raise RetryableError(f"try {attempt} failed", retry_after="10ms")
    return f"ok after {attempt}"


@workflow(name="inspect.pipeline")
async def pipeline(gate: str, n: int) -> dict[str, object]:
    """``n`` recorded steps (a stream chunk after each), then the guarded charge."""
    out = get_writable()
    total = 0
    for i in range(n):
        total += await record(gate, i)
        await out.write({"step": i})
    receipt = await guarded(gate)
    await out.write({"done": receipt})
    return {"total": total, "receipt": receipt}


@workflow(name="inspect.retrying")
async def retrying(gate: str) -> str:
    """A step that fails twice before it succeeds, a short sleep, one more step."""
    first = await flaky(gate, 2)
    await sleep("10ms")
    await record(gate, 1)
    return first


@workflow(name="inspect.sleeper")
async def sleeper(gate: str, delay: str) -> str:
    """A step, a long sleep, a step: cancel it while it sleeps."""
    await record(gate, 0)
    await sleep(delay)
    await record(gate, 1)
    return "woke"


@workflow(name="inspect.parent")
async def parent(gate: str, delay: str) -> str:
    """A step, then a child that sleeps ``delay``; returns what the child returned."""
    await record(gate, 0)
    child = await start_child(sleeper, gate, delay)
    return f"child {await child.result()}"


@workflow(name="inspect.charging_parent")
async def charging_parent(gate: str) -> dict[str, object]:
    """A child pipeline of one step and the guarded charge; returns what it returned."""
    child = await start_child(pipeline, gate, 1)
    return await child.result()


@workflow(name="inspect.reviewed")
async def reviewed(gate: str, doc: str) -> object:
    """A step, then a hook ``review:<doc>``; returns its first payload."""
    await record(gate, 0)
    hook = create_hook(token=f"review:{doc}", metadata={"doc": doc})
    return await hook


WORKFLOWS: list[WorkflowFunction[Any, Any]] = [pipeline, retrying, sleeper, parent, charging_parent, reviewed]
