"""The engine: opens the journal, starts and resumes runs, hands out ``Run`` handles."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ._errors import CannotCancel, EngineClosed, RunCancelled, RunFailed, RunNotFound
from ._ids import new_run_id
from ._journal import Journal
from ._models import AttemptInfo, OperationInfo, RunInfo, RunStatus
from ._registry import WorkflowFunction, lookup_workflow
from ._runtime import SET_CANCELLED, Recorded, Replay, RunContext, Services
from ._serde import dumps, loads, to_datetime
from ._streams import DEFAULT_NAMESPACE, StreamChunk, StreamHub
from ._timers import TimerQueue

log = logging.getLogger("durable")

_RUN_COLUMNS = "run_id, workflow_name, status, created_at, started_at, completed_at, error, input"
_TO_RESUME_SQL = "(r.status IN ('pending', 'running') OR (r.status = 'cancelled' AND r.unwound = 0))"
FAULT_RETRY_MAX_S = 30.0


_Outcome = tuple[RunStatus, bytes | None, str | None]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


def _run_info(row: Sequence[Any]) -> RunInfo:
    run_id, name, status, created, started, completed, error, input_data = row
    args, kwargs = loads(input_data)
    created_at = to_datetime(created)
    assert created_at is not None
    return RunInfo(run_id, name, RunStatus(status), created_at, to_datetime(started), to_datetime(completed), error, args, kwargs)


class Engine:
    """A durable-workflow engine on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        cancel_grace: float = 30.0,
        stream_queue_limit: int = 1000,
    ) -> None:
        self.path = Path(path)
        self.cancel_grace = cancel_grace
        self._journal = Journal(self.path, synchronous)
        self._timers = TimerQueue()
        self._hub = StreamHub(self._journal, stream_queue_limit)
        self._services = Services(self._journal, self._timers, self._hub, self._run_finished, self._run_faulted)
        self._active: dict[str, RunContext] = {}
        self._waiters: dict[str, list[asyncio.Future[_Outcome | None]]] = {}
        self._fault_retries: dict[str, asyncio.TimerHandle] = {}
        self._fault_backoff: dict[str, float] = {}
        # Step tasks of a faulted run, cancelled but maybe not finished: a resume or a
        # cancel waits for them, so two executions of one step never overlap.
        self._fault_leftovers: dict[str, list[asyncio.Task[None]]] = {}
        self._resumes: set[asyncio.Task[None]] = set()
        # Runs cancelled while no context held them: a resume registers them as cancelled.
        self._cancelled_inactive: set[str] = set()
        self._state = _State.UNOPENED

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> Engine:
        """Open the journal, migrate it, and resume every unfinished run."""
        if self._state is _State.CLOSED:
            raise EngineClosed("Cannot reopen an engine once it has been closed: create a new Engine.")
        if self._state is _State.OPENED:
            return self
        await self._journal.open()
        self._state = _State.OPENED
        try:
            await self._resume(None)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Stop every run where it is (they resume at the next open) and close the file. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for handle in self._fault_retries.values():
            handle.cancel()
        self._fault_retries.clear()
        tasks = [t for ctx in self._active.values() for t in ctx.tasks()]
        tasks += [*self._resumes, *(t for left in self._fault_leftovers.values() for t in left)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._active.clear()
        self._hub.close_all()
        self._timers.close()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(EngineClosed("The engine was closed while waiting for a result."))
        self._waiters.clear()
        await self._journal.close()

    async def __aenter__(self) -> Engine:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._state is not _State.OPENED:
            raise EngineClosed(
                "The engine is not open: use 'async with Engine(path)' or await engine.open(), and not after close()."
            )

    # -- runs -----------------------------------------------------------------

    async def start(self, workflow: WorkflowFunction[Any, Any], *args: Any, **kwargs: Any) -> Run:
        """Record a new run (status pending, committed) and start it."""
        self._check_open()
        if not isinstance(workflow, WorkflowFunction):
            raise TypeError(f"engine.start() needs a function decorated with @workflow, got {workflow!r}")
        input_data = dumps([args, kwargs])
        run_id = new_run_id()
        await self._journal.submit(
            [
                (
                    "INSERT INTO runs (run_id, workflow_name, input, status, created_at) VALUES (?, ?, ?, 'pending', ?)",
                    (run_id, workflow.name, input_data, time.time()),
                )
            ]
        )
        self._check_open()
        ctx = RunContext(self._services, run_id, workflow, input_data, RunStatus.PENDING)
        self._active[run_id] = ctx
        ctx.start()
        return Run(self, run_id)

    def get_run(self, run_id: str) -> Run:
        """A handle on a run; an unknown id raises RunNotFound when the handle is used."""
        return Run(self, run_id)

    async def list_runs(self, status: RunStatus | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first, optionally of one status."""
        self._check_open()
        if status is None:
            rows = await self._journal.fetchall(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        else:
            rows = await self._journal.fetchall(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                (RunStatus(status).value, limit),
            )
        return [_run_info(row) for row in rows]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one write statement of the application through the group commit."""
        self._check_open()
        await self._journal.submit([(sql, params)])

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on the reader connection."""
        self._check_open()
        return await self._journal.fetchall(sql, params)

    def stats(self) -> dict[str, int]:
        """Counts for leak checks and monitoring."""
        subscribers, queued = self._hub.stats()
        return {
            "active_runs": len(self._active),
            "tasks": sum(len(ctx.tasks()) for ctx in self._active.values()),
            "timers": len(self._timers),
            "stream_subscribers": subscribers,
            "queued_chunks": queued,
            "commits": self._journal.commits,
        }

    # -- internals used by Run --------------------------------------------------

    async def _row(self, run_id: str) -> tuple[Any, ...]:
        self._check_open()
        row = await self._journal.fetchone(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise RunNotFound(run_id)
        return row

    async def _status(self, run_id: str) -> RunStatus:
        ctx = self._active.get(run_id)
        if ctx is not None:
            return ctx.status
        self._check_open()
        row = await self._journal.fetchone("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise RunNotFound(run_id)
        return RunStatus(row[0])

    async def _cancel(self, run_id: str) -> RunStatus:
        self._check_open()
        while True:
            ctx = self._active.get(run_id)
            if ctx is not None:
                break
            previous = await self._status(run_id)
            if previous in (RunStatus.COMPLETED, RunStatus.FAILED):
                raise CannotCancel(run_id, previous.value)
            if run_id in self._active:
                continue  # a resume registered it meanwhile
            leftovers = [t for t in self._fault_leftovers.get(run_id, ()) if not t.done()]
            if leftovers:  # steps of a faulted execution: let them stop first
                await asyncio.wait(leftovers)
                continue
            if previous is RunStatus.CANCELLED:
                return previous
            # From here on a resume that read the run before this commit still
            # registers it as cancelled: the set is checked when it registers.
            self._cancelled_inactive.add(run_id)
            try:
                await self._journal.submit(
                    [(SET_CANCELLED, (time.time(), run_id))],
                    lambda: self._notify(run_id, (RunStatus.CANCELLED, None, None)),
                )
            except BaseException:
                self._cancelled_inactive.discard(run_id)
                raise
            return previous
        previous = ctx.status
        if previous in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise CannotCancel(run_id, previous.value)
        if ctx.cancel_requested:
            await self._await_stop(ctx)
            return RunStatus.CANCELLED
        ctx.request_cancel()
        await ctx.commit([(SET_CANCELLED, (time.time(), run_id))])
        await self._await_stop(ctx)
        return previous

    async def _await_stop(self, ctx: RunContext) -> None:
        """Let in-flight steps finish (bounded), then the workflow unwind; then end its streams."""
        if ctx.steps:
            _, late = await asyncio.wait(set(ctx.steps), timeout=self.cancel_grace)
            if late:
                ctx.grace_expired = True
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)  # a step must not complete after we return
        drive = ctx.task
        if drive is not None and not drive.done():
            done, _ = await asyncio.wait({drive}, timeout=self.cancel_grace)
            if not done:
                ctx.grace_expired = True
                drive.cancel()
            with contextlib.suppress(BaseException):
                await drive
        if not ctx.stopped:  # the body never ran (its task was cancelled before its first step)
            ctx.stopped = True
            ctx.outcome = (RunStatus.CANCELLED, None, None)
            ctx.end_streams()
            self._run_finished(ctx)

    def _run_finished(self, ctx: RunContext) -> None:
        run_id = ctx.run_id
        if self._active.get(run_id) is ctx:
            del self._active[run_id]
        if ctx.fault is None and ctx.status.is_terminal:
            if self._fault_backoff:
                self._fault_backoff.pop(run_id, None)
            if self._waiters:
                self._notify(run_id, ctx.outcome)

    def _run_faulted(self, ctx: RunContext, exc: BaseException) -> None:
        left = [t for t in ctx.steps if not t.done()]
        if left:
            self._fault_leftovers[ctx.run_id] = left
        self._schedule_resume(ctx.run_id, exc)

    def _schedule_resume(self, run_id: str, exc: BaseException) -> None:
        if self._state is not _State.OPENED:
            return
        delay = min(FAULT_RETRY_MAX_S, self._fault_backoff.get(run_id, 0.5) * 2)
        self._fault_backoff[run_id] = delay
        log.warning("run %s stopped: the journal could not be written (%s); resuming in %.1f s", run_id, exc, delay)
        loop = asyncio.get_running_loop()
        self._fault_retries[run_id] = loop.call_later(delay, self._retry_faulted, run_id)

    def _retry_faulted(self, run_id: str) -> None:
        self._fault_retries.pop(run_id, None)
        if self._state is _State.OPENED and run_id not in self._active:
            task = asyncio.get_running_loop().create_task(self._resume_after_fault(run_id))
            self._resumes.add(task)
            task.add_done_callback(self._resumes.discard)

    async def _resume_after_fault(self, run_id: str) -> None:
        left = self._fault_leftovers.pop(run_id, [])
        if left:
            await asyncio.wait(left)
        try:
            await self._resume([run_id])
        except Exception as exc:  # still failing: try again later
            self._schedule_resume(run_id, exc)

    def _notify(self, run_id: str, outcome: _Outcome | None) -> None:
        for waiter in self._waiters.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(outcome)

    async def _wait_terminal(self, run_id: str, timeout: float | None) -> _Outcome:
        """The run's final status, output and error, once it has stopped."""
        waiter: asyncio.Future[_Outcome | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(waiter)
        try:
            outcome: _Outcome | None = None
            if not ((await self._status(run_id)).is_terminal and run_id not in self._active):
                outcome = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            if outcome is not None:
                return outcome
            row = await self._journal.fetchone("SELECT status, output, error FROM runs WHERE run_id = ?", (run_id,))
            if row is None:
                raise RunNotFound(run_id)
            return RunStatus(row[0]), row[1], row[2]
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[run_id]

    def _stream_closed(self, run_id: str, namespace: str) -> bool | None:
        ctx = self._active.get(run_id)
        return None if ctx is None else ctx.stream_closed(namespace)

    async def _closed_in_journal(self, run_id: str, namespace: str) -> bool:
        closed = self._stream_closed(run_id, namespace)
        if closed is not None:
            return closed
        row = await self._journal.fetchone(
            "SELECT (SELECT status FROM runs WHERE run_id = ?),"
            " EXISTS (SELECT 1 FROM closed_streams WHERE run_id = ? AND namespace = ?)",
            (run_id, run_id, namespace),
        )
        if row is None or row[0] is None:
            return True
        return bool(row[1]) or RunStatus(row[0]).is_terminal

    def _read(self, run_id: str, start_index: int, namespace: str | None) -> AsyncGenerator[StreamChunk, None]:
        ns = DEFAULT_NAMESPACE if namespace is None else namespace
        return self._hub.read(run_id, ns, start_index, lambda: self._closed_in_journal(run_id, ns))

    # -- recovery ---------------------------------------------------------------

    async def _resume(self, run_ids: list[str] | None) -> None:
        """Load unfinished runs (all, or the given ones) from the journal and start them."""
        where = _TO_RESUME_SQL
        params: tuple[Any, ...] = ()
        if run_ids is not None:
            where += f" AND r.run_id IN ({', '.join('?' * len(run_ids))})"
            params = tuple(run_ids)
        j = self._journal
        runs = await j.fetchall(
            f"SELECT r.run_id, r.workflow_name, r.input, r.status FROM runs r WHERE {where} ORDER BY r.created_at",
            params,
        )
        if not runs:
            return
        replays: dict[str, Replay] = {row[0]: Replay() for row in runs}
        for run_id, seq, kind, name, state, result, wake_at in await j.fetchall(
            "SELECT o.run_id, o.seq, o.kind, o.name, o.state, o.result, o.wake_at"
            f" FROM ops o JOIN runs r ON r.run_id = o.run_id WHERE {where}",
            params,
        ):
            replays[run_id].ops[seq] = Recorded(kind, name, state, None if result is None else bytes(result), wake_at)
        for run_id, seq, name, failed, retry_at in await j.fetchall(
            "SELECT a.run_id, a.seq, a.name, COUNT(*), MAX(a.retry_at)"
            f" FROM attempts a JOIN runs r ON r.run_id = a.run_id WHERE {where} GROUP BY a.run_id, a.seq",
            params,
        ):
            ops = replays[run_id].ops
            if seq not in ops:
                ops[seq] = Recorded("step", name, "retrying", failed_attempts=failed, retry_at=retry_at)
        for run_id, ns, seq, part, idx in await j.fetchall(
            f"SELECT c.run_id, c.namespace, c.seq, c.part, c.idx FROM chunks c JOIN runs r ON r.run_id = c.run_id WHERE {where}",
            params,
        ):
            replay = replays[run_id]
            replay.chunk_next[ns] = max(replay.chunk_next.get(ns, 0), idx + 1)
            if part < 0:
                replay.ops[seq] = Recorded("write", ns, "completed")
            else:
                replay.step_parts[seq] = max(replay.step_parts.get(seq, 0), part + 1)
        for run_id, ns in await j.fetchall(
            f"SELECT c.run_id, c.namespace FROM closed_streams c JOIN runs r ON r.run_id = c.run_id WHERE {where}",
            params,
        ):
            replays[run_id].closed.add(ns)
        self._check_open()
        for run_id, workflow_name, input_data, status in runs:
            if run_id in self._active:
                continue
            wf = lookup_workflow(workflow_name)
            if wf is None:
                log.warning(
                    "run %s: workflow %r is not registered; it stays %s until a process that registers it opens the journal",
                    run_id,
                    workflow_name,
                    status,
                )
                continue
            ctx = RunContext(self._services, run_id, wf, bytes(input_data), RunStatus(status), replays[run_id])
            if run_id in self._cancelled_inactive:
                self._cancelled_inactive.discard(run_id)
                ctx.request_cancel()
            elif ctx.status is RunStatus.CANCELLED:
                ctx.request_cancel()  # cancelled, but its body had not seen it yet
            self._active[run_id] = ctx
            ctx.start()


class Run:
    """A handle on one run."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self._engine = engine
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<Run {self.run_id}>"

    async def status(self) -> RunStatus:
        """The run's current status."""
        return await self._engine._status(self.run_id)

    async def describe(self) -> RunInfo:
        """The run as stored: status, times, error, input."""
        return _run_info(await self._engine._row(self.run_id))

    async def cancel(self) -> RunStatus:
        """Cancel; returns the previous status once the workflow has stopped."""
        return await self._engine._cancel(self.run_id)

    async def result(self, timeout: float | None = None) -> Any:
        """The workflow's return value; raises RunFailed, RunCancelled, or TimeoutError."""
        await self._engine._wait_terminal(self.run_id, timeout)
        row = await self._engine._journal.fetchone("SELECT status, output, error FROM runs WHERE run_id = ?", (self.run_id,))
        if row is None:
            raise RunNotFound(self.run_id)
        status, output, error = row
        if status == RunStatus.COMPLETED:
            return loads(output) if output is not None else None
        if status == RunStatus.CANCELLED:
            raise RunCancelled(self.run_id)
        raise RunFailed(self.run_id, error or "unknown error")

    async def readable(self, start_index: int = 0, namespace: str | None = None) -> AsyncGenerator[Any, None]:
        """The stream's values from ``start_index`` (negative counts from the end) until it closes."""
        async with contextlib.aclosing(self.chunks(start_index, namespace)) as chunks:
            async for chunk in chunks:
                yield chunk.value

    async def chunks(self, start_index: int = 0, namespace: str | None = None) -> AsyncGenerator[StreamChunk, None]:
        """Like ``readable`` with each chunk's index and JSON bytes."""
        await self._engine._row(self.run_id)
        reader = self._engine._read(self.run_id, start_index, namespace)
        try:
            async for chunk in reader:
                yield chunk
        finally:
            await reader.aclose()

    async def timeline(self) -> list[OperationInfo]:
        """Each step and sleep of the run with its attempts and times, in order."""
        engine = self._engine
        await engine._row(self.run_id)
        ops = await engine._journal.fetchall(
            "SELECT seq, kind, name, state, result, attempt, started_at, completed_at, wake_at FROM ops"
            " WHERE run_id = ? ORDER BY seq",
            (self.run_id,),
        )
        attempts: dict[int, list[AttemptInfo]] = {}
        pending_retry: dict[int, tuple[str, float | None]] = {}
        for seq, name, attempt, started, ended, error, retry_at in await engine._journal.fetchall(
            "SELECT seq, name, attempt, started_at, ended_at, error, retry_at FROM attempts"
            " WHERE run_id = ? ORDER BY seq, attempt",
            (self.run_id,),
        ):
            attempts.setdefault(seq, []).append(AttemptInfo(attempt, _utc(started), _utc(ended), error))
            pending_retry[seq] = (name, retry_at)
        now = time.time()
        out: list[OperationInfo] = []
        seen: set[int] = set()
        for seq, kind, name, state, _result, attempt, started, completed, wake_at in ops:
            seen.add(seq)
            tries = attempts.get(seq, [])
            if kind == "step" and state == "completed":
                tries = [*tries, AttemptInfo(attempt, _utc(started), _utc(completed), None)]
                status = "completed"
            elif kind == "sleep":
                status = "completed" if wake_at <= now else "waiting"
                completed = wake_at if wake_at <= now else None
            else:
                status = state
            first = tries[0].started_at if tries else to_datetime(started)
            out.append(OperationInfo(seq, kind, name, status, first, to_datetime(completed), to_datetime(wake_at), tries))
        for seq, tries in attempts.items():
            if seq not in seen:
                name, retry_at = pending_retry[seq]
                out.append(OperationInfo(seq, "step", name, "retrying", tries[0].started_at, None, to_datetime(retry_at), tries))
        out.sort(key=lambda op: op.seq)
        return out


def _utc(epoch: float) -> datetime:
    moment = to_datetime(epoch)
    assert moment is not None
    return moment
