"""One run in memory: replays its journal, executes its steps, sleeps and writes.

A ``RunContext`` drives one workflow coroutine in a task. Durable operations take
the run's next sequence number when they are called; on replay the journaled
outcome at that number is returned without executing anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._context import StepMetadata, StepScope, current_run, current_step
from ._errors import FatalError, NonDeterminismError, RetryableError, RunCancelled, StepFailed
from ._journal import Journal, Statement
from ._models import RunStatus
from ._serde import Duration, dumps, loads, parse_duration, wake_time
from ._streams import DEFAULT_NAMESPACE, StreamChunk, StreamHub
from ._timers import TimerQueue

if TYPE_CHECKING:
    from ._registry import StepFunction, WorkflowFunction

log = logging.getLogger("durable")

INSERT_OP = (
    "INSERT INTO ops (run_id, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (run_id, seq, name, attempt, started_at, ended_at, error, retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_CHUNK = "INSERT INTO chunks (run_id, namespace, idx, seq, part, data, written_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
SET_RUNNING = "UPDATE runs SET status = 'running', started_at = ? WHERE run_id = ? AND status = 'pending'"
SET_CANCELLED = (
    "UPDATE runs SET status = 'cancelled', completed_at = ?, unwound = 0 WHERE run_id = ? AND status IN ('pending', 'running')"
)
SET_UNWOUND = "UPDATE runs SET unwound = 1 WHERE run_id = ?"
SET_TERMINAL = (
    "UPDATE runs SET status = ?, output = ?, error = ?, completed_at = ? WHERE run_id = ? AND status IN ('pending', 'running')"
)

BACKOFF_BASE_S = 1.0


@dataclass(slots=True)
class Recorded:
    """What the journal holds at one sequence number of a run."""

    kind: str
    name: str
    state: str = "retrying"
    result: bytes | None = None
    wake_at: float | None = None
    failed_attempts: int = 0
    retry_at: float | None = None


@dataclass(slots=True)
class Services:
    """What a run needs from its engine."""

    journal: Journal
    timers: TimerQueue
    hub: StreamHub
    finished: Callable[[RunContext], None]
    faulted: Callable[[RunContext, BaseException], None]


@dataclass(slots=True)
class Replay:
    """A run's journal, loaded to resume it."""

    ops: dict[int, Recorded] = field(default_factory=dict)
    chunk_next: dict[str, int] = field(default_factory=dict)
    step_parts: dict[int, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)


def _describe(until: Duration | datetime) -> str:
    return until.isoformat() if isinstance(until, datetime) else str(until)


