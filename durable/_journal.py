"""The journal: every statement the engine runs against its SQLite file.

Writes are built by the named methods below and committed by the group-commit
writer (``_writer.py``); reads go through a second connection. Nothing else in
the engine holds SQL, so another backend only has to provide this interface
(and ``_journal_read.py``, the read-only queries of the CLI and the inspector).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from ._errors import EngineClosed
from ._failures import ErrorInfo
from ._options import PLAIN, StartPlan
from ._replay import Recorded, Replay, StoredRun, receive_name
from ._schema import MIGRATIONS
from ._writer import GroupCommitWriter, OnCommit, OnFailure, Params, Statement, WriteOwner

__all__ = ["SYNCHRONOUS_LEVELS", "Journal", "Params", "Statement", "is_hook_released"]

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

RUN_COLUMNS = (
    "run_id, workflow_name, status, created_at, started_at, completed_at, error, input, error_info,"
    " parent_run_id, queue, deadline"
)
_TO_RESUME = "(r.status IN ('pending', 'running') OR (r.status = 'cancelled' AND r.unwound = 0))"

_INSERT_OP = (
    "INSERT INTO ops (run_id, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at, abandoned)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (run_id, seq, name, attempt, started_at, ended_at, error, stack, retry_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UNFINISHED = "status IN ('pending', 'running')"
# A queued run that never left its queue has no body to unwind: it never starts.
_UNWOUND_IF_CANCELLED = "CASE WHEN status = 'pending' AND queue IS NOT NULL THEN 1 ELSE 0 END"
_INSERT_PLANNED_RUN = (
    "INSERT OR IGNORE INTO runs (run_id, workflow_name, input, status, created_at, started_at,"
    " parent_run_id, deadline, timeout, queue, queue_key, priority, queue_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Every run below ``?`` in the parent tree, finished or not (a finished child's children may not be).
_DESCENDANTS = (
    "WITH RECURSIVE tree(id) AS (SELECT run_id FROM runs WHERE parent_run_id = ?"
    " UNION SELECT r.run_id FROM runs r JOIN tree ON r.parent_run_id = tree.id)"
)
HOOK_COLUMNS = "token, run_id, seq, kind, metadata, respond_with, created_at"
_HOOK_RELEASED = "durable: hook released"  # the message of the trigger that refuses a payload


def is_hook_released(exc: BaseException) -> bool:
    """Whether a payload's insert failed because its hook was released meanwhile."""
    return isinstance(exc, sqlite3.IntegrityError) and _HOOK_RELEASED in str(exc)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to the newest version, one migration per transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(f"{path} has schema version {version}, newer than this engine's {len(MIGRATIONS)}: upgrade durable")
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the script and the version bump commit together.
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={target};\nCOMMIT;")


