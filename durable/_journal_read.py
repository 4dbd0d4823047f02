"""Read-only queries for people and scripts: the run list, a run, its timeline, streams and hooks.

``JournalReader`` opens the file with a connection of its own in read-only mode
(``file:...?mode=ro``): it never takes the engine's lock and, the journal being in
WAL mode, never blocks the engine's writer. Each named method is one short read
transaction. The CLI calls it directly (it is a separate, synchronous process);
the web inspector calls it through ``AsyncJournalReader``, on a thread of its
own, so the server's event loop never waits on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._errors import UnreadableJournal
from ._failures import ErrorInfo
from ._models import OperationInfo
from ._schema import MIGRATIONS
from ._timeline import build_timeline

__all__ = ["AsyncJournalReader", "ChunkRecord", "JournalReader", "RunDetail", "RunPage", "RunSummary", "StreamInfo"]

T = TypeVar("T")

# The first schema version with ``runs.forked_from`` (migration 6): what these queries read.
READABLE_SINCE = 6
MAX_PAGE = 1000

_SUMMARY = "run_id, workflow_name, status, created_at, started_at, completed_at, error, forked_from, forked_at_seq, parent_run_id"
_SUMMARY_WIDTH = 10


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as the list shows it; times are epoch seconds."""

    run_id: str
    workflow_name: str
    status: str
    created_at: float
    started_at: float | None
    completed_at: float | None
    error: str | None
    forked_from: str | None
    forked_at_seq: int | None
    parent_run_id: str | None

    @property
    def cursor(self) -> str:
        """Where the page after this run starts (keyset paging, newest first)."""
        return f"{self.created_at!r}:{self.run_id}"


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with its stored input and output (JSON bytes) and its error with the traceback, when kept."""

    summary: RunSummary
    input: bytes
    output: bytes | None
    error: ErrorInfo | None


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of the run list; ``next`` is the cursor of the following page, ``None`` at the end."""

    runs: list[RunSummary]
    next: str | None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream of a run: its length (the next index) and whether it was closed."""

    namespace: str
    length: int
    closed: bool


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One stored chunk of a stream."""

    index: int
    data: bytes
    written_at: float


def parse_cursor(cursor: str) -> tuple[float, str]:
    """``created_at:run_id`` as ``RunSummary.cursor`` writes it; ValueError otherwise."""
    stamp, sep, run_id = cursor.partition(":")
    try:
        created = float(stamp)
    except ValueError:
        created = float("nan")
    if not sep or not run_id or created != created:
        raise ValueError(f"cursor must be a value from a previous page's 'next', got {cursor[:80]!r}")
    return created, run_id


def _summary(row: tuple[Any, ...]) -> RunSummary:
    return RunSummary(*row)