class RunContext:
    """The in-memory state of one run while its workflow executes."""

    def __init__(
        self,
        services: Services,
        run_id: str,
        workflow: WorkflowFunction[Any, Any],
        input_data: bytes,
        status: RunStatus,
        replay: Replay | None = None,
    ) -> None:
        self.s = services
        self.run_id = run_id
        self.workflow = workflow
        self.input_data = input_data
        self.status = status
        replay = replay or Replay()
        self.recorded = replay.ops
        self.chunk_next = replay.chunk_next
        self.step_parts = replay.step_parts
        self.closed: set[str] = set()  # closed by this execution: writing to them is an error
        self.closed_committed = replay.closed  # closed in the journal: their readers end
        self.seq = 0
        self.cancel_requested = False
        self.grace_expired = False  # cancel() gave up waiting and stopped the body
        self.fault: BaseException | None = None
        self.nondeterminism: NonDeterminismError | None = None
        self.stopped = False
        self.streams_ended = False
        self.outcome: tuple[RunStatus, bytes | None, str | None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.steps: set[asyncio.Task[None]] = set()
        self.waits: set[asyncio.Future[None]] = set()
        self._prune_waits_at = 8

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._drive(), name=f"durable-run-{self.run_id}")

    def tasks(self) -> list[asyncio.Task[Any]]:
        return ([self.task] if self.task else []) + list(self.steps)

    def request_cancel(self) -> None:
        """Stop starting operations and wake every durable wait with RunCancelled."""
        self.cancel_requested = True
        self.status = RunStatus.CANCELLED
        for wait in list(self.waits):
            if not wait.done():
                wait.set_exception(RunCancelled(self.run_id))

    def commit(
        self,
        statements: list[Statement],
        after: Callable[[], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> asyncio.Future[None]:
        """Submit a write of this run; a failure to commit it faults the run."""
        return self.s.journal.submit(statements, after, failed or self._commit_failed)

    def _commit_failed(self, exc: BaseException) -> None:
        if self.fault is not None:
            return
        # A lost write leaves memory ahead of the journal: stop every task of the run
        # as a crash would, and let the engine resume it from the journal once writes
        # succeed again.
        self.fault = exc
        for task in self.tasks():
            if not task.done():
                task.cancel()

    def _halt_for_fault(self) -> None:
        assert self.fault is not None
        self._stop()
        self.s.faulted(self, self.fault)

    async def _drive(self) -> None:
        current_run.set(self)
        outcome: RunStatus | None = None
        output: bytes | None = None
        error: str | None = None
        try:
            if not self.cancel_requested and self.status is RunStatus.PENDING:
                await self.commit([(SET_RUNNING, (time.time(), self.run_id))])
                if not self.cancel_requested:
                    self.status = RunStatus.RUNNING
            # A cancelled run runs too: journaled operations replay as recorded and the
            # first new one raises RunCancelled, so the body always sees its cancellation.
            args, kwargs = loads(self.input_data)
            coro: Coroutine[Any, Any, Any] = self.workflow.fn(*args, **kwargs)
            value = await coro
            output = dumps(value)
            outcome = RunStatus.COMPLETED
        except RunCancelled:
            outcome = RunStatus.CANCELLED
        except asyncio.CancelledError:
            if self.fault is None and not self.grace_expired:  # the engine is closing
                self._stop()
                raise
            # A fault stopped the run, or cancel() stopped a body that outlived its grace.
        except Exception as exc:
            outcome = RunStatus.FAILED
            error = f"{type(exc).__name__}: {exc}"
        if self.fault is not None:
            self._halt_for_fault()
            return
        if self.nondeterminism is not None:
            outcome, output, error = RunStatus.FAILED, None, f"NonDeterminismError: {self.nondeterminism}"
        if self.cancel_requested:
            await self._finish_cancelled()
            return
        assert outcome is not None
        for task in list(self.steps):  # steps the body started but did not await: the run is over
            task.cancel()
        self.status = outcome
        self.outcome = (outcome, output, error)
        # The run finishes in the commit's callbacks, not in this task: a burst of
        # thousands of runs ending together then costs no task step each, which
        # would delay the timers due meanwhile.
        self.s.journal.post(
            [(SET_TERMINAL, (outcome.value, output, error, time.time(), self.run_id))], self._ended, self._ending_failed
        )

    def _ended(self) -> None:
        self.end_streams()
        self._stop()

    def _ending_failed(self, exc: BaseException) -> None:
        self._commit_failed(exc)
        log.error("run %s: could not record %s: %s", self.run_id, self.status.value, self.fault)
        self._halt_for_fault()  # it stays unfinished in the journal and resumes later

    async def _finish_cancelled(self) -> None:
        """The body has stopped after its cancellation: record that, then end its streams."""
        self.outcome = (RunStatus.CANCELLED, None, None)
        try:
            await self.commit([(SET_UNWOUND, (self.run_id,))])
        except asyncio.CancelledError:
            # Closing, or a fault: either way it unwinds again from the journal, where its
            # writes are recorded once.
            if self.fault is None:
                self._stop()
                raise
            self._halt_for_fault()
            return
        self.end_streams()
        self._stop()

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            if self.waits:
                self._forget_waits(ended_only=False)
            self.s.finished(self)

    # -- durable operations ---------------------------------------------------

    def _check_not_cancelled(self) -> None:
        if self.cancel_requested:
            raise RunCancelled(self.run_id)

    def _take(self, kind: str, name: str) -> tuple[int, Recorded | None]:
        seq = self.seq
        self.seq += 1
        rec = self.recorded.pop(seq, None) if self.recorded else None
        if rec is not None and (rec.kind != kind or (kind != "sleep" and rec.name != name)):
            err = NonDeterminismError(self.run_id, seq, f"{rec.kind} {rec.name!r}", f"{kind} {name!r}")
            self.nondeterminism = self.nondeterminism or err
            raise err
        return seq, rec

    def call_step(self, step: StepFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        payload = dumps([args, kwargs])
        seq, rec = self._take("step", step.name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if rec is not None and rec.state == "completed":
            future.set_result(loads(rec.result or b"null"))
        elif rec is not None and rec.state == "failed":
            info = loads(rec.result or b"{}")
            future.set_exception(StepFailed(info["step"], info["type"], info["message"]))
        else:
            self._check_not_cancelled()
            task = loop.create_task(self._execute_step(step, seq, payload, future, rec))
            self.steps.add(task)
            task.add_done_callback(self.steps.discard)
        return future

    async def _execute_step(
        self,
        step: StepFunction[Any, Any],
        seq: int,
        payload: bytes,
        future: asyncio.Future[Any],
        rec: Recorded | None,
    ) -> None:
        args, kwargs = loads(payload)
        attempt = (rec.failed_attempts if rec else 0) + 1
        retry_at = rec.retry_at if rec else None
        step_id = f"{self.run_id}:{seq}"
        try:
            while True:
                if retry_at is not None:
                    await self.wait_until(retry_at)
                self._check_not_cancelled()
                scope = StepScope(self, seq, StepMetadata(step_id, attempt, step.name))
                token = current_step.set(scope)
                started = time.time()
                failure: BaseException | None = None
                data = b"null"
                try:
                    value = await step.fn(*args, **kwargs)
                except Exception as exc:
                    failure = exc
                finally:
                    current_step.reset(token)
                if failure is None:
                    try:
                        data = dumps(value)
                    except TypeError as exc:
                        failure = FatalError(f"step {step.name} returned a value that cannot be stored: {exc}")
                ended = time.time()
                if failure is None:
                    await self.commit(
                        [(INSERT_OP, (self.run_id, seq, "step", step.name, "completed", data, attempt, started, ended, None))]
                    )
                    self.step_parts.pop(seq, None)
                    if not future.done():
                        future.set_result(loads(data))
                    return
                etype, message = type(failure).__name__, str(failure)
                final = isinstance(failure, FatalError) or attempt > step.max_retries
                retry_at = None if final else ended + self._retry_delay(failure, attempt)
                statements: list[Statement] = [
                    (INSERT_ATTEMPT, (self.run_id, seq, step.name, attempt, started, ended, f"{etype}: {message}", retry_at))
                ]
                if final:
                    info = dumps({"step": step.name, "type": etype, "message": message})
                    statements.append(
                        (INSERT_OP, (self.run_id, seq, "step", step.name, "failed", info, attempt, started, ended, None))
                    )
                await self.commit(statements)
                if final:
                    if not future.done():
                        future.set_exception(StepFailed(step.name, etype, message))
                    return
                attempt += 1
        except RunCancelled as exc:
            if not future.done():
                future.set_exception(exc)
        except asyncio.CancelledError:
            if not future.done():
                if self.cancel_requested and self.fault is None:
                    future.set_exception(RunCancelled(self.run_id))  # cancel() ran out of patience
                else:
                    future.cancel()
            raise
        except Exception as exc:  # the journal could not be written
            if not future.done():
                future.set_exception(exc)

    @staticmethod
    def _retry_delay(failure: BaseException, attempt: int) -> float:
        if isinstance(failure, RetryableError) and failure.retry_after is not None:
            try:
                return parse_duration(failure.retry_after)
            except ValueError:
                pass
        return float(BACKOFF_BASE_S * 2 ** (attempt - 1))

    def wait_until(self, wake_at: float) -> asyncio.Future[None]:
        """A durable wait: resolves at ``wake_at``, or at once with RunCancelled when the
        run is cancelled."""
        waiting = self._new_wait()
        self._arm(waiting, wake_at)
        return waiting

    def _arm(self, waiting: asyncio.Future[None], wake_at: float) -> None:
        if not waiting.done():  # cancelled meanwhile: it never enters the timer queue
            self.s.timers.resolve_at(wake_at, waiting)

    def _new_wait(self) -> asyncio.Future[None]:
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.cancel_requested:
            waiting.set_exception(RunCancelled(self.run_id))
            return waiting
        if len(self.waits) >= self._prune_waits_at:  # amortized: a fan-out of sleeps stays linear
            self._forget_waits(ended_only=True)
            self._prune_waits_at = max(8, 2 * len(self.waits))
        self.waits.add(waiting)
        return waiting

    def _forget_waits(self, ended_only: bool) -> None:
        """Drop ended waits (all of them once the run stops). The timer queue learns of
        those that ended early, without a loop callback per wait."""
        kept: set[asyncio.Future[None]] = set()
        for waiting in self.waits:
            if not waiting.done():
                if ended_only:
                    kept.add(waiting)
            elif waiting.cancelled() or waiting.exception() is not None:
                self.s.timers.ended_early()
        self.waits = kept

    def sleep(self, until: Duration | datetime) -> Awaitable[None]:
        now = time.time()
        wake_at = wake_time(until, now)
        name = _describe(until)
        seq, rec = self._take("sleep", name)
        if rec is not None and rec.wake_at is not None:
            if rec.wake_at <= now:
                return _done()  # it had ended before: replays as ended, also while cancelling
            return self.wait_until(rec.wake_at)
        self._check_not_cancelled()
        waiting = self._new_wait()

        def committed() -> None:  # the wake-up counts once the sleep is journaled
            self._arm(waiting, wake_at)

        def failed(exc: BaseException) -> None:
            self._commit_failed(exc)
            if not waiting.done():
                waiting.set_exception(exc)
                waiting.exception()  # the run is faulted: no "never retrieved" log if nothing awaits it

        op = (self.run_id, seq, "sleep", name, "waiting", None, None, now, None, wake_at)
        self.s.journal.post([(INSERT_OP, op)], committed, failed)
        return waiting

    def write(self, namespace: str, value: Any) -> asyncio.Future[None]:
        data = dumps(value)
        if self.streams_ended:
            raise RuntimeError(f"Workflow run {self.run_id} has ended: its streams are closed")
        if namespace in self.closed:
            raise ValueError(f"Stream {namespace or 'default'!r} of run {self.run_id} is closed")
        scope = current_step.get()
        if scope is not None and scope.run is self:
            part = scope.writes
            scope.writes += 1
            if part < self.step_parts.get(scope.seq, 0):
                return _done()  # stored by an earlier execution of this step
            return self._store_chunk(namespace, scope.seq, part, data)
        if self.stopped:
            raise RuntimeError(f"Workflow run {self.run_id} has stopped: it cannot write to its streams")
        seq, rec = self._take("write", namespace)
        if rec is not None:
            return _done()
        return self._store_chunk(namespace, seq, -1, data)

    def _store_chunk(self, namespace: str, seq: int, part: int, data: bytes) -> asyncio.Future[None]:
        index = self.chunk_next.get(namespace, 0)
        self.chunk_next[namespace] = index + 1
        chunk = StreamChunk(index, data)

        def published() -> None:
            self.s.hub.publish(self.run_id, namespace, chunk)
            if part >= 0 and self.step_parts.get(seq, 0) <= part:
                self.step_parts[seq] = part + 1

        return self.commit([(INSERT_CHUNK, (self.run_id, namespace, index, seq, part, data, time.time()))], published)

    def close_stream(self, namespace: str) -> asyncio.Future[None]:
        self.closed.add(namespace)
        return self.commit(
            [
                (
                    "INSERT OR IGNORE INTO closed_streams (run_id, namespace, closed_at) VALUES (?, ?, ?)",
                    (self.run_id, namespace, time.time()),
                )
            ],
            lambda: self._stream_closed_committed(namespace),
        )

    def _stream_closed_committed(self, namespace: str) -> None:
        self.closed_committed.add(namespace)
        self.s.hub.close(self.run_id, namespace)

    def end_streams(self) -> None:
        """Close every stream of the run: from here on readers end, also those attaching now."""
        self.streams_ended = True
        self.s.hub.close(self.run_id)

    def stream_closed(self, namespace: str) -> bool:
        return self.streams_ended or namespace in self.closed_committed


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


# -- the functions workflow code calls ----------------------------------------


def sleep(until: Duration | datetime) -> Awaitable[None]:
    """Sleep durably: "500ms", "1s", "5m", "2h", "7 days", a timedelta, seconds, or until a datetime."""
    run = current_run.get()
    if run is None or current_step.get() is not None:
        return asyncio.sleep(max(0.0, wake_time(until, time.time()) - time.time()))
    return run.sleep(until)


class StreamWriter:
    """Writes JSON values to one stream of the current run."""

    def __init__(self, run: RunContext, namespace: str) -> None:
        self._run = run
        self.namespace = namespace

    def write(self, value: Any) -> Awaitable[None]:
        """Store ``value`` as the stream's next chunk; resolves once committed."""
        return self._run.write(self.namespace, value)

    def close(self) -> Awaitable[None]:
        """Close the stream: its readers end."""
        return self._run.close_stream(self.namespace)


def get_writable(namespace: str | None = None) -> StreamWriter:
    """The writer of the current run's stream ``namespace`` (in a workflow body or a step)."""
    run = current_run.get()
    if run is None:
        raise RuntimeError("get_writable() must be called inside a workflow or one of its steps")
    return StreamWriter(run, DEFAULT_NAMESPACE if namespace is None else namespace)
