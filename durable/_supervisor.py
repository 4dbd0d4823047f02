"""The runs of one engine: which are in memory, how they stop, resume and are cancelled.

``RunSupervisor`` is the ``RunHost`` of every ``RunContext`` and what a ``Run``
handle talks to. It owns the in-memory runs, the callers waiting for outcomes,
and the resumption of runs stopped by a fault of the journal; and, for how runs
start, the queues, the deadlines and who is whose child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

from ._children import ChildRun, Family
from ._deadlines import Deadline, Deadlines
from ._errors import CannotCancel, EngineClosed, RunNotFound
from ._failures import ErrorInfo
from ._hook_registry import HookRegistry
from ._journal import Journal, Statement
from ._models import RunStatus
from ._options import StartPlan
from ._phase import Phase
from ._queues import QueuedRun, QueueScheduler
from ._registry import WorkflowCatalog
from ._replay import Replay, StoredRun
from ._runtime import Outcome, RunContext
from ._starts import RunStarter
from ._streams import DEFAULT_NAMESPACE, StreamChunk, StreamHub
from ._timers import TimerQueue

log = logging.getLogger("durable")

FAULT_RETRY_MAX_S = 30.0

T = TypeVar("T")


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed after its caller was cancelled", task.get_name(), exc_info=task.exception())


# Submits statements with what follows their commit and their failure: ``Journal.commit``, ``RunContext.commit``.
_CommitWith = Callable[[list[Statement], Callable[[], None], Callable[[BaseException], None]], asyncio.Future[None]]


class _FaultRecovery:
    """Runs stopped by a failed write, resumed with backoff once writes may succeed."""

    def __init__(self) -> None:
        self.retries: dict[str, asyncio.TimerHandle] = {}
        self.backoff: dict[str, float] = {}
        # Step tasks of a faulted run, cancelled but maybe not finished: a resume or a
        # cancel waits for them, so two executions of one step never overlap.
        self.leftovers: dict[str, list[asyncio.Task[None]]] = {}
        self.resumes: set[asyncio.Task[None]] = set()

    def unfinished_steps(self, run_id: str) -> list[asyncio.Task[None]]:
        return [task for task in self.leftovers.get(run_id, ()) if not task.done()]

    def next_delay(self, run_id: str) -> float:
        delay = min(FAULT_RETRY_MAX_S, self.backoff.get(run_id, 0.5) * 2)
        self.backoff[run_id] = delay
        return delay

    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self.resumes, *(task for left in self.leftovers.values() for task in left)]

    def stop(self) -> None:
        for handle in self.retries.values():
            handle.cancel()
        self.retries.clear()


class _RecentOutcomes:
    """Outcomes of the runs that ended last: ``result()`` of a run that just ended needs no read."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._by_run: OrderedDict[str, Outcome] = OrderedDict()

    def remember(self, run_id: str, outcome: Outcome) -> None:
        self._by_run[run_id] = outcome
        if len(self._by_run) > self.LIMIT:
            self._by_run.popitem(last=False)

    def get(self, run_id: str) -> Outcome | None:
        return self._by_run.get(run_id)

    def forget(self, run_id: str) -> None:
        self._by_run.pop(run_id, None)