class JournalReader:
    """Named read-only queries on one journal file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def open(self) -> JournalReader:
        """Open read-only; ``UnreadableJournal`` names what is wrong with the file."""
        if self._conn is not None:
            return self
        if not self.path.is_file():
            raise UnreadableJournal(f"{self.path}: no such database file")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")  # a checkpoint may hold the file for a moment
            self._check_version(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def _check_version(self, conn: sqlite3.Connection) -> None:
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise UnreadableJournal(f"{self.path} is not a durable journal: {exc}") from None
        if version == 0:
            raise UnreadableJournal(f"{self.path} is not a durable journal (it has no schema version)")
        if version < READABLE_SINCE:
            raise UnreadableJournal(
                f"{self.path} has schema version {version}, older than {READABLE_SINCE}: "
                "start the server (or open an Engine) on it once to upgrade it"
            )
        if version > len(MIGRATIONS):
            raise UnreadableJournal(
                f"{self.path} has schema version {version}, newer than this durable's {len(MIGRATIONS)}: upgrade durable"
            )

    def close(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> JournalReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction: its queries see one state of the file."""
        conn = self.open()._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    # -- runs -------------------------------------------------------------------

    def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int = 50, after: str | None = None
    ) -> RunPage:
        """Runs newest first, filtered by status and workflow, from the cursor ``after`` on."""
        limit = max(1, min(limit, MAX_PAGE))
        where, params = self._run_filters(status, workflow, after)
        sql = f"SELECT {_SUMMARY} FROM runs {where} ORDER BY created_at DESC, run_id DESC LIMIT ?"
        rows = self._read(lambda conn: conn.execute(sql, (*params, limit + 1)).fetchall())
        runs = [_summary(row) for row in rows[:limit]]
        return RunPage(runs, runs[-1].cursor if len(rows) > limit else None)

    @staticmethod
    def _run_filters(status: str | None, workflow: str | None, after: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if workflow is not None:
            clauses.append("workflow_name = ?")
            params.append(workflow)
        if after is not None:
            clauses.append("(created_at, run_id) < (?, ?)")
            params.extend(parse_cursor(after))
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def run(self, run_id: str) -> RunDetail | None:
        """One run with its input and output, ``None`` when unknown."""
        sql = f"SELECT {_SUMMARY}, input, output, error_info FROM runs WHERE run_id = ?"
        row = self._read(lambda conn: conn.execute(sql, (run_id,)).fetchone())
        if row is None:
            return None
        summary, (data, output, info) = _summary(row[:_SUMMARY_WIDTH]), row[_SUMMARY_WIDTH:]
        error = ErrorInfo.stored(summary.error, None if info is None else bytes(info))
        return RunDetail(summary, bytes(data), None if output is None else bytes(output), error)

    def workflow_names(self) -> list[str]:
        """Every workflow name that has runs, sorted."""
        # A skip scan of the workflow index: one seek per name, not a pass over every run.
        sql = (
            "WITH RECURSIVE names(name) AS (SELECT MIN(workflow_name) FROM runs"
            " UNION ALL SELECT (SELECT MIN(workflow_name) FROM runs WHERE workflow_name > name) FROM names"
            " WHERE name IS NOT NULL) SELECT name FROM names WHERE name IS NOT NULL"
        )
        rows = self._read(lambda conn: conn.execute(sql).fetchall())
        return [str(name) for (name,) in rows]

    def timeline(self, run_id: str, now: float | None = None) -> list[OperationInfo]:
        """Each operation of the run by seq, with its attempts (what ``Run.timeline()`` gives)."""

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            ops = conn.execute(
                "SELECT seq, kind, name, state, attempt, started_at, completed_at, wake_at FROM ops"
                " WHERE run_id = ? ORDER BY seq",
                (run_id,),
            ).fetchall()
            tries = conn.execute(
                "SELECT seq, name, attempt, started_at, ended_at, error, retry_at, stack FROM attempts"
                " WHERE run_id = ? ORDER BY seq, attempt",
                (run_id,),
            ).fetchall()
            return ops, tries

        ops, tries = self._read(read)
        return build_timeline(ops, tries, time.time() if now is None else now)

    # -- streams ------------------------------------------------------------------

    def streams(self, run_id: str) -> list[StreamInfo]:
        """The run's streams by namespace."""

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], set[str]]:
            lengths = conn.execute(
                "SELECT namespace, MAX(idx) + 1 FROM chunks WHERE run_id = ? GROUP BY namespace ORDER BY namespace", (run_id,)
            ).fetchall()
            closed = {str(ns) for (ns,) in conn.execute("SELECT namespace FROM closed_streams WHERE run_id = ?", (run_id,))}
            return lengths, closed

        lengths, closed = self._read(read)
        return [StreamInfo(str(ns), int(length), str(ns) in closed) for ns, length in lengths]

    def chunks(self, run_id: str, namespace: str, start: int = 0, limit: int = 500) -> list[ChunkRecord]:
        """Stored chunks of one stream from index ``start``."""
        sql = "SELECT idx, data, written_at FROM chunks WHERE run_id = ? AND namespace = ? AND idx >= ? ORDER BY idx LIMIT ?"
        rows = self._read(lambda conn: conn.execute(sql, (run_id, namespace, start, limit)).fetchall())
        return [ChunkRecord(int(idx), bytes(data), float(at)) for idx, data, at in rows]

    def stream_ended(self, run_id: str, namespace: str) -> bool:
        """Whether no chunk can follow: the stream was closed, or the run is over (or unknown)."""
        sql = (
            "SELECT (SELECT status FROM runs WHERE run_id = ?),"
            " EXISTS (SELECT 1 FROM closed_streams WHERE run_id = ? AND namespace = ?)"
        )
        status, closed = self._read(lambda conn: conn.execute(sql, (run_id, run_id, namespace)).fetchone())
        return bool(closed) or status is None or status in ("completed", "failed", "cancelled")

    # -- hooks ----------------------------------------------------------------------

    def hooks(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Active hooks (of one run) as column -> value, oldest first; ``[]`` where the table does not exist."""
        return self._read(lambda conn: _hook_rows(conn, run_id))


def _hook_rows(conn: sqlite3.Connection, run_id: str | None) -> list[dict[str, Any]]:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hooks'").fetchone() is None:
        return []  # a journal from before hooks existed
    where, params = ("AND run_id = ?", (run_id,)) if run_id is not None else ("", ())
    # Only the hooks that can still take a payload.
    cursor = conn.execute(
        f"SELECT * FROM hooks WHERE released_at IS NULL {where} ORDER BY created_at LIMIT ?", (*params, MAX_PAGE)
    )
    names = [str(d[0]) for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class AsyncJournalReader:
    """A ``JournalReader`` for an event loop: every query runs on one thread of its own."""

    def __init__(self, path: str | Path) -> None:
        self._reader = JournalReader(path)
        self._executor: ThreadPoolExecutor | None = None

    async def call(self, fn: Callable[[JournalReader], T]) -> T:
        """``fn(reader)`` on the reader's thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-inspect")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._reader)

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(sqlite3.Error):
            await asyncio.get_running_loop().run_in_executor(executor, self._reader.close)
        executor.shutdown(wait=False)
