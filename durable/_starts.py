"""Starting runs: recorded before anything runs, with their run id, deadline, queue and parent.

A start with a known ``run_id`` returns the run that has it (nothing is written);
a run of another workflow with that id is a ``RunConflict``. Concurrent starts
of one id are resolved in memory: the first looks the id up and creates the run,
the others wait for it and then find the run. The engine holds its file
exclusively, so nothing else can create the id meanwhile (the insert is an
``INSERT OR IGNORE`` on the primary key all the same).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ._children import ChildRun, child_run_id
from ._deadlines import Deadline
from ._errors import EngineClosed, RunConflict
from ._ids import new_run_id
from ._models import RunStatus
from ._options import NO_OPTIONS, PLAIN, StartOptions, StartPlan, WorkflowWithOptions
from ._registry import WorkflowFunction
from ._runtime import RunContext
from ._values import encode_call

if TYPE_CHECKING:
    from ._supervisor import RunSupervisor


def _resolved(value: ChildRun[Any]) -> asyncio.Future[ChildRun[Any]]:
    future: asyncio.Future[ChildRun[Any]] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _handed_over(created: asyncio.Future[None], handle: ChildRun[Any]) -> asyncio.Future[ChildRun[Any]]:
    """Resolves to ``handle`` once ``created`` (the commit that records the child) is done."""
    future: asyncio.Future[ChildRun[Any]] = asyncio.get_running_loop().create_future()

    def done(commit: asyncio.Future[None]) -> None:
        if future.done():
            return
        if commit.cancelled():
            future.cancel()
        elif commit.exception() is not None:
            future.set_exception(commit.exception())  # type: ignore[arg-type]
        else:
            future.set_result(handle)

    created.add_done_callback(done)
    return future


def _new_context(
    runs: RunSupervisor, run_id: str, wf: WorkflowFunction[Any, Any], input_data: bytes, plan: StartPlan, now: float
) -> RunContext:
    """The context of a run being created: running since ``now`` (as journaled), or pending in its queue."""
    if plan.queue is not None:
        return RunContext(runs, run_id, wf, input_data, RunStatus.PENDING, queued=True)
    return RunContext(runs, run_id, wf, input_data, RunStatus.RUNNING, None, now)


class RunStarter:
    """Records new runs, top-level and children, and hands them to the supervisor."""

    def __init__(self, runs: RunSupervisor) -> None:
        self._runs = runs
        self._starting: dict[str, asyncio.Future[None]] = {}  # run ids whose first start is in flight

    def resolve(self, target: object, what: str = "engine.start()") -> tuple[WorkflowFunction[Any, Any], StartOptions]:
        """The workflow and options of a start: one of this engine's workflows, perhaps with options."""
        if isinstance(target, WorkflowWithOptions):
            wf, options = target.workflow, target.options
        elif isinstance(target, WorkflowFunction):
            wf, options = target, NO_OPTIONS
        else:
            raise TypeError(f"{what} needs a function decorated with @workflow, got {target!r}")
        if wf not in self._runs.catalog:
            raise ValueError(
                f"workflow {wf.name!r} is not one of this engine's workflows: pass it in Engine(path, workflows=[...])"
            )
        return wf, options

    # -- top-level runs -----------------------------------------------------------

    async def start(self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Record a run (pending, committed) and start or queue it; its run id."""
        wf, options = self.resolve(target)
        input_data = encode_call(args, kwargs)
        now = time.time()
        plan = self._plan(options, now, None)
        if options.run_id is None:
            run_id = new_run_id()
            await self._create(run_id, wf, input_data, plan, now)
            return run_id
        await self._start_once(options.run_id, wf, input_data, plan, now)
        return options.run_id

    async def _start_once(
        self, run_id: str, wf: WorkflowFunction[Any, Any], input_data: bytes, plan: StartPlan, now: float
    ) -> None:
        while (in_flight := self._starting.get(run_id)) is not None:
            await asyncio.wait((in_flight,))  # whatever came of it, look again
        claim: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[run_id] = claim
        try:
            name = self._name_in_memory(run_id) or await self._runs.journal.workflow_of(run_id)
            if name is None:
                await self._create(run_id, wf, input_data, plan, now)
                name = wf.name
        finally:
            del self._starting[run_id]
            claim.set_result(None)
        if name != wf.name:
            raise RunConflict(run_id, name, wf.name)

    def _name_in_memory(self, run_id: str) -> str | None:
        run = self._runs.active.get(run_id)
        if run is None:
            queued = self._runs.queues.waiting_run(run_id)
            run = queued.run if queued is not None else None
        return None if run is None else run.workflow.name

    async def _create(self, run_id: str, wf: WorkflowFunction[Any, Any], input_data: bytes, plan: StartPlan, now: float) -> None:
        plan = self._in_line(plan)
        journal = self._runs.journal
        run = _new_context(self._runs, run_id, wf, input_data, plan, now)

        def committed() -> None:
            # On the commit, not in the caller: a recorded run runs even if its caller
            # was cancelled meanwhile, and runs are admitted in commit order, which is
            # their queue order (and before their callers resume, so a run that ends at
            # once shares the next caller's commit).
            if self._runs.open:
                self._runs.admit(run, plan)

        await journal.commit([journal.new_run(run_id, wf.name, input_data, now, plan)], committed)
        if not self._runs.open:
            raise EngineClosed("The engine closed while the run was being started; it starts at the next open.")

    def _in_line(self, plan: StartPlan) -> StartPlan:
        """The plan with its place in its queue, taken as its insert is submitted: start order is commit order."""
        if plan.queue is None:
            return plan
        return dataclasses.replace(plan, queue_seq=self._runs.queues.next_seq())

    def _plan(self, options: StartOptions, now: float, parent: RunContext | None) -> StartPlan:
        queue = options.queue
        if queue is not None:
            self._runs.queues.check_declared(queue)
        deadline = self._deadline(options, now, parent)
        if parent is None and deadline is None and queue is None:
            return PLAIN
        return StartPlan(
            parent.run_id if parent is not None else None,
            deadline.at if deadline is not None else None,
            deadline.timeout if deadline is not None else None,
            queue,
            options.queue_key,
            options.priority,
        )

    def _deadline(self, options: StartOptions, now: float, parent: RunContext | None) -> Deadline | None:
        """The run's own deadline, or its parent's when that comes first."""
        own = None
        if options.timeout is not None:
            own = Deadline(now + options.timeout, options.timeout_text or f"{options.timeout:g}s")
        bound = self._runs.deadlines.of(parent.run_id) if parent is not None else None
        if bound is not None and (own is None or bound.at < own.at):
            return bound
        return own

    # -- children -------------------------------------------------------------------

    def start_child(
        self, parent: RunContext, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[ChildRun[Any]]:
        """``start_child`` in ``parent``'s body: a durable operation at the next sequence number."""
        wf, options = self.resolve(target, "start_child()")
        if options.run_id is not None:
            raise ValueError("a child's run id comes from its parent's id and sequence number: start_child() takes no run_id")
        input_data = encode_call(args, kwargs)
        seq, recorded = parent._claim("child", wf.name)
        run_id = child_run_id(parent.run_id, seq)
        handle: ChildRun[Any] = ChildRun(parent, self._runs, seq, run_id, recorded)
        if recorded is not None:
            return _resolved(handle)  # created before: the child runs (or ran) on its own
        parent.check_not_cancelled()
        now = time.time()
        plan = self._in_line(self._plan(options, now, parent))
        run = _new_context(self._runs, run_id, wf, input_data, plan, now)
        journal = self._runs.journal
        statements = [
            journal.new_run(run_id, wf.name, input_data, now, plan),
            journal.child_started(parent.run_id, seq, wf.name, run_id, now),
        ]

        def committed() -> None:
            if self._runs.open:
                # A cancel of the parent that came meanwhile commits after this (and cancels
                # this row with the parent's); in memory the child starts cancelled.
                reason = f"parent run {parent.run_id} was cancelled" if parent.is_cancelling else None
                self._runs.admit(run, plan, cancelled=reason)

        return _handed_over(parent.commit(statements, committed), handle)
