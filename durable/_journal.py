"""The journal: one SQLite file, one writer with group commit, one reader.

Every write goes through :meth:`Journal.submit`: a list of statements that commit
together. Items submitted while a commit is in flight share the next one; the
submitter's future resolves only after COMMIT returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from ._errors import EngineClosed

log = logging.getLogger("durable.journal")

Statement = tuple[str, Sequence[Any]]

# Ordered: index i brings the schema from version i to i + 1. Never edit a released entry.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY,
        workflow_name TEXT NOT NULL,
        input         BLOB NOT NULL,
        status        TEXT NOT NULL,
        created_at    REAL NOT NULL,
        started_at    REAL,
        completed_at  REAL,
        output        BLOB,
        error         TEXT
    ) WITHOUT ROWID;
    CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('pending', 'running');
    CREATE INDEX runs_by_created ON runs (created_at);
    CREATE INDEX runs_by_status_created ON runs (status, created_at);

    -- One row per durable operation of a workflow body: a step's outcome or a sleep.
    CREATE TABLE ops (
        run_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        name         TEXT NOT NULL,
        state        TEXT NOT NULL,
        result       BLOB,
        attempt      INTEGER,
        started_at   REAL NOT NULL,
        completed_at REAL,
        wake_at      REAL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;

    -- Failed step attempts, each with the durable time of its retry.
    CREATE TABLE attempts (
        run_id     TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        name       TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        started_at REAL NOT NULL,
        ended_at   REAL NOT NULL,
        error      TEXT NOT NULL,
        retry_at   REAL,
        PRIMARY KEY (run_id, seq, attempt)
    ) WITHOUT ROWID;

    -- Stream chunks. A body write is keyed by its seq (part = -1); a step's n-th write
    -- by (the step's seq, n), so a re-executed step cannot store it twice.
    CREATE TABLE chunks (
        run_id     TEXT NOT NULL,
        namespace  TEXT NOT NULL,
        idx        INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        part       INTEGER NOT NULL,
        data       BLOB NOT NULL,
        written_at REAL NOT NULL,
        PRIMARY KEY (run_id, namespace, idx)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX chunks_origin ON chunks (run_id, seq, part);

    CREATE TABLE closed_streams (
        run_id    TEXT NOT NULL,
        namespace TEXT NOT NULL,
        closed_at REAL NOT NULL,
        PRIMARY KEY (run_id, namespace)
    ) WITHOUT ROWID;
    """,
    # A cancelled run's body still has to observe its cancellation (and may write a
    # last chunk); until it has, the run is resumed at open like an unfinished one.
    """
    ALTER TABLE runs ADD COLUMN unwound INTEGER NOT NULL DEFAULT 1;
    DROP INDEX runs_unfinished;
    CREATE INDEX runs_to_resume ON runs (created_at)
        WHERE status IN ('pending', 'running') OR (status = 'cancelled' AND unwound = 0);
    """,
]

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


class _StatementFailed(Exception):
    """A statement of the batch failed on its own merits; its cause is the sqlite3 error."""


_DATABASE_FAULTS = ("locked", "busy", "readonly", "read-only", "disk", "full", "i/o", "corrupt", "malformed")


def _is_database_fault(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _DATABASE_FAULTS)


RESOLVE_SLICE = 256  # committed items resolved per loop step


@dataclass(slots=True)
class _Item:
    statements: list[Statement]
    future: asyncio.Future[None] | None
    after: Callable[[], None] | None = None
    failed: Callable[[BaseException], None] | None = None


@dataclass(slots=True)
class _Group:
    sql: str
    rows: list[Sequence[Any]] = field(default_factory=list)