class Journal:
    """The engine's storage: named writes through group commit, named reads."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {synchronous!r}")
        self.path = Path(path)
        self._writer = GroupCommitWriter(self.path, level)
        self._synchronous = level
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._writer.open(lambda conn: migrate(conn, self.path))
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in (f"PRAGMA synchronous={self._synchronous}", "PRAGMA busy_timeout=5000", "PRAGMA foreign_keys=ON"):
                await self._reader.execute(pragma)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what was submitted, then close both connections. Idempotent."""
        await self._writer.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await reader.close()

    def writer_stats(self) -> dict[str, int]:
        """The writer's counters: commits, writes taken, time committing, time first writes waited (ns)."""
        writer = self._writer
        return {
            "commits": writer.commits,
            "writes": writer.writes,
            "writer_busy_ns": writer.busy_ns,
            "writer_wait_ns": writer.wait_ns,
        }

    # -- committing -------------------------------------------------------------

    def commit(
        self,
        statements: list[Statement],
        on_commit: OnCommit | None = None,
        on_failure: OnFailure | None = None,
        owner: WriteOwner | None = None,
    ) -> asyncio.Future[None]:
        """Queue statements that commit together; the returned future resolves after COMMIT.

        Once a write of ``owner`` failed, its later writes are refused.
        """
        return self._writer.commit(statements, on_commit, on_failure, owner)

    def commit_returning(self, statement: Statement) -> asyncio.Future[list[tuple[Any, ...]]]:
        """Queue one statement with a RETURNING clause; the future resolves to its rows after COMMIT."""
        return self._writer.commit_returning(statement)

    def commit_then(
        self, statements: list[Statement], on_commit: OnCommit | None, on_failure: OnFailure, owner: WriteOwner | None = None
    ) -> None:
        """Queue statements nothing awaits: ``on_commit`` or ``on_failure`` tells the outcome."""
        self._writer.commit_then(statements, on_commit, on_failure, owner)

    def barrier(self) -> asyncio.Future[None]:
        """Resolves once every write queued before it has its outcome; it writes nothing."""
        return self._writer.barrier()

    # -- statements: runs ---------------------------------------------------------

    @staticmethod
    def new_run(run_id: str, workflow_name: str, input_data: bytes, created_at: float, plan: StartPlan = PLAIN) -> Statement:
        """A new run: ``running`` since ``created_at`` (its body starts once this commits),
        or ``pending`` when it waits in a queue (``run_started`` records its start)."""
        if plan is PLAIN:
            return (
                "INSERT INTO runs (run_id, workflow_name, input, status, created_at, started_at)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, workflow_name, input_data, created_at, created_at),
            )
        # OR IGNORE: a run id given by the caller or derived for a child is created once,
        # whoever gets there first (the engine checks for it before, in memory and here).
        p = plan
        status, started_at = ("pending", None) if p.queue is not None else ("running", created_at)
        params = (p.parent_run_id, p.deadline, p.timeout, p.queue, p.queue_key, p.priority, p.queue_seq)
        return (_INSERT_PLANNED_RUN, (run_id, workflow_name, input_data, status, created_at, started_at, *params))

    @staticmethod
    def run_started(run_id: str, at: float) -> Statement:
        return ("UPDATE runs SET status = 'running', started_at = ? WHERE run_id = ? AND status = 'pending'", (at, run_id))

    @staticmethod
    def run_cancelled(run_id: str, at: float, error: str | None = None) -> Statement:
        # ``unwound = 0``: the body has yet to observe its cancellation (see migration 2).
        return (
            f"UPDATE runs SET status = 'cancelled', completed_at = ?, error = ?, unwound = {_UNWOUND_IF_CANCELLED}"
            f" WHERE run_id = ? AND {_UNFINISHED}",
            (at, error, run_id),
        )

    @staticmethod
    def descendants_cancelled(run_id: str, at: float, error: str) -> Statement:
        """Cancel every unfinished run started, directly or not, by ``run_id``: with it, in one commit."""
        return (
            f"{_DESCENDANTS} UPDATE runs SET status = 'cancelled', completed_at = ?, error = ?,"
            f" unwound = {_UNWOUND_IF_CANCELLED} WHERE run_id IN (SELECT id FROM tree) AND {_UNFINISHED}",
            (run_id, at, error),
        )

    @staticmethod
    def run_unwound(run_id: str) -> Statement:
        return ("UPDATE runs SET unwound = 1 WHERE run_id = ?", (run_id,))

    @staticmethod
    def run_ended(run_id: str, status: str, output: bytes | None, error: ErrorInfo | None, at: float) -> Statement:
        summary, info = (None, None) if error is None else (error.summary, error.to_bytes())
        return (
            "UPDATE runs SET status = ?, output = ?, error = ?, error_info = ?, completed_at = ?"
            f" WHERE run_id = ? AND {_UNFINISHED}",
            (status, output, summary, info, at, run_id),
        )

    # -- statements: operations -------------------------------------------------

    @staticmethod
    def step_completed(
        run_id: str, seq: int, name: str, result: bytes, attempt: int, started: float, ended: float, abandoned: bool
    ) -> Statement:
        return (_INSERT_OP, (run_id, seq, "step", name, "completed", result, attempt, started, ended, None, int(abandoned)))

    @staticmethod
    def step_failed(
        run_id: str, seq: int, name: str, info: bytes, attempt: int, started: float, ended: float, abandoned: bool
    ) -> Statement:
        return (_INSERT_OP, (run_id, seq, "step", name, "failed", info, attempt, started, ended, None, int(abandoned)))

    @staticmethod
    def attempt_failed(
        run_id: str, seq: int, name: str, attempt: int, started: float, ended: float, error: ErrorInfo, retry_at: float | None
    ) -> Statement:
        return (_INSERT_ATTEMPT, (run_id, seq, name, attempt, started, ended, error.summary, error.stack, retry_at))

    @staticmethod
    def sleep_started(run_id: str, seq: int, name: str, started: float, wake_at: float) -> Statement:
        return (_INSERT_OP, (run_id, seq, "sleep", name, "waiting", None, None, started, None, wake_at, 0))

    @staticmethod
    def child_started(run_id: str, seq: int, workflow_name: str, child_run_id: str, at: float) -> Statement:
        return (_INSERT_OP, (run_id, seq, "child", workflow_name, "started", child_run_id.encode(), None, at, None, None, 0))

    @staticmethod
    def child_settled(run_id: str, seq: int, state: str, result: bytes, at: float) -> Statement:
        """The child's outcome as its parent received it: ``completed`` (its output), ``failed`` or ``cancelled``."""
        return (
            "UPDATE ops SET state = ?, result = ?, completed_at = ? WHERE run_id = ? AND seq = ? AND state = 'started'",
            (state, result, at, run_id, seq),
        )

    @staticmethod
    def chunk(run_id: str, namespace: str, index: int, seq: int, part: int, data: bytes, at: float) -> Statement:
        return (
            "INSERT INTO chunks (run_id, namespace, idx, seq, part, data, written_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, namespace, index, seq, part, data, at),
        )

    @staticmethod
    def stream_closed(run_id: str, namespace: str, at: float) -> Statement:
        return ("INSERT OR IGNORE INTO closed_streams (run_id, namespace, closed_at) VALUES (?, ?, ?)", (run_id, namespace, at))

    # -- statements: hooks -------------------------------------------------------

    @staticmethod
    def hook_created(
        run_id: str,
        seq: int,
        label: str,
        result: bytes,
        token: str,
        kind: str,
        metadata: bytes,
        respond_with: bytes | None,
        at: float,
    ) -> list[Statement]:
        """The creation operation (``result`` tells the token) and the token's registration.

        The unique index on active tokens refuses a token that another active hook holds.
        """
        return [
            (_INSERT_OP, (run_id, seq, "hook", label, "created", result, None, at, at, None, 0)),
            (
                f"INSERT INTO hooks ({HOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token, run_id, seq, kind, metadata, respond_with, at),
            ),
        ]

    @staticmethod
    def hook_conflict(run_id: str, seq: int, label: str, result: bytes, at: float) -> Statement:
        """A creation refused because another hook held the token: replays as the same HookConflict."""
        return (_INSERT_OP, (run_id, seq, "hook", label, "conflict", result, None, at, at, None, 0))

    @staticmethod
    def hook_released(run_id: str, seq: int, at: float) -> Statement:
        return ("UPDATE hooks SET released_at = ? WHERE run_id = ? AND seq = ? AND released_at IS NULL", (at, run_id, seq))

    @staticmethod
    def hook_payload(
        run_id: str, seq: int, index: int, data: bytes, key: str | None, at: float, consumed_seq: int | None
    ) -> Statement:
        """A payload of the hook at (run, seq); ``consumed_seq`` when a waiting receive takes it at once."""
        consumed_at = None if consumed_seq is None else at
        return (
            "INSERT INTO hook_payloads (run_id, seq, idx, payload, idempotency_key, received_at, consumed_seq, consumed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, seq, index, data, key, at, consumed_seq, consumed_at),
        )

    @staticmethod
    def payload_consumed(run_id: str, seq: int, index: int, consumed_seq: int, at: float) -> Statement:
        return (
            "UPDATE hook_payloads SET consumed_seq = ?, consumed_at = ? WHERE run_id = ? AND seq = ? AND idx = ?",
            (consumed_seq, at, run_id, seq, index),
        )

    @staticmethod
    def payload_returned(run_id: str, seq: int, index: int, consumed_seq: int) -> Statement:
        """The receive that took it was cancelled before the body got it: the payload is free again."""
        return (
            "UPDATE hook_payloads SET consumed_seq = NULL, consumed_at = NULL"
            " WHERE run_id = ? AND seq = ? AND idx = ? AND consumed_seq = ?",
            (run_id, seq, index, consumed_seq),
        )

    @staticmethod
    def receive_started(run_id: str, seq: int, name: str, started: float, deadline: float) -> Statement:
        """A receive with a timeout: its deadline is durable."""
        return (_INSERT_OP, (run_id, seq, "receive", name, "waiting", None, None, started, None, deadline, 0))

    @staticmethod
    def receive_timed_out(run_id: str, seq: int, at: float) -> Statement:
        return ("UPDATE ops SET state = 'timeout', completed_at = ? WHERE run_id = ? AND seq = ?", (at, run_id, seq))

    # -- statements: operating runs (resume, fork) ---------------------------------

    @staticmethod
    def run_resumed(run_id: str) -> list[Statement]:
        """Continue a failed or cancelled run after its last completed step.

        Kept: every completed step (with its failed tries) and what the body did up to
        that step. Dropped, so they run afresh: steps that failed for good or were
        between tries (their tries too: a fresh retry budget), and every operation and
        stream chunk after it (the body's failure or cancellation events among them).
        Children stay journaled (their ids are their parent's id and sequence number, so
        none may start twice); one whose failure or cancellation the parent had received
        is awaited again, and gives its outcome of now. Hooks stay too, active again
        when they were released with the run. Streams reopen; a replayed
        ``close()`` closes them again. The deadline is spent: it counted from the start.
        """
        last = "(SELECT COALESCE(MAX(seq), -1) FROM ops WHERE run_id = ? AND kind = 'step' AND state = 'completed')"
        # Kept whatever their place: children, and created hooks (their rows are keyed by (run, seq)).
        dropped = f"kind != 'child' AND NOT (kind = 'hook' AND state = 'created') AND (seq > {last} OR state = 'failed')"
        return [
            (f"DELETE FROM ops WHERE run_id = ? AND {dropped}", (run_id, run_id)),
            # Payloads taken by receives after that step are free again, in their order;
            # the hooks released with the run are active again (before its completion time goes).
            (
                f"UPDATE hook_payloads SET consumed_seq = NULL, consumed_at = NULL WHERE run_id = ? AND consumed_seq > {last}",
                (run_id, run_id),
            ),
            (
                "UPDATE hooks SET released_at = NULL"
                " WHERE run_id = ? AND released_at = (SELECT completed_at FROM runs WHERE run_id = ?)",
                (run_id, run_id),
            ),
            (
                "UPDATE ops SET state = 'started', result = CAST(run_id || '~' || seq AS BLOB), completed_at = NULL"
                " WHERE run_id = ? AND kind = 'child' AND state IN ('failed', 'cancelled')",
                (run_id,),
            ),
            (
                "DELETE FROM attempts WHERE run_id = ? AND seq NOT IN"
                " (SELECT seq FROM ops WHERE run_id = ? AND kind = 'step' AND state = 'completed')",
                (run_id, run_id),
            ),
            (f"DELETE FROM chunks WHERE run_id = ? AND seq > {last}", (run_id, run_id)),
            ("DELETE FROM closed_streams WHERE run_id = ?", (run_id,)),
            (
                "UPDATE runs SET status = CASE WHEN started_at IS NULL THEN 'pending' ELSE 'running' END,"
                " completed_at = NULL, output = NULL, error = NULL, error_info = NULL, unwound = 1,"
                " deadline = NULL, timeout = NULL WHERE run_id = ? AND status IN ('failed', 'cancelled')",
                (run_id,),
            ),
        ]

    @staticmethod
    def run_forked(source: str, run_id: str, from_seq: int, created_at: float, queue_seq: int | None) -> list[Statement]:
        """A new pending run with the input of ``source`` and its journal before ``from_seq``.

        It waits in the source's queue (with its key and priority) at ``queue_seq``; it
        has no parent and no deadline. A child the source had started and not yet
        heard back from is not copied: the fork starts a child of its own there. Nor
        are hooks and what they received: the fork creates its hooks again (a token
        the source still holds is a ``HookConflict`` there).
        Chunks keep their order; their indexes are renumbered from 0 per namespace, so
        the copied streams have no gap where a later operation had written.
        """
        return [
            (
                "INSERT INTO runs (run_id, workflow_name, input, status, created_at, forked_from, forked_at_seq,"
                " queue, queue_key, priority, queue_seq)"
                " SELECT ?, workflow_name, input, 'pending', ?, run_id, ?, queue, queue_key, priority,"
                " CASE WHEN queue IS NULL THEN NULL ELSE ? END FROM runs WHERE run_id = ?",
                (run_id, created_at, from_seq, queue_seq, source),
            ),
            (
                "INSERT INTO ops (run_id, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at, abandoned)"
                " SELECT ?, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at, abandoned"
                " FROM ops WHERE run_id = ? AND seq < ? AND NOT (kind = 'child' AND state = 'started')"
                " AND kind NOT IN ('hook', 'receive')",
                (run_id, source, from_seq),
            ),
            (
                "INSERT INTO attempts (run_id, seq, name, attempt, started_at, ended_at, error, stack, retry_at)"
                " SELECT ?, seq, name, attempt, started_at, ended_at, error, stack, retry_at"
                " FROM attempts WHERE run_id = ? AND seq < ?",
                (run_id, source, from_seq),
            ),
            (
                "INSERT INTO chunks (run_id, namespace, idx, seq, part, data, written_at)"
                " SELECT ?, namespace, ROW_NUMBER() OVER (PARTITION BY namespace ORDER BY idx) - 1,"
                " seq, part, data, written_at FROM chunks WHERE run_id = ? AND seq < ?",
                (run_id, source, from_seq),
            ),
        ]

    # -- reads --------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        reader = self._reader
        if reader is None:
            raise EngineClosed("The engine is closed: open it before use, and do not use it after close().")
        rows = await reader.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]

    async def _fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def run_row(self, run_id: str) -> tuple[Any, ...] | None:
        """``RUN_COLUMNS`` of one run."""
        return await self._fetchone(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))

    async def run_status(self, run_id: str) -> str | None:
        row = await self._fetchone("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else str(row[0])

    async def cancelled_with(self, run_id: str) -> list[tuple[str, str]]:
        """Run id and workflow of every descendant that the cancellation of ``run_id`` cancelled."""
        note = f"parent run {run_id} was cancelled"
        rows = await self.fetchall(
            f"{_DESCENDANTS} SELECT run_id, workflow_name FROM runs WHERE run_id IN (SELECT id FROM tree)"
            " AND status = 'cancelled' AND substr(error, 1, ?) = ? ORDER BY created_at",
            (run_id, len(note), note),
        )
        return [(str(child), str(name)) for child, name in rows]

    async def tokens_taken(self, run_id: str) -> list[tuple[str, str]]:
        """Token and holder of each hook released with the run whose token another run's active hook holds."""
        rows = await self.fetchall(
            "SELECT h.token, o.run_id FROM hooks h JOIN hooks o ON o.token = h.token AND o.released_at IS NULL"
            " WHERE h.run_id = ? AND o.run_id != ? AND h.released_at = (SELECT completed_at FROM runs WHERE run_id = ?)",
            (run_id, run_id, run_id),
        )
        return [(str(token), str(holder)) for token, holder in rows]

    async def queue_of(self, run_id: str) -> str | None:
        """The queue a run was started on, ``None`` for none (or no such run)."""
        row = await self._fetchone("SELECT queue FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None or row[0] is None else str(row[0])

    async def workflow_of(self, run_id: str) -> str | None:
        """The workflow name of a run, ``None`` when there is no such run."""
        row = await self._fetchone("SELECT workflow_name FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else str(row[0])

    async def last_queue_seq(self) -> int:
        row = await self._fetchone("SELECT COALESCE(MAX(queue_seq), 0) FROM runs WHERE queue_seq IS NOT NULL")
        return int(row[0]) if row else 0

    async def run_outcome(self, run_id: str) -> tuple[str, bytes | None, ErrorInfo | None] | None:
        """Status, output and error of one run."""
        row = await self._fetchone("SELECT status, output, error, error_info FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            return None
        status, output, summary, info = row
        error = ErrorInfo.reason(summary) if status == "cancelled" else ErrorInfo.stored(summary, info)
        return str(status), None if output is None else bytes(output), error

    async def list_runs(self, status: str | None, limit: int) -> list[tuple[Any, ...]]:
        """``RUN_COLUMNS`` of the newest runs, optionally of one status."""
        if status is None:
            return await self.fetchall(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return await self.fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ? ORDER BY created_at DESC LIMIT ?", (status, limit)
        )

    async def runs_to_resume(self, run_ids: list[str] | None) -> tuple[list[StoredRun], dict[str, Replay]]:
        """Unfinished runs (all, or those of ``run_ids``) in start order, with their journals."""
        where = _TO_RESUME
        params: tuple[Any, ...] = ()
        if run_ids is not None:
            where += f" AND r.run_id IN ({', '.join('?' * len(run_ids))})"
            params = tuple(run_ids)
        rows = await self.fetchall(
            "SELECT r.run_id, r.workflow_name, r.input, r.status, r.error, r.started_at, r.parent_run_id, r.deadline,"
            f" r.timeout, r.queue, r.queue_key, r.priority, r.queue_seq FROM runs r WHERE {where} ORDER BY r.created_at",
            params,
        )
        runs = [
            StoredRun(row[0], row[1], bytes(row[2]), row[3], started_at=row[5], error=row[4], plan=StartPlan(*row[6:]))
            for row in rows
        ]
        replays = {run.run_id: Replay() for run in runs}
        if runs:
            await self._load_ops(where, params, replays)
            await self._load_retries(where, params, replays)
            await self._load_chunks(where, params, replays)
            await self._load_received(where, params, replays)
            for run_id, ns in await self.fetchall(
                f"SELECT c.run_id, c.namespace FROM closed_streams c JOIN runs r ON r.run_id = c.run_id WHERE {where}", params
            ):
                replays[run_id].closed[ns] = None
        return runs, replays

    async def _load_ops(self, where: str, params: tuple[Any, ...], replays: dict[str, Replay]) -> None:
        for run_id, seq, kind, name, state, result, wake_at, completed_at, abandoned in await self.fetchall(
            "SELECT o.run_id, o.seq, o.kind, o.name, o.state, o.result, o.wake_at, o.completed_at, o.abandoned"
            f" FROM ops o JOIN runs r ON r.run_id = o.run_id WHERE {where}",
            params,
        ):
            data = None if result is None else bytes(result)
            rec = Recorded(kind, name, state, data, wake_at, completed_at=completed_at, abandoned=bool(abandoned))
            replays[run_id].ops[seq] = rec

    async def _load_retries(self, where: str, params: tuple[Any, ...], replays: dict[str, Replay]) -> None:
        for run_id, seq, name, failed, retry_at in await self.fetchall(
            "SELECT a.run_id, a.seq, a.name, COUNT(*), MAX(a.retry_at)"
            f" FROM attempts a JOIN runs r ON r.run_id = a.run_id WHERE {where} GROUP BY a.run_id, a.seq",
            params,
        ):
            ops = replays[run_id].ops
            if seq not in ops:  # a step between two attempts
                ops[seq] = Recorded("step", name, "retrying", failed_attempts=failed, retry_at=retry_at)

    async def _load_chunks(self, where: str, params: tuple[Any, ...], replays: dict[str, Replay]) -> None:
        for run_id, ns, seq, part, idx in await self.fetchall(
            f"SELECT c.run_id, c.namespace, c.seq, c.part, c.idx FROM chunks c JOIN runs r ON r.run_id = c.run_id WHERE {where}",
            params,
        ):
            replay = replays[run_id]
            replay.chunk_next[ns] = max(replay.chunk_next.get(ns, 0), idx + 1)
            if part < 0:  # a write of the workflow body: an operation of its own
                replay.ops[seq] = Recorded("write", ns, "completed")
            else:  # the part-th write of the step at seq
                replay.step_parts[seq] = max(replay.step_parts.get(seq, 0), part + 1)

    async def _load_received(self, where: str, params: tuple[Any, ...], replays: dict[str, Replay]) -> None:
        """Hook payloads the body got, each as the outcome of the receive operation that took it."""
        for run_id, seq, idx, payload, consumed_seq, consumed_at in await self.fetchall(
            "SELECT p.run_id, p.seq, p.idx, p.payload, p.consumed_seq, p.consumed_at"
            f" FROM hook_payloads p JOIN runs r ON r.run_id = p.run_id WHERE {where} AND p.consumed_seq IS NOT NULL",
            params,
        ):
            replay = replays[run_id]
            timed = replay.ops.get(consumed_seq)  # a receive with a timeout has a row of its own
            wake_at = None if timed is None else timed.wake_at
            rec = Recorded("receive", receive_name(seq), "completed", bytes(payload), wake_at, completed_at=consumed_at)
            replay.ops[consumed_seq] = rec
            replay.received[consumed_seq] = idx

    # -- reads: hooks ---------------------------------------------------------------

    async def active_hooks(self, run_id: str | None = None) -> list[tuple[Any, ...]]:
        """``HOOK_COLUMNS`` of every active hook (of one run), oldest first."""
        where, params = ("AND run_id = ?", (run_id,)) if run_id is not None else ("", ())
        return await self.fetchall(
            f"SELECT {HOOK_COLUMNS} FROM hooks WHERE released_at IS NULL {where} ORDER BY created_at", params
        )

    async def active_hook_payloads(self, run_id: str | None = None) -> list[tuple[Any, ...]]:
        """``run_id, seq, idx, payload, idempotency_key, received_at`` of the payloads of active hooks, by index.

        ``payload`` is ``None`` for those a receive took: only their index and key matter.
        """
        where, params = ("AND h.run_id = ?", (run_id,)) if run_id is not None else ("", ())
        return await self.fetchall(
            "SELECT p.run_id, p.seq, p.idx, CASE WHEN p.consumed_seq IS NULL THEN p.payload END,"
            " p.idempotency_key, p.received_at"
            " FROM hook_payloads p JOIN hooks h ON h.run_id = p.run_id AND h.seq = p.seq"
            f" WHERE h.released_at IS NULL {where} ORDER BY p.run_id, p.seq, p.idx",
            params,
        )

    async def hook_by_token(self, token: str) -> tuple[Any, ...] | None:
        """``HOOK_COLUMNS`` of the active hook holding ``token``."""
        return await self._fetchone(f"SELECT {HOOK_COLUMNS} FROM hooks WHERE token = ? AND released_at IS NULL", (token,))

    async def hook_by_payload_key(self, token: str, key: str) -> tuple[Any, ...] | None:
        """``HOOK_COLUMNS`` of the latest hook with ``token`` (active or not) holding a payload with idempotency ``key``."""
        return await self._fetchone(
            f"SELECT {', '.join('h.' + c for c in HOOK_COLUMNS.split(', '))} FROM hooks h"
            " JOIN hook_payloads p ON p.run_id = h.run_id AND p.seq = h.seq"
            " WHERE h.token = ? AND p.idempotency_key = ? ORDER BY h.created_at DESC LIMIT 1",
            (token, key),
        )

    async def list_hooks(self, run_id: str | None) -> list[tuple[Any, ...]]:
        """``HOOK_COLUMNS`` of the active hooks (of one run), oldest first."""
        if run_id is None:
            return await self.active_hooks()
        return await self.fetchall(
            f"SELECT {HOOK_COLUMNS} FROM hooks WHERE run_id = ? AND released_at IS NULL ORDER BY seq", (run_id,)
        )

    # -- reads: streams -------------------------------------------------------------

    async def chunks_from(self, run_id: str, namespace: str, start: int, limit: int) -> list[tuple[int, bytes]]:
        rows = await self.fetchall(
            "SELECT idx, data FROM chunks WHERE run_id = ? AND namespace = ? AND idx >= ? ORDER BY idx LIMIT ?",
            (run_id, namespace, start, limit),
        )
        return [(int(idx), bytes(data)) for idx, data in rows]

    async def stream_length(self, run_id: str, namespace: str) -> int:
        row = await self._fetchone(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM chunks WHERE run_id = ? AND namespace = ?", (run_id, namespace)
        )
        return int(row[0]) if row else 0

    async def stream_is_closed(self, run_id: str, namespace: str) -> tuple[str | None, bool]:
        """The run's status (``None`` if unknown) and whether the stream was closed explicitly."""
        row = await self._fetchone(
            "SELECT (SELECT status FROM runs WHERE run_id = ?),"
            " EXISTS (SELECT 1 FROM closed_streams WHERE run_id = ? AND namespace = ?)",
            (run_id, run_id, namespace),
        )
        if row is None or row[0] is None:
            return None, False
        return str(row[0]), bool(row[1])

    # -- reads: timeline ------------------------------------------------------------

    async def operations(self, run_id: str) -> list[tuple[Any, ...]]:
        """``seq, kind, name, state, attempt, started_at, completed_at, wake_at`` per operation, by seq."""
        return await self.fetchall(
            "SELECT seq, kind, name, state, attempt, started_at, completed_at, wake_at FROM ops WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )

    async def failed_attempts(self, run_id: str) -> list[tuple[Any, ...]]:
        """``seq, name, attempt, started_at, ended_at, error, retry_at, stack`` per failed attempt."""
        return await self.fetchall(
            "SELECT seq, name, attempt, started_at, ended_at, error, retry_at, stack FROM attempts"
            " WHERE run_id = ? ORDER BY seq, attempt",
            (run_id,),
        )
