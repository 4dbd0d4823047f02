"""One run in memory: replays its journal, and executes its steps, sleeps and writes.

A ``RunContext`` drives one workflow coroutine in a task. Durable operations take
the run's next sequence number when they are called; on replay the journaled
outcome at that number is returned without executing anything. Its lifecycle is
one ``Phase`` (``_phase.py``); the engine sees it through ``RunHost``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ._context import current_run, current_step
from ._errors import NonDeterminismError, RunCancelled, StepFailed
from ._failures import ErrorInfo
from ._futures import done_future, settle, settle_error
from ._journal import Journal, Statement
from ._models import RunStatus
from ._order import ReplayOrder
from ._phase import Phase, check_move
from ._replay import Recorded, Replay
from ._serde import Duration, wake_time
from ._steps import StepCall
from ._streams import StreamChunk, StreamHub
from ._timers import TimerQueue
from ._values import decode, decode_call, encode, encode_call
from ._writer import OnFailure

if TYPE_CHECKING:
    from ._children import ChildRun
    from ._hook_registry import HookRegistry
    from ._registry import StepFunction, WorkflowFunction

log = logging.getLogger("durable")

Outcome = tuple[RunStatus, bytes | None, ErrorInfo | None]


class RunHost(Protocol):
    """What a run needs from its engine."""

    journal: Journal
    timers: TimerQueue
    hub: StreamHub
    hooks: HookRegistry
    resources: Any

    def run_stopped(self, run: RunContext) -> None:
        """The run's execution is over (ended, faulted or detached)."""

    def run_faulted(self, run: RunContext, exc: BaseException) -> None:
        """A journal write of the run failed; resume it from the journal later."""

    def start_child(
        self, parent: RunContext, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[ChildRun[Any]]:
        """``start_child`` in the body of ``parent`` (``_children.py``)."""


def _describe(until: Duration | datetime) -> str:
    return until.isoformat() if isinstance(until, datetime) else str(until)


def _ignore(exc: BaseException) -> None:
    """The failure is handled elsewhere (the run faulted)."""


class RunContext:
    """The in-memory state of one run while its workflow executes."""

    def __init__(
        self,
        host: RunHost,
        run_id: str,
        workflow: WorkflowFunction[Any, Any],
        input_data: bytes,
        status: RunStatus,
        replay: Replay | None = None,
        started_at: float | None = None,
        *,
        queued: bool = False,
    ) -> None:
        self.host = host
        self.run_id = run_id
        self.workflow = workflow
        self.input_data = input_data
        self.status = status  # as stored in the journal
        self.phase = Phase.QUEUED if queued else Phase.ACTIVE
        self.cancel_reason: str | None = None  # why, when a deadline or a parent cancelled it
        replay = replay or Replay()
        self.recorded = replay.ops
        self.chunk_next = replay.chunk_next
        self.step_parts = replay.step_parts
        # Dicts used as ordered sets: unlike a set, an empty dict (or one of strings) is not
        # tracked by the cyclic collector, and thousands of idle runs make full collections
        # (which pause the loop) proportionally shorter.
        self.closed_here: dict[str, None] = {}  # closed by this execution: writing to them is an error
        self.closed_committed = replay.closed  # closed in the journal: their readers end
        self.received = replay.received  # hook payloads (their index) by the receive that got them
        self.next_seq = 0
        self.passed_steps: dict[str, StepFunction[Any, Any]] = {}  # steps passed as values, by name
        # The run's deterministic clock: its start, then the completion time of each
        # result the body got (the same values live and on replay).
        self.clock = started_at
        self.first_started = started_at
        self._order = ReplayOrder(replay.delivery_order(time.time())) if replay.ops else None
        self.outcome: Outcome | None = None
        self.fault: BaseException | None = None
        self.nondeterminism: NonDeterminismError | None = None
        self.task: asyncio.Task[None] | None = None
        self.steps: dict[asyncio.Task[None], None] = {}
        self.waits: dict[asyncio.Future[None], None] = {}
        self._prune_waits_at = 8
        self._stop_waiters: list[asyncio.Future[None]] | None = None  # made when someone waits
        self._write_refused = False

    def __repr__(self) -> str:
        return f"<run {self.run_id}>"

    # -- lifecycle ------------------------------------------------------------

    @property
    def is_cancelling(self) -> bool:
        return self.phase is Phase.CANCELLING

    @property
    def started_at(self) -> datetime | None:
        """When the run first started: the same on every replay."""
        return None if self.first_started is None else datetime.fromtimestamp(self.first_started, UTC)

    def now(self) -> datetime:
        """The run's deterministic clock (see ``durable.now``)."""
        return datetime.fromtimestamp(self.clock if self.clock is not None else time.time(), UTC)

    def advance_clock(self, moment: float) -> None:
        if self.clock is None or moment > self.clock:
            self.clock = moment

    def start(self) -> None:
        if self.phase is Phase.QUEUED:
            self._move(Phase.ACTIVE)
        # A context of its own: a run started from inside a step must not inherit that
        # step's context (its steps would run as plain calls of the parent's step).
        task = asyncio.get_running_loop().create_task(
            self._drive(), name=f"durable-run-{self.run_id}", context=contextvars.Context()
        )
        self.task = task

    def tasks(self) -> list[asyncio.Task[Any]]:
        return ([self.task] if self.task else []) + list(self.steps)

    def _move(self, target: Phase) -> None:
        check_move(self.phase, target, self.run_id)
        self.phase = target

    def request_cancel(self, reason: str | None = None) -> None:
        """Stop starting operations and wake every durable wait with RunCancelled."""
        self._move(Phase.CANCELLING)
        self.status = RunStatus.CANCELLED
        self.cancel_reason = reason
        for wait in list(self.waits):
            if not wait.done():
                wait.set_exception(RunCancelled(self.run_id, self.cancel_reason))

    def detach(self) -> list[asyncio.Task[Any]]:
        """The engine closes: stop where the run is (it resumes at the next open); its tasks to await."""
        tasks = self.tasks()
        if not self.phase.stopped:
            self._move(Phase.DETACHED)
            self._stopped()
        self._cancel(tasks)
        return tasks

    def _cancel(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Cancel those not done yet; each leaves ``steps`` once it has ended.

        A step cancelled before it ever ran never reaches the code that removes it,
        and its task, kept here, would hold a context pointing back at this run: a
        cycle that only a full collection frees.
        """
        for task in tasks:
            if not task.done():
                task.cancel()
                task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self.steps.pop(task, None)

    def wait_stopped(self) -> asyncio.Future[None]:
        """Resolves once nothing of this execution runs any more."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.phase.stopped and (self.task is None or self.task.done()):
            future.set_result(None)
        else:
            if self._stop_waiters is None:
                self._stop_waiters = []
            self._stop_waiters.append(future)
        return future

    def never_started(self, reason: str | None = None) -> None:
        """cancel() stopped the body before its first step (or the run left its queue): end it as cancelled."""
        if not self.phase.stopped:
            self.status = RunStatus.CANCELLED
            self.outcome = (RunStatus.CANCELLED, None, ErrorInfo.reason(reason or self.cancel_reason))
            self._end_streams_and_stop()

    def commit(
        self, statements: list[Statement], on_commit: Any = None, on_failure: OnFailure | None = None
    ) -> asyncio.Future[None]:
        """Submit a write of this run; a failure to commit it faults the run, then ``on_failure`` gets the error."""
        failed = self._commit_failed if on_failure is None else self._commit_failed_then(on_failure)
        future: asyncio.Future[None] = self.host.journal.commit(statements, on_commit, failed, self)
        return future

    def commit_then(self, statements: list[Statement], on_commit: Callable[[], None] | None, on_failure: OnFailure) -> None:
        """``commit`` that nothing awaits: a failure faults the run, then ``on_failure`` gets the error.

        A step's result is such a write, and its task ends as it is queued: cancel()
        waits for a journal barrier so that it returns after the result is journaled.
        """

        self.host.journal.commit_then(statements, on_commit, self._commit_failed_then(on_failure), self)

    def _commit_failed_then(self, on_failure: OnFailure) -> OnFailure:
        def failed(exc: BaseException) -> None:
            self._commit_failed(exc)
            on_failure(exc)

        return failed

    @property
    def accepts_writes(self) -> bool:
        """False once a write failed: writes queued behind it must not land (they would
        leave the journal with a later write and not an earlier one)."""
        return not self._write_refused and self.phase is not Phase.FAULTED

    def write_failed(self) -> None:
        self._write_refused = True  # set on the writer thread, before the loop hears of it

    def _commit_failed(self, exc: BaseException) -> None:
        if self.phase.stopped:
            return
        # A lost write leaves memory ahead of the journal: stop every task of the run
        # as a crash would, and let the engine resume it from the journal once writes
        # succeed again.
        self._move(Phase.FAULTED)
        self.fault = exc
        self._cancel(self.tasks())

    def _report_fault(self) -> None:
        assert self.fault is not None
        self._stopped()
        self.host.run_faulted(self, self.fault)

    def _stopped(self) -> None:
        if self.waits:
            self._forget_waits(ended_only=False)
        self.host.run_stopped(self)
        waiters, self._stop_waiters = self._stop_waiters or [], None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the body -------------------------------------------------------------

    async def _drive(self) -> None:
        current_run.set(self)
        try:
            try:
                outcome = await self._run_body()
            except asyncio.CancelledError:
                if self.phase is Phase.DETACHED:
                    raise
                outcome = None  # a fault stopped it, or cancel() stopped a body that outlived its grace
            await self._conclude(outcome)
        finally:
            # The task's context points at this run and the run at its task: break the
            # cycle, so a finished run is freed by reference counting, not by a full
            # collection that would stall the loop.
            current_run.set(None)
            self.task = None

    async def _run_body(self) -> Outcome:
        """Execute the workflow function to its end; what it ended with."""
        try:
            if self.phase is Phase.ACTIVE and self.status is RunStatus.PENDING:
                # Out of its queue (a run that waits in none is journaled running when it
                # is created), or recorded pending by an older engine: its start is journaled
                # now. Running from here, not from that commit's callback: the commit is
                # visible to readers (a hook the body creates, say) before its callback runs,
                # and a run whose body runs is not pending. A cancel sets its status the same way.
                self._journal_start()
                self.status = RunStatus.RUNNING
            # A cancelled run runs too: journaled operations replay as recorded and the
            # first new one raises RunCancelled, so the body always sees its cancellation.
            args, kwargs = decode_call(self.input_data)
            value = await self.workflow.fn(*args, **kwargs)
            return RunStatus.COMPLETED, encode(value, where="the workflow's result"), None
        except RunCancelled as exc:
            # Raised by the body itself, without a cancel() (it gives up: an approval that
            # timed out, say): the run ends cancelled, with the reason it gave as its error.
            reason = exc.reason if exc.run_id == self.run_id else None
            return RunStatus.CANCELLED, None, ErrorInfo.reason(reason)
        except Exception as exc:
            return RunStatus.FAILED, None, ErrorInfo.of(exc)

    def _journal_start(self) -> None:
        # Not awaited: the body starts at once and its first write commits after this
        # one (the writer keeps order), so the journal never holds an operation of a
        # run still pending. A lost write faults the run.
        started = time.time()
        self.clock = self.first_started = started
        self.commit_then([self.host.journal.run_started(self.run_id, started)], None, _ignore)

    async def _conclude(self, outcome: Outcome | None) -> None:
        if self.phase is Phase.FAULTED:
            self._report_fault()
        elif self.phase is Phase.DETACHED:
            return
        elif self.phase is Phase.CANCELLING:
            await self._finish_cancelled()
        else:
            assert outcome is not None
            if self.nondeterminism is not None:
                outcome = (RunStatus.FAILED, None, ErrorInfo.of(self.nondeterminism))
            self._end(outcome)

    def _end(self, outcome: Outcome) -> None:
        self._move(Phase.ENDING)
        self._cancel(list(self.steps))  # steps the body started but did not await: the run is over
        self.status = outcome[0]
        self.outcome = outcome
        # The run finishes in the commit's callbacks, not in this task: a burst of
        # thousands of runs ending together then costs no task step each, which
        # would delay the timers due meanwhile.
        status, output, error = outcome
        ended = self.host.journal.run_ended(self.run_id, status.value, output, error, time.time())
        self.host.journal.commit_then([ended], self._end_streams_and_stop, self._ending_failed, self)

    def _ending_failed(self, exc: BaseException) -> None:
        self._commit_failed(exc)
        log.error("run %s: could not record %s: %s", self.run_id, self.status.value, exc)
        if self.phase is Phase.FAULTED:
            self._report_fault()  # it stays unfinished in the journal and resumes later

    async def _finish_cancelled(self) -> None:
        """The body has stopped after its cancellation: record that, then end its streams."""
        self.outcome = (RunStatus.CANCELLED, None, ErrorInfo.reason(self.cancel_reason))
        try:
            await self.commit([self.host.journal.run_unwound(self.run_id)])
        except asyncio.CancelledError:
            # Closing, or a fault: either way it unwinds again from the journal, where its
            # writes are recorded once.
            if self.phase is Phase.FAULTED:
                self._report_fault()
                return
            raise
        self._end_streams_and_stop()

    def _end_streams_and_stop(self) -> None:
        if self.phase is Phase.DETACHED:
            return  # the engine closed while the final status was committing: the run stopped then, and is over
        self._move(Phase.ENDED)
        self.host.hub.close(self.run_id)
        self._stopped()

    # -- sequencing -----------------------------------------------------------

    def check_not_cancelled(self) -> None:
        if self.phase is Phase.CANCELLING:
            raise RunCancelled(self.run_id, self.cancel_reason)

    def _claim(self, kind: str, name: str) -> tuple[int, Recorded | None]:
        """Take the next sequence number; what the journal recorded there, checked against this call."""
        seq = self.next_seq
        self.next_seq += 1
        rec = self.recorded.pop(seq, None) if self.recorded else None
        if rec is not None and (rec.kind != kind or (kind != "sleep" and rec.name != name)):
            err = NonDeterminismError(self.run_id, seq, f"{rec.kind} {rec.name!r}", f"{kind} {name!r}")
            self.nondeterminism = self.nondeterminism or err
            raise err
        return seq, rec

    # -- steps ----------------------------------------------------------------

    def call_step(self, step: StepFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        payload = encode_call(args, kwargs)
        seq, rec = self._claim("step", step.name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if rec is not None and rec.abandoned:
            pass  # live, the body gave up on it (a timeout): it never gets it on replay either
        elif rec is not None and rec.state == "completed":
            value = decode(rec.result or b"null")
            self._deliver_recorded(seq, rec, lambda: settle(future, value))
        elif rec is not None and rec.state == "failed":
            info = orjson.loads(rec.result or b"{}")
            error = StepFailed(info["step"], info["type"], info["message"], info.get("stack", ""))
            self._deliver_recorded(seq, rec, lambda: settle_error(future, error))
        else:
            self.check_not_cancelled()
            task = loop.create_task(StepCall(self, step, seq, payload, future, rec).execute())
            # The step's task leaves when it ends (StepCall.execute). Under an eager task
            # factory (Python 3.12+) one that never suspends has ended already.
            if not task.done():
                self.steps[task] = None
        return future

    # -- delivering results ---------------------------------------------------

    def _deliver_recorded(self, seq: int, rec: Recorded, deliver: Callable[[], None]) -> None:
        """Hand a recorded result to the body in its completion order; the clock moves to its time."""
        moment = rec.completion_time(float("inf"))
        if self._order is None:
            self._deliver_at(moment, deliver)
        else:
            self._order.recorded(seq, functools.partial(self._deliver_at, moment, deliver))

    def deliver_live(self, moment: float, deliver: Callable[[], None]) -> None:
        """Hand a result that completed now (its journal record committed) to the body."""
        if self._order is None:  # nothing recorded waits to go first: the usual case
            self._deliver_at(moment, deliver)
        else:
            self._order.live(functools.partial(self._deliver_at, moment, deliver))

    def _deliver_at(self, moment: float | None, deliver: Callable[[], None]) -> None:
        """The run's clock moves to ``moment`` (when known), then the body gets the result."""
        if moment is not None:
            self.advance_clock(moment)
        deliver()

    # -- waits ----------------------------------------------------------------

    def wait_until(self, wake_at: float) -> asyncio.Future[None]:
        """A durable wait: resolves at ``wake_at``, or at once with RunCancelled when the run is cancelled."""
        waiting = self._new_wait()
        self._arm(waiting, wake_at)
        return waiting

    def _arm(self, waiting: asyncio.Future[None], wake_at: float) -> None:
        if waiting.done():  # cancelled meanwhile: it never enters the timer queue
            return
        if self._order is not None and self._order.replaying:
            # Due while recorded results are still being handed over: it wakes after them.
            timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            timer.add_done_callback(lambda _: self.deliver_live(wake_at, lambda: settle(waiting, None)))
            self.host.timers.resolve_at(wake_at, timer)
        else:
            self.host.timers.resolve_at(wake_at, waiting, self)

    def _new_wait(self) -> asyncio.Future[None]:
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.phase is Phase.CANCELLING:
            waiting.set_exception(RunCancelled(self.run_id, self.cancel_reason))
            return waiting
        if len(self.waits) >= self._prune_waits_at:  # amortized: a fan-out of sleeps stays linear
            self._forget_waits(ended_only=True)
            self._prune_waits_at = max(8, 2 * len(self.waits))
        self.waits[waiting] = None
        return waiting

    def _forget_waits(self, ended_only: bool) -> None:
        """Drop ended waits (all of them once the run stops). The timer queue learns of
        those that ended early, without a loop callback per wait."""
        kept: dict[asyncio.Future[None], None] = {}
        for waiting in self.waits:
            if not waiting.done():
                if ended_only:
                    kept[waiting] = None
            elif waiting.cancelled() or waiting.exception() is not None:
                self.host.timers.ended_early()
        self.waits = kept

    def sleep(self, until: Duration | datetime) -> Awaitable[None]:
        now = time.time()
        wake_at = wake_time(until, now)
        name = _describe(until)
        seq, rec = self._claim("sleep", name)
        if rec is not None and rec.wake_at is not None:
            if rec.wake_at <= now:  # it had ended before: replays as ended, also while cancelling
                ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._deliver_recorded(seq, rec, lambda: settle(ended, None))
                return ended
            return self.wait_until(rec.wake_at)
        self.check_not_cancelled()
        waiting = self._new_wait()

        def committed() -> None:  # the wake-up counts once the sleep is journaled
            self._arm(waiting, wake_at)

        def failed(exc: BaseException) -> None:
            self._commit_failed(exc)
            if not waiting.done():
                waiting.set_exception(exc)
                waiting.exception()  # the run is faulted: no "never retrieved" log if nothing awaits it

        self.host.journal.commit_then(
            [self.host.journal.sleep_started(self.run_id, seq, name, now, wake_at)], committed, failed, self
        )
        return waiting

    # -- streams --------------------------------------------------------------

    def write(self, namespace: str, value: Any) -> asyncio.Future[None]:
        data = encode(value, where="chunk")
        if self.phase is Phase.ENDED:
            raise RuntimeError(f"Workflow run {self.run_id} has ended: its streams are closed")
        if namespace in self.closed_here:
            raise ValueError(f"Stream {namespace or 'default'!r} of run {self.run_id} is closed")
        scope = current_step.get()
        if scope is not None and scope.run is self:
            part = scope.writes
            scope.writes += 1
            if part < self.step_parts.get(scope.seq, 0):
                return done_future()  # stored by an earlier execution of this step
            return self._store_chunk(namespace, scope.seq, part, data)
        if self.phase.stopped:
            raise RuntimeError(f"Workflow run {self.run_id} has stopped: it cannot write to its streams")
        seq, rec = self._claim("write", namespace)
        if rec is not None:
            return done_future()
        return self._store_chunk(namespace, seq, -1, data)

    def _store_chunk(self, namespace: str, seq: int, part: int, data: bytes) -> asyncio.Future[None]:
        index = self.chunk_next.get(namespace, 0)
        self.chunk_next[namespace] = index + 1
        chunk = StreamChunk(index, data)

        def published() -> None:
            self.host.hub.publish(self.run_id, namespace, chunk)
            if part >= 0 and self.step_parts.get(seq, 0) <= part:
                self.step_parts[seq] = part + 1

        return self.commit([self.host.journal.chunk(self.run_id, namespace, index, seq, part, data, time.time())], published)

    def close_stream(self, namespace: str) -> asyncio.Future[None]:
        self.closed_here[namespace] = None

        def committed() -> None:
            self.closed_committed[namespace] = None
            self.host.hub.close(self.run_id, namespace)

        return self.commit([self.host.journal.stream_closed(self.run_id, namespace, time.time())], committed)

    def stream_closed(self, namespace: str) -> bool:
        return self.phase is Phase.ENDED or namespace in self.closed_committed
