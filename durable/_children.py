"""Child runs: a workflow started from another one's body, its id and outcome journaled in the parent.

``start_child(wf, ...)`` is a durable operation of the parent (kind ``child``,
sequence number at call time). The child's run id is derived from the parent's
id and that number (``<parent id>~<seq>``), and the child's row and the
parent's operation commit together: a replay finds the same child, and no crash
can create a second one. Ids given with ``with_options(run_id=...)`` cannot
contain ``~``, so no other run can take a child's id. ``await child.result()`` waits for the child to end
and records its outcome at the same sequence number before the parent goes on,
so a replay delivers the recorded value or error without waiting again.

What a child's end raises in its parent: a failed child ``RunFailed`` (with the
child's error); a cancelled child ``ChildCancelled``, an ``Exception`` the
parent may catch. ``RunCancelled`` only ever means that the parent itself was
cancelled. Cancelling a parent cancels its unfinished children; a parent that
completes or fails leaves the children it did not await running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

import orjson

from ._context import current_run, current_step
from ._errors import ChildCancelled, RunFailed
from ._models import RunStatus
from ._values import decode

if TYPE_CHECKING:
    from ._options import WorkflowWithOptions
    from ._registry import WorkflowFunction
    from ._replay import Recorded
    from ._runtime import Outcome, RunContext

P = ParamSpec("P")
R = TypeVar("R")


#: Child run ids are ``<parent id>~<seq>``; ids given by callers cannot contain it, so the two never collide.
CHILD_MARK = "~"


def child_run_id(parent_run_id: str, seq: int) -> str:
    """The run id of the child a parent starts at sequence number ``seq``: the same on every replay."""
    return f"{parent_run_id}{CHILD_MARK}{seq}"


class Outcomes(Protocol):
    """Where a child's outcome comes from: the engine's runs."""

    async def outcome(self, run_id: str, timeout: float | None) -> Outcome: ...


def _recorded(outcome: Outcome) -> tuple[str, bytes]:
    """A child's outcome as its parent's journal keeps it: the state, and the output or the error."""
    status, output, error = outcome
    if status is RunStatus.COMPLETED:
        return "completed", output if output is not None else b"null"
    if error is None:
        return status.value, orjson.dumps({"error": None})
    return status.value, orjson.dumps(
        {"error": error.summary, "type": error.error_type, "message": error.message, "stack": error.stack}
    )


def _delivered(run_id: str, state: str, data: bytes) -> Any:
    if state == "completed":
        return decode(data)
    stored = orjson.loads(data)
    error = stored.get("error")
    if state == "cancelled":
        raise ChildCancelled(run_id, error)
    raise RunFailed(run_id, error or "unknown error", stored.get("type", ""), stored.get("message", ""), stored.get("stack", ""))


class ChildRun(Generic[R]):
    """A child run started by ``start_child``: its id, and its result as a durable operation of the parent."""

    def __init__(self, parent: RunContext, outcomes: Outcomes, seq: int, run_id: str, recorded: Recorded | None) -> None:
        self.run_id = run_id
        self._parent = parent
        self._outcomes = outcomes
        self._seq = seq
        self._settled: tuple[str, bytes] | None = None
        if recorded is not None and recorded.state != "started":
            self._settled = (recorded.state, recorded.result or b"null")

    def __repr__(self) -> str:
        return f"<ChildRun {self.run_id}>"

    async def result(self) -> R:
        """The child's return value once it ended; ``RunFailed`` or ``ChildCancelled`` when it did not complete."""
        if self._settled is None:
            outcome = await self._outcome()
            state, data = _recorded(outcome)
            parent = self._parent
            journal = parent.host.journal
            await parent.commit([journal.child_settled(parent.run_id, self._seq, state, data, time.time())])
            self._settled = (state, data)
        value: R = _delivered(self.run_id, *self._settled)
        return value

    async def _outcome(self) -> Outcome:
        """The child's outcome; ``RunCancelled`` as soon as the parent is cancelled."""
        cancelled = self._parent._new_wait()
        ended = asyncio.ensure_future(self._outcomes.outcome(self.run_id, None))
        try:
            done, _ = await asyncio.wait((cancelled, ended), return_when=asyncio.FIRST_COMPLETED)
            if ended not in done:
                cancelled.result()  # the parent was cancelled: raises RunCancelled
            return await ended
        finally:
            if not ended.done():
                ended.cancel()
            if not cancelled.done():
                cancelled.set_result(None)


def start_child(
    workflow: WorkflowFunction[P, R] | WorkflowWithOptions[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> Awaitable[ChildRun[R]]:
    """In a workflow body: start ``workflow`` as a child run; awaiting gives its ``ChildRun`` once recorded.

    The sequence number is taken at the call. ``wf.with_options(timeout=..., queue=...)``
    works too (not ``run_id``: a child's id comes from its parent's). A parent's
    deadline bounds its children's.
    """
    run = current_run.get()
    if run is None or current_step.get() is not None:
        raise RuntimeError("start_child() must be called in a workflow body; a step starts runs of its own with engine.start()")
    started: Awaitable[ChildRun[R]] = run.host.start_child(run, workflow, args, kwargs)
    return started


async def child_result(started: Awaitable[ChildRun[R]]) -> R:
    """What ``await wf(...)`` in a workflow body does: start the child, then await its result."""
    child = await started
    return await child.result()


class Family:
    """Which runs in memory started which unfinished runs, for cancelling a parent with its children."""

    def __init__(self) -> None:
        self._children: dict[str, set[str]] = {}
        self._parent: dict[str, str] = {}

    def add(self, parent_run_id: str, run_id: str) -> None:
        self._children.setdefault(parent_run_id, set()).add(run_id)
        self._parent[run_id] = parent_run_id

    def forget(self, run_id: str) -> None:
        """The run ended: it is no longer an unfinished child."""
        parent = self._parent.pop(run_id, None)
        if parent is not None:
            siblings = self._children[parent]
            siblings.discard(run_id)
            if not siblings:
                del self._children[parent]

    def descendants(self, run_id: str) -> list[str]:
        """Unfinished runs below ``run_id``, parents before their children."""
        out: list[str] = []
        frontier = [run_id]
        while frontier:
            below = [child for parent in frontier for child in sorted(self._children.get(parent, ()))]
            out += below
            frontier = below
        return out