class RunSupervisor:
    """Owns the runs in memory of one engine."""

    def __init__(
        self, journal: Journal, timers: TimerQueue, hub: StreamHub, catalog: WorkflowCatalog, cancel_grace: float
    ) -> None:
        self.journal = journal
        self.timers = timers
        self.hub = hub
        self.catalog = catalog
        self.resources: Any = None
        self.cancel_grace = cancel_grace
        self.open = False
        self._recent = _RecentOutcomes()
        self.active: dict[str, RunContext] = {}
        self._waiters: dict[str, list[asyncio.Future[Outcome | None]]] = {}
        self._faults = _FaultRecovery()
        # Runs cancelled while no context held them: a resume registers them as cancelled.
        self._cancelled_inactive: set[str] = set()
        self.queues = QueueScheduler(self.launch)
        self.deadlines = Deadlines(timers, self._deadline_passed)
        self.family = Family()
        self.starter = RunStarter(self)
        # Work the engine finishes whoever asked for it (cancels of runs whose deadline
        # passed, resumes, forks); close cancels it.
        self._owned: set[asyncio.Task[Any]] = set()
        self.hooks = HookRegistry(journal, self._run_is_over)

    def _run_is_over(self, run_id: str) -> bool:
        run = self.active.get(run_id)
        return run is not None and run.status.is_terminal

    # -- RunHost --------------------------------------------------------------

    def run_stopped(self, run: RunContext) -> None:
        run_id = run.run_id
        if self.active.get(run_id) is run:
            del self.active[run_id]
        self.queues.release(run_id)  # the next run of its queue starts now
        if run.phase is Phase.ENDED:
            if run.outcome is not None:
                self._recent.remember(run_id, run.outcome)
            self.deadlines.disarm(run_id)
            self.family.forget(run_id)
            self.hooks.release_run(run_id)  # the journal released them with the final status
            if self._faults.backoff:
                self._faults.backoff.pop(run_id, None)
            if self._waiters:
                self._notify(run_id, run.outcome)

    def run_faulted(self, run: RunContext, exc: BaseException) -> None:
        left = [task for task in run.steps if not task.done()]
        if left:
            self._faults.leftovers[run.run_id] = left
        self._schedule_resume(run.run_id, exc)

    def start_child(
        self, parent: RunContext, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[ChildRun[Any]]:
        return self.starter.start_child(parent, target, args, kwargs)

    # -- starting and stopping ------------------------------------------------------

    def launch(self, run: RunContext) -> None:
        self._recent.forget(run.run_id)  # resumed: what it ended with before no longer holds
        self.active[run.run_id] = run
        run.start()

    def admit(self, run: RunContext, plan: StartPlan, cancelled: str | None = None) -> None:
        """Start a recorded run, or queue it; its deadline armed, its parent told.

        ``cancelled``: the run was cancelled with its parent while being created; it
        unwinds at once, or, queued, ends without starting.
        """
        run_id = run.run_id
        if plan.parent_run_id is not None:
            self.family.add(plan.parent_run_id, run_id)
        if plan.deadline is not None:
            self.deadlines.arm(run_id, Deadline(plan.deadline, plan.timeout or ""))
        if cancelled is not None:
            if run.phase is Phase.QUEUED:
                run.never_started(cancelled)
                return
            run.request_cancel(cancelled)
        if run.phase is Phase.QUEUED:
            self.queues.submit(run, plan)
            return
        if plan.queue is not None:
            self.queues.occupy(run_id, plan)  # it started before: it holds its slot again
        self.launch(run)

    async def resume(self, run_ids: list[str] | None) -> None:
        """Load unfinished runs (all, or the given ones) from the journal and start them."""
        runs, replays = await self.journal.runs_to_resume(run_ids)
        self._check_open()
        # Runs that hold a slot register before any waiting run is given one.
        self.queues.paused = True
        try:
            for stored in runs:
                if stored.run_id not in self.active and self.queues.waiting_run(stored.run_id) is None:
                    self._resume_one(stored, replays[stored.run_id])
        finally:
            self.queues.paused = False
        self.queues.dispatch_all()

    def _resume_one(self, stored: StoredRun, replay: Replay) -> None:
        wf = self.catalog.get(stored.workflow_name)
        if wf is None:
            log.warning(
                "run %s: workflow %r is not registered; it stays %s until a process that registers it opens the journal",
                stored.run_id,
                stored.workflow_name,
                stored.status,
            )
            return
        status = RunStatus(stored.status)
        cancelled = stored.run_id in self._cancelled_inactive or status is RunStatus.CANCELLED
        queued = stored.plan.queue is not None and status is RunStatus.PENDING and not cancelled
        run = RunContext(self, stored.run_id, wf, stored.input_data, status, replay, stored.started_at, queued=queued)
        if cancelled:
            # Cancelled while out of memory, or before its body saw it: it unwinds now.
            self._cancelled_inactive.discard(stored.run_id)
            run.request_cancel(stored.error)
        self.admit(run, stored.plan)

    async def close(self) -> None:
        """Stop every run where it is; they resume at the next open."""
        self.open = False
        self._faults.stop()
        self.queues.close()  # first: runs that stop now must not start queued ones
        tasks = [task for run in list(self.active.values()) for task in run.detach()]
        tasks += self._faults.tasks()
        tasks += self._owned
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self.active.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(EngineClosed("The engine was closed while waiting for a result."))
        self._waiters.clear()

    def _check_open(self) -> None:
        if not self.open:
            raise EngineClosed(
                "The engine is not open: use 'async with Engine(path)' or await engine.open(), and not after close()."
            )

    # -- faults ---------------------------------------------------------------------

    def _schedule_resume(self, run_id: str, exc: BaseException) -> None:
        if not self.open:
            return
        delay = self._faults.next_delay(run_id)
        log.warning("run %s stopped: the journal could not be written (%s); resuming in %.1f s", run_id, exc, delay)
        self._faults.retries[run_id] = asyncio.get_running_loop().call_later(delay, self._retry_faulted, run_id)

    def _retry_faulted(self, run_id: str) -> None:
        self._faults.retries.pop(run_id, None)
        if self.open and run_id not in self.active:
            task = asyncio.get_running_loop().create_task(self._resume_after_fault(run_id))
            self._faults.resumes.add(task)
            task.add_done_callback(self._faults.resumes.discard)

    async def _resume_after_fault(self, run_id: str) -> None:
        left = self._faults.leftovers.pop(run_id, [])
        if left:
            await asyncio.wait(left)
        try:
            await self.resume([run_id])
        except Exception as exc:  # still failing: try again later
            self._schedule_resume(run_id, exc)

    # -- status and outcome -----------------------------------------------------------

    async def status(self, run_id: str) -> RunStatus:
        run = self.active.get(run_id)
        if run is not None:
            return run.status
        self._check_open()
        status = await self.journal.run_status(run_id)
        if status is None:
            raise RunNotFound(run_id)
        return RunStatus(status)

    async def run_row(self, run_id: str) -> tuple[Any, ...]:
        self._check_open()
        row = await self.journal.run_row(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def _notify(self, run_id: str, outcome: Outcome | None) -> None:
        for waiter in self._waiters.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(outcome)

    async def outcome(self, run_id: str, timeout: float | None) -> Outcome:
        """The run's final status, output and error, once it has stopped."""
        # Registered before looking: a run that ends meanwhile still notifies this waiter.
        waiter: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(waiter)
        try:
            if run_id not in self.active:
                recent = self._recent.get(run_id)
                stored = recent if recent is not None else await self._stored_outcome(run_id)
                if stored[0].is_terminal:
                    return stored  # not in memory and over: the journal holds the outcome
            # In memory, or unfinished and out of memory (faulted, to be resumed).
            outcome = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        finally:
            self._forget_waiter(run_id, waiter)
        return outcome if outcome is not None else await self._stored_outcome(run_id)

    async def _stored_outcome(self, run_id: str) -> Outcome:
        self._check_open()
        row = await self.journal.run_outcome(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return RunStatus(row[0]), row[1], row[2]

    def _forget_waiter(self, run_id: str, waiter: asyncio.Future[Outcome | None]) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[run_id]

    # -- cancellation -------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str | None = None) -> RunStatus:
        """Cancel the run and its unfinished children; the previous status, once all of them stopped.

        ``reason`` (a deadline that passed) becomes the run's error.
        """
        self._check_open()
        while True:
            run = self.active.get(run_id)
            if run is not None and run.phase in (Phase.ACTIVE, Phase.CANCELLING):
                return await self._cancel_active(run, reason)
            if run is not None:  # ending, or faulted and unwinding: let it stop, then look again
                await run.wait_stopped()
                continue
            queued = self.queues.waiting_run(run_id)
            if queued is not None:
                return await self._cancel_queued(queued, reason)
            previous = await self._cancel_inactive(run_id, reason)
            if previous is not None:
                return previous

    async def _cancel_active(self, run: RunContext, reason: str | None) -> RunStatus:
        previous = run.status
        if previous in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise CannotCancel(run.run_id, previous.value)
        if run.phase is not Phase.CANCELLING:
            run.request_cancel(reason)
            await self._commit_cancel(run.run_id, reason, run.commit)
        else:
            previous = RunStatus.CANCELLED
        await asyncio.gather(self._await_stop(run), self._await_descendants(run.run_id))
        return previous

    async def _cancel_queued(self, queued: QueuedRun, reason: str | None) -> RunStatus:
        """A run waiting in its queue leaves it and ends cancelled: its body never starts."""
        self.queues.withdraw(queued)
        # What follows the commit hangs on its outcome, not on the caller, who may be
        # cancelled while the commit goes through all the same.
        await self.journal.commit(
            [self.journal.run_cancelled(queued.run.run_id, time.time(), reason)],
            lambda: queued.run.never_started(reason),
            lambda _: self.queues.restore(queued),
        )
        return RunStatus.PENDING

    async def _cancel_inactive(self, run_id: str, reason: str | None) -> RunStatus | None:
        """Cancel a run no context holds; ``None`` when the caller must look again."""
        previous = await self.status(run_id)
        if previous in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise CannotCancel(run_id, previous.value)
        if run_id in self.active or self.queues.waiting_run(run_id) is not None:
            return None  # a resume registered it meanwhile
        leftovers = self._faults.unfinished_steps(run_id)
        if leftovers:  # steps of a faulted execution: let them stop first
            await asyncio.wait(leftovers)
            return None
        if previous is RunStatus.CANCELLED:
            return previous
        # From here on a resume that read the run before this commit still registers
        # it as cancelled: the set is checked when it registers.
        self._cancelled_inactive.add(run_id)
        self.hooks.release_run(run_id)  # the status commit releases them in the journal

        def committed() -> None:
            self.deadlines.disarm(run_id)
            self._notify(run_id, (RunStatus.CANCELLED, None, ErrorInfo.reason(reason)))

        await self._commit_cancel(
            run_id,
            reason,
            lambda statements, on_commit, on_failure: self.journal.commit(statements, on_commit, on_failure),
            committed,
            lambda: self._cancelled_inactive.discard(run_id),
        )
        await self._await_descendants(run_id)
        return previous

    async def _commit_cancel(
        self,
        run_id: str,
        reason: str | None,
        commit: _CommitWith,
        on_commit: Callable[[], None] = lambda: None,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        """Commit the run's cancellation with its descendants'; those in memory stop starting operations first.

        The memory follows the commit's outcome (``on_commit`` or ``on_failure`` after
        the descendants'), whatever becomes of the caller meanwhile.
        """
        note = f"parent run {run_id} was cancelled" + (f": {reason}" if reason else "")
        withdrawn = self._halt_descendants(run_id, note)
        now = time.time()

        def committed() -> None:
            for queued in withdrawn:
                queued.run.never_started(note)
            on_commit()

        def failed(_: BaseException) -> None:
            for queued in withdrawn:
                self.queues.restore(queued)
            on_failure()

        await commit(
            [self.journal.run_cancelled(run_id, now, reason), self.journal.descendants_cancelled(run_id, now, note)],
            committed,
            failed,
        )

    def _halt_descendants(self, run_id: str, note: str) -> list[QueuedRun]:
        """Mark the run's descendants in memory cancelled; the queued ones leave their queue (returned)."""
        withdrawn: list[QueuedRun] = []
        for child_id in self.family.descendants(run_id):
            child = self.active.get(child_id)
            queued = self.queues.waiting_run(child_id)
            if child is not None and child.phase is Phase.ACTIVE:
                child.request_cancel(note)
            elif queued is not None:
                self.queues.withdraw(queued)
                withdrawn.append(queued)
            elif child is None:
                self._cancelled_inactive.add(child_id)  # faulted: it resumes cancelled
        return withdrawn

    async def _await_descendants(self, run_id: str) -> None:
        """Wait until no descendant of the run executes any more (each with the guarantees of cancel())."""
        waits: list[Any] = []
        for child_id in self.family.descendants(run_id):
            child = self.active.get(child_id)
            if child is not None:
                waits.append(self._await_stop(child) if child.is_cancelling else child.wait_stopped())
            elif left := self._faults.unfinished_steps(child_id):
                waits.append(asyncio.wait(left))
        if waits:
            await asyncio.gather(*waits)

    def _deadline_passed(self, run_id: str, reason: str) -> None:
        if self.open:
            self._own(self._expire(run_id, reason), f"durable-deadline-{run_id}")

    def _own(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._owned.add(task)
        task.add_done_callback(self._owned.discard)
        return task

    async def to_the_end(self, work: Coroutine[Any, Any, T], name: str) -> T:
        """``work``'s result, in a task of the engine's: a caller cancelled meanwhile
        leaves it to finish, so that what it commits and what memory does after its
        commits go together. A failure nobody waits for any more is logged."""
        task = self._own(work, name)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and caller is not None and not caller.cancelling():
                # close() cancelled the work, not the caller: say so rather than pass on a
                # cancellation the caller never asked for.
                raise EngineClosed(
                    "The engine closed before the operation ended; what it committed holds at the next open."
                ) from None
            if not task.done():
                task.add_done_callback(_log_failure)
            raise

    async def _expire(self, run_id: str, reason: str) -> None:
        try:
            await self.cancel(run_id, reason)
        except (CannotCancel, RunNotFound, EngineClosed):
            pass  # it ended first, or the engine is closing (the deadline fires again at the next open)
        except Exception as exc:  # the journal refused: the run faulted and its deadline fires again when it resumes
            log.warning("run %s: its deadline passed but its cancellation could not be recorded: %s", run_id, exc)

    def forget_cancel(self, run_id: str) -> None:
        """A resume set the run going again: an earlier cancel while it was out of memory is spent."""
        self._cancelled_inactive.discard(run_id)

    async def _await_stop(self, run: RunContext) -> None:
        """Let in-flight steps finish (bounded), then the workflow unwind; then end its streams."""
        await self._let_steps_finish(run)
        drive = run.task
        if drive is not None and not drive.done():
            done, _ = await asyncio.wait({drive}, timeout=self.cancel_grace)
            if not done:
                drive.cancel()  # the body outlived its grace: it unwinds as cancelled
            with contextlib.suppress(BaseException):
                await drive
        run.never_started()

    async def _let_steps_finish(self, run: RunContext) -> None:
        if run.steps:
            _, late = await asyncio.wait(set(run.steps), timeout=self.cancel_grace)
            if late:
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)  # a step must not complete after we return
        # A step's task ends when its result is queued, not committed: no result of a
        # finished step may land after cancel() returns. The writer acknowledges in
        # submission order, so once a barrier queued now is, those results are settled
        # (with every other run's writes queued before it: at most about a commit more).
        await self.journal.barrier()

    # -- streams ---------------------------------------------------------------------

    async def _stream_is_closed(self, run_id: str, namespace: str) -> bool:
        run = self.active.get(run_id)
        if run is not None:
            return run.stream_closed(namespace)
        status, closed = await self.journal.stream_is_closed(run_id, namespace)
        return status is None or closed or RunStatus(status).is_terminal

    def read(self, run_id: str, start_index: int, namespace: str | None) -> AsyncGenerator[StreamChunk, None]:
        ns = DEFAULT_NAMESPACE if namespace is None else namespace
        return self.hub.read(run_id, ns, start_index, lambda: self._stream_is_closed(run_id, ns))