class Journal:
    """Owns the writer and reader connections and the group-commit task."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = level
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[_Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            await self._close_connections()
            raise
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name="durable-journal-writer")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={self._synchronous}",
            "PRAGMA busy_timeout=5000",
            "PRAGMA foreign_keys=ON",
        ):
            await conn.execute(pragma)
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this engine's {len(MIGRATIONS)}: upgrade durable"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the script and the version bump commit together.
            await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={target};\nCOMMIT;")

    async def close(self) -> None:
        """Commit what was submitted, then close both connections. Idempotent."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
        self._writer = self._reader = None

    # -- writes ---------------------------------------------------------------

    def submit(
        self,
        statements: list[Statement],
        after: Callable[[], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> asyncio.Future[None]:
        """Queue statements that commit atomically; the future resolves after COMMIT.

        ``after`` runs right after the commit, before any future resolves; ``failed``
        runs with the error if the statements could not be committed, before the future
        gets that error (which then counts as handled). Both run in the writer, so a
        burst of commits costs no loop callback each.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Item(statements, future, after, failed))
        return future

    def post(self, statements: list[Statement], after: Callable[[], None], failed: Callable[[BaseException], None]) -> None:
        """``submit`` for a writer that nothing awaits: ``after`` or ``failed`` tells the outcome."""
        self._enqueue(_Item(statements, None, after, failed))

    def _enqueue(self, item: _Item) -> None:
        if self._task is None or self._task.done() or self._closing:
            raise EngineClosed("The engine is closed: open it before use, and do not use it after close().")
        self._queue.append(item)
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue, []
            try:
                await self._commit(batch)
            except _StatementFailed:
                # One item's statement failed (a constraint, say): the others commit on their own.
                for item in batch:
                    try:
                        await self._commit([item])
                    except Exception as exc:
                        self._fail(item, exc)
                        continue
                    self._resolve(item)
                continue
            except Exception as exc:  # the database as a whole refused: locked, read-only, full
                # The writer must outlive any error: every later write depends on it.
                for item in batch:
                    self._fail(item, exc)
                continue
            for start in range(0, len(batch), RESOLVE_SLICE):
                if start:
                    # A big batch's callbacks (runs ending, sleeps arming) are not urgent:
                    # let due timers and the runs they wake go between slices.
                    await asyncio.sleep(0)
                for item in batch[start : start + RESOLVE_SLICE]:
                    self._resolve(item)

    @staticmethod
    def _fail(item: _Item, exc: BaseException) -> None:
        cause = exc.__cause__ if isinstance(exc, _StatementFailed) and exc.__cause__ else exc
        if item.failed is not None:
            try:
                item.failed(cause)
            except Exception:
                log.exception("commit-failure callback failed")
        future = item.future
        if future is not None and not future.done():
            future.set_exception(cause)
            if item.failed is not None:
                future.exception()  # handled by ``failed``: no "never retrieved" log

    @staticmethod
    def _resolve(item: _Item) -> None:
        if item.after is not None:
            try:
                item.after()
            except Exception:
                log.exception("post-commit callback failed")
        future = item.future
        if future is not None and not future.done():
            future.set_result(None)

    async def _commit(self, batch: Iterable[_Item]) -> None:
        writer = self._writer
        assert writer is not None
        groups: list[_Group] = []
        for item in batch:
            for sql, params in item.statements:
                if not groups or groups[-1].sql != sql:
                    groups.append(_Group(sql))
                groups[-1].rows.append(params)
        if len(groups) == 1 and len(groups[0].rows) == 1:
            # One statement is atomic on its own in autocommit mode: one round trip to
            # the database thread instead of three (BEGIN, statement, COMMIT).
            await self._run(groups[0])
            self.commits += 1
            return
        await writer.execute("BEGIN IMMEDIATE")
        try:
            for group in groups:
                await self._run(group)
            await writer.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await writer.execute("ROLLBACK")
            raise
        self.commits += 1

    async def _run(self, group: _Group) -> None:
        """Execute one group; a failure of the statement itself becomes _StatementFailed."""
        writer = self._writer
        assert writer is not None
        try:
            if len(group.rows) == 1:
                await writer.execute(group.sql, group.rows[0])
            else:
                await writer.executemany(group.sql, group.rows)
        except sqlite3.OperationalError as exc:
            if _is_database_fault(exc):
                raise
            raise _StatementFailed() from exc
        except Exception as exc:  # a constraint, or a parameter sqlite3 cannot bind
            raise _StatementFailed() from exc

    # -- reads ----------------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        reader = self._reader
        if reader is None:
            raise EngineClosed("The engine is closed: open it before use, and do not use it after close().")
        rows = await reader.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None
