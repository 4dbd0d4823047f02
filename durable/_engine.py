"""The engine: owns a database file, starts and resumes runs, hands out ``Run`` handles."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ._errors import EngineClosed, HookNotFound, RunCancelled, RunFailed
from ._hook_registry import HookInfo, hook_info
from ._journal import Journal, Params
from ._lock import FileLock
from ._models import OperationInfo, RunInfo, RunStatus, run_info
from ._operate import RunOperator
from ._options import WorkflowWithOptions
from ._passing import decode_result
from ._queues import Queue, make_queue
from ._registry import DECORATED, WorkflowCatalog, WorkflowFunction
from ._schema import check_sqlite
from ._serde import Duration
from ._streams import StreamChunk, StreamHub
from ._supervisor import RunSupervisor
from ._timeline import build_timeline
from ._timers import TimerQueue
from ._webhooks import DEFAULT_RESPONSE_TIMEOUT, WebhookResponse, resume_webhook


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class Engine:
    """A durable-workflow engine on one SQLite file, which it holds exclusively while open.

    ``workflows`` scopes the workflows it runs (default: every ``@workflow``);
    ``resources`` is what steps reach with ``durable.get_resources()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        workflows: Iterable[WorkflowFunction[Any, Any]] | None = None,
        resources: Any = None,
        synchronous: str = "FULL",
        cancel_grace: float = 30.0,
        stream_queue_limit: int = 1000,
    ) -> None:
        self.path = Path(path)
        self._catalog = DECORATED if workflows is None else WorkflowCatalog(workflows)
        self._lock = FileLock(self.path)
        self._journal = Journal(self.path, synchronous)
        self._timers = TimerQueue()
        self._hub = StreamHub(self._journal, stream_queue_limit)
        self._runs = RunSupervisor(self._journal, self._timers, self._hub, self._catalog, cancel_grace)
        self._runs.resources = resources
        self._operator = RunOperator(self._runs)
        self._state = _State.UNOPENED

    @property
    def resources(self) -> Any:
        """What steps of this engine's runs get from ``durable.get_resources()``."""
        return self._runs.resources

    @resources.setter
    def resources(self, value: Any) -> None:
        if self._state is not _State.UNOPENED:
            raise RuntimeError("Set an engine's resources before it opens: resumed runs use them at once.")
        self._runs.resources = value

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> Engine:
        """Lock the file, open and migrate the journal, and resume every unfinished run."""
        if self._state is _State.CLOSED:
            raise EngineClosed("Cannot reopen an engine once it has been closed: create a new Engine.")
        if self._state is _State.OPENED:
            return self
        try:
            check_sqlite(sqlite3.sqlite_version_info)  # before the folder, the lock file or the database exist
        except sqlite3.NotSupportedError:
            self._state = _State.CLOSED  # as after any failed open: create a new Engine to retry
            raise
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            await self._journal.open()
            self._runs.queues.seq_floor(await self._journal.last_queue_seq())
            self._state = _State.OPENED
            self._runs.open = True
            await self._runs.hooks.load()  # before the runs: their replays find their hooks
            await self._runs.resume(None)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Stop every run where it is (they resume at the next open) and close the file. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._runs.close()
        self._runs.hooks.close()
        self._hub.close_all()
        self._timers.close()
        try:
            await self._journal.close()
        finally:
            self._lock.release()

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

    async def start(self, workflow: WorkflowFunction[Any, Any] | WorkflowWithOptions[Any, Any], *args: Any, **kwargs: Any) -> Run:
        """Record a new run (status pending, committed) and start it, or queue it.

        With ``wf.with_options(run_id=...)``, a run that has that id is returned as
        it is (nothing is written); ``RunConflict`` if it is a run of another workflow.
        """
        self._check_open()
        run_id = await self._runs.starter.start(workflow, args, kwargs)
        return Run(self._runs, run_id)

    def queue(
        self,
        name: str,
        concurrency: int | None = None,
        per_key_concurrency: int | None = None,
        rate: tuple[int, Duration] | None = None,
    ) -> Queue:
        """Declare a queue of this engine (before or after open): runs started on it wait for a slot.

        ``concurrency`` runs at once, ``per_key_concurrency`` of them per ``queue_key``,
        ``rate=(count, period)`` starts per period. Declaring it again with the same
        limits returns it; with other limits is a ``ValueError``.
        """
        return self._runs.queues.declare(make_queue(name, concurrency, per_key_concurrency, rate))

    def get_run(self, run_id: str) -> Run:
        """A handle on a run; an unknown id raises RunNotFound when the handle is used."""
        return Run(self._runs, run_id)

    async def resume_run(self, run_id: str) -> RunStatus:
        """Continue a failed or cancelled run after its last completed step; returns the status it had.

        Steps that failed for good run again with a fresh retry budget. Raises
        ``CannotResume`` for other statuses or a workflow this engine does not know.
        """
        self._check_open()
        return await self._operator.resume(run_id)

    async def fork(self, run_id: str, from_seq: int) -> Run:
        """Start a new run with the input of ``run_id`` and its journal before sequence number ``from_seq``."""
        self._check_open()
        return Run(self._runs, await self._operator.fork(run_id, from_seq))

    async def list_runs(self, status: RunStatus | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first, optionally of one status."""
        self._check_open()
        rows = await self._journal.list_runs(None if status is None else RunStatus(status).value, limit)
        position = self._runs.queues.position
        return [run_info(row, position(row[0])) for row in rows]

    def execute(self, sql: str, params: Params = ()) -> asyncio.Future[None]:
        """Queue one write statement of the application for the group commit: await it for the commit.

        Queued at the call, not at the first await: statements commit in the order
        of the calls, and those queued in one loop turn normally share a commit.
        """
        self._check_open()
        return self._journal.commit([(sql, params)])

    def execute_returning(self, sql: str, params: Params = ()) -> asyncio.Future[list[tuple[Any, ...]]]:
        """``execute`` of a statement with a RETURNING clause: its rows, once committed (no read after the write)."""
        self._check_open()
        return self._journal.commit_returning((sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a read query of the application on the reader connection."""
        self._check_open()
        return await self._journal.fetchall(sql, params)

    # -- hooks ----------------------------------------------------------------

    async def resume_hook(self, token: str, payload: Any = None, *, idempotency_key: str | None = None) -> HookInfo:
        """Send ``payload`` to the hook holding ``token``: committed before this returns.

        A repeated ``idempotency_key`` stores nothing and returns the same ``HookInfo``
        (also once the hook was released).
        An unknown or released token raises ``HookNotFound`` and stores nothing.
        """
        self._check_open()
        try:
            entry = await self._runs.hooks.resume(token, "hook", payload, idempotency_key)
        except HookNotFound:
            # A retry of a request that got through, after the hook was released.
            row = None if idempotency_key is None else await self._journal.hook_by_payload_key(token, idempotency_key)
            if row is None:
                raise
            return hook_info(row)
        return entry.info()

    async def resume_webhook(
        self,
        token: str,
        *,
        method: str = "POST",
        url: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = DEFAULT_RESPONSE_TIMEOUT,
    ) -> WebhookResponse:
        """Deliver an HTTP request to the webhook holding ``token``; the response to send back.

        202 with an empty body, the webhook's static response, or for ``respond_with="manual"``
        the workflow's (504 after ``timeout`` seconds without one).
        """
        self._check_open()
        return await resume_webhook(self._runs.hooks, token, method, url, headers or {}, bytes(body), timeout)

    async def get_hook_by_token(self, token: str) -> HookInfo:
        """The active hook holding ``token``; ``HookNotFound`` if none does."""
        self._check_open()
        row = await self._journal.hook_by_token(token)
        if row is None:
            raise HookNotFound(token)
        return hook_info(row)

    async def list_hooks(self, run_id: str | None = None) -> list[HookInfo]:
        """The active hooks, oldest first, optionally of one run."""
        self._check_open()
        return [hook_info(row) for row in await self._journal.list_hooks(run_id)]

    def stats(self) -> dict[str, int]:
        """Counts for leak checks and monitoring."""
        subscribers, queued = self._hub.stats()
        active = self._runs.active
        return {
            "active_runs": len(active),
            "tasks": sum(len(run.tasks()) for run in active.values()),
            "timers": len(self._timers),
            "queued_runs": len(self._runs.queues),
            "deadlines": len(self._runs.deadlines),
            "stream_subscribers": subscribers,
            "queued_chunks": queued,
            **self._journal.writer_stats(),
            "active_hooks": len(self._runs.hooks),
        }


class Run:
    """A handle on one run."""

    def __init__(self, runs: RunSupervisor, run_id: str) -> None:
        self._runs = runs
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<Run {self.run_id}>"

    async def status(self) -> RunStatus:
        """The run's current status."""
        return await self._runs.status(self.run_id)

    async def describe(self) -> RunInfo:
        """The run as stored: status, times, error, input, parent, queue and place in it."""
        row = await self._runs.run_row(self.run_id)
        return run_info(row, self._runs.queues.position(self.run_id))

    async def cancel(self) -> RunStatus:
        """Cancel; returns the previous status once the workflow has stopped."""
        return await self._runs.cancel(self.run_id)

    async def result(self, timeout: float | None = None) -> Any:
        """The workflow's return value; raises RunFailed, RunCancelled, or TimeoutError."""
        status, output, error = await self._runs.outcome(self.run_id, timeout)
        if status is RunStatus.COMPLETED:
            return None if output is None else decode_result(output, self._runs)
        if status is RunStatus.CANCELLED:
            raise RunCancelled(self.run_id, None if error is None else error.summary)
        if error is None:
            raise RunFailed(self.run_id, "unknown error")
        raise RunFailed(self.run_id, error.summary, error.error_type, error.message, error.stack)

    async def readable(self, start_index: int = 0, namespace: str | None = None) -> AsyncGenerator[Any, None]:
        """The stream's values from ``start_index`` (negative counts from the end) until it closes."""
        async with contextlib.aclosing(self.chunks(start_index, namespace)) as chunks:
            async for chunk in chunks:
                yield chunk.value

    async def chunks(self, start_index: int = 0, namespace: str | None = None) -> AsyncGenerator[StreamChunk, None]:
        """Like ``readable`` with each chunk's index and stored bytes."""
        await self._runs.run_row(self.run_id)
        async with contextlib.aclosing(self._runs.read(self.run_id, start_index, namespace)) as reader:
            async for chunk in reader:
                yield chunk

    async def timeline(self) -> list[OperationInfo]:
        """Each step and sleep of the run with its attempts and times, in order."""
        await self._runs.run_row(self.run_id)
        journal = self._runs.journal
        return build_timeline(await journal.operations(self.run_id), await journal.failed_attempts(self.run_id), time.time())
