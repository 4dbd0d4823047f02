"""Group commit: one writer connection on a thread of its own, one transaction per batch.

Writes submitted while a commit is in flight wait in a queue and share the next
commit. A whole batch (BEGIN, every statement, COMMIT) is one call to the writer
thread, so a commit costs one hop between the event loop and SQLite, however
many statements it holds. Outcomes are reported on the loop: ``on_commit`` or
``on_failure`` of each write, then its future, in submission order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._errors import EngineClosed
from ._multi_row import MultiRow

log = logging.getLogger("durable.journal")

# Parameters as sqlite3 takes them: by position (``?``), or by name (``:name``).
Params = Sequence[Any] | Mapping[str, Any]
Statement = tuple[str, Params]

# Primary result codes (the low byte of an extended code) that mean the database as a
# whole refused, rather than one statement failing on its own merits (a constraint).
_DATABASE_FAULT_CODES = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)

RESOLVE_SLICE = 256  # committed writes acknowledged per loop step

OnCommit = Callable[[], None]
OnFailure = Callable[[BaseException], None]


class WriteOwner(Protocol):
    """Whose write it is: a run whose earlier write failed takes no later one."""

    @property
    def accepts_writes(self) -> bool: ...

    def write_failed(self) -> None:
        """Called on the writer thread when a write of this owner failed."""


class OwnerStopped(Exception):
    """An earlier write of the same owner failed: this one is refused, so the journal
    never holds a later write of a run without an earlier one."""


def is_database_fault(exc: BaseException) -> bool:
    """Whether ``exc`` says the database refused as a whole (locked, read-only, full, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and (code & 0xFF) in _DATABASE_FAULT_CODES


@dataclass(slots=True)
class _Write:
    statements: list[Statement]
    future: asyncio.Future[Any] | None
    on_commit: OnCommit | None = None
    on_failure: OnFailure | None = None
    owner: WriteOwner | None = None
    returning: bool = False  # one statement whose rows (a RETURNING clause) are the future's result
    returned: list[tuple[Any, ...]] | None = None  # set on the writer thread, read once committed
    queued_at: int = 0  # perf_counter_ns() at submission


@dataclass(slots=True)
class _Group:
    """Consecutive statements with the same SQL: one ``executemany``."""

    sql: str
    rows: list[Params] = field(default_factory=list)
    returning: _Write | None = None  # the write that gets the statement's rows (never grouped)


def _groups(writes: Sequence[_Write]) -> list[_Group]:
    groups: list[_Group] = []
    for write in writes:
        if write.returning:
            sql, params = write.statements[0]
            groups.append(_Group(sql, [params], write))
            continue
        for sql, params in write.statements:
            if not groups or groups[-1].sql != sql or groups[-1].returning is not None:
                groups.append(_Group(sql))
            groups[-1].rows.append(params)
    return groups


class _StatementFailed(Exception):
    """One statement failed on its own merits; the sqlite3 error is its cause."""


def connect(path: Path, synchronous: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection with the journal's pragmas (autocommit: transactions are explicit)."""
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
        for pragma in (f"PRAGMA synchronous={synchronous}", "PRAGMA busy_timeout=5000", "PRAGMA foreign_keys=ON"):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


class _Connection:
    """The writer's sqlite3 connection; every method runs on the writer thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._max_params = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._multi_row: dict[str, MultiRow | None] = {}

    def commit_batch(self, writes: Sequence[_Write]) -> list[BaseException | None]:
        """Commit the batch as one transaction; if one statement fails, each write on its own.

        Returns one outcome per write: ``None`` when committed, else its error.
        """
        try:
            self._transaction(_groups(writes))
            return [None] * len(writes)
        except _StatementFailed:
            pass
        outcomes: list[BaseException | None] = []
        failed: set[int] = set()  # owners with a failed write: their later writes fail too
        for write in writes:
            if write.owner is not None and id(write.owner) in failed:
                outcomes.append(OwnerStopped(f"an earlier write of {write.owner!r} failed"))
                continue
            outcome = self._commit_alone(write)
            if outcome is not None and write.owner is not None:
                failed.add(id(write.owner))
            outcomes.append(outcome)
        return outcomes

    def _commit_alone(self, write: _Write) -> BaseException | None:
        """Commit one write in its own transaction: ``None``, or its error."""
        try:
            self._transaction(_groups([write]))
            return None
        except _StatementFailed as exc:
            return exc.__cause__ or exc
        except sqlite3.Error as exc:  # the database refused meanwhile
            return exc

    def _transaction(self, groups: list[_Group]) -> None:
        conn = self.conn
        if len(groups) == 1 and len(groups[0].rows) == 1:
            self._execute(groups[0])  # one statement is atomic on its own in autocommit mode
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for group in groups:
                self._execute(group)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _execute(self, group: _Group) -> None:
        try:
            if group.returning is not None:
                group.returning.returned = self.conn.execute(group.sql, group.rows[0]).fetchall()
            elif len(group.rows) == 1:
                self.conn.execute(group.sql, group.rows[0])
            elif (multi := self._multi_row_of(group.sql)) is not None and multi.fits(group.rows):
                for sql, params in multi.chunks(group.rows):
                    self.conn.execute(sql, params)
            else:
                self.conn.executemany(group.sql, group.rows)
        except sqlite3.Error as exc:
            if is_database_fault(exc):
                raise
            raise _StatementFailed() from exc
        except (ValueError, TypeError, OverflowError) as exc:  # a parameter sqlite3 cannot bind
            raise _StatementFailed() from exc

    def _multi_row_of(self, sql: str) -> MultiRow | None:
        if sql not in self._multi_row:
            self._multi_row[sql] = MultiRow.of(sql, self._max_params)
        return self._multi_row[sql]


class GroupCommitWriter:
    """Owns the writer thread and its connection.

    The thread takes every write queued since its last commit, commits them as one
    batch, hands the outcomes to the event loop and goes on with the next batch at
    once: it never waits for the loop to acknowledge, so a busy loop does not slow
    the commits down, and writes keep their order end to end.
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._inbox: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Future[None] | None = None
        self._deliveries: deque[tuple[list[_Write], list[BaseException | None], int]] = deque()
        self._draining = False
        self._accepting = False
        # Writes submitted, and writes whose outcome was delivered, since open (on the
        # loop): a barrier waits for the second to reach what the first was when it came.
        self._submitted = 0
        self._settled = 0
        self._barriers: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.commits = 0
        # Where the time goes, in nanoseconds (set on the writer thread, read anywhere):
        # committing batches, and a batch's first write waiting until its commit began.
        # A wait well beyond a commit's length means the thread waited for the GIL,
        # which the loop holds until it runs out of work.
        self.writes = 0
        self.busy_ns = 0
        self.wait_ns = 0

    async def open(self, migrate: Callable[[sqlite3.Connection], None]) -> None:
        """Connect and run ``migrate`` off the loop, then start the writer thread."""
        conn = await asyncio.to_thread(connect, self._path, self._synchronous)
        try:
            await asyncio.to_thread(migrate, conn)
        except BaseException:
            conn.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(_Connection(conn),), name="durable-writer", daemon=True)
        self._thread.start()
        self._accepting = True

    async def close(self) -> None:
        """Commit what was submitted, acknowledge it, then stop the thread and close the connection. Idempotent."""
        self._accepting = False
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._inbox.put(None)
        assert self._ended is not None
        await asyncio.shield(self._ended)
        self._drain(limit=None)
        thread.join()

    # -- submitting -------------------------------------------------------------

    def commit(
        self,
        statements: list[Statement],
        on_commit: OnCommit | None = None,
        on_failure: OnFailure | None = None,
        owner: WriteOwner | None = None,
    ) -> asyncio.Future[None]:
        """Queue statements that commit atomically; the future resolves after COMMIT.

        ``on_commit`` runs right after the commit, before the future resolves;
        ``on_failure`` runs with the error if the statements could not be committed,
        and the future's error then counts as handled.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Write(statements, future, on_commit, on_failure, owner))
        return future

    def commit_returning(self, statement: Statement) -> asyncio.Future[list[tuple[Any, ...]]]:
        """``commit`` of one statement with a RETURNING clause: the future resolves to its rows after COMMIT."""
        future: asyncio.Future[list[tuple[Any, ...]]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Write([statement], future, returning=True))
        return future

    def commit_then(
        self, statements: list[Statement], on_commit: OnCommit | None, on_failure: OnFailure, owner: WriteOwner | None = None
    ) -> None:
        """``commit`` for writes nothing awaits: the callbacks tell the outcome (no future to resolve)."""
        self._enqueue(_Write(statements, None, on_commit, on_failure, owner))

    def barrier(self) -> asyncio.Future[None]:
        """Resolves once every write submitted before it has its outcome (committed or refused).

        It writes nothing: outcomes come in submission order, so this is how to wait
        for writes that nothing awaits (``commit_then``).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._settled >= self._submitted:
            future.set_result(None)
        else:
            self._barriers.append((self._submitted, future))
        return future

    def _enqueue(self, write: _Write) -> None:
        if not self._accepting:
            raise EngineClosed("The engine is closed: open it before use, and do not use it after close().")
        write.queued_at = time.perf_counter_ns()
        self._submitted += 1
        self._inbox.put(write)

    # -- the writer thread ----------------------------------------------------------

    def _run(self, connection: _Connection) -> None:
        try:
            while self._commit_next(connection):
                pass
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.conn.close()
            self._to_loop(self._thread_ended)

    def _commit_next(self, connection: _Connection) -> bool:
        """Commit everything queued (waiting for a first write); whether to go on."""
        first = self._inbox.get()
        batch: list[_Write] = [] if first is None else [first]
        going_on = first is not None
        while True:
            try:
                more = self._inbox.get_nowait()
            except queue.Empty:
                break
            if more is None:
                going_on = False
            else:
                batch.append(more)
        if batch:
            began = time.perf_counter_ns()
            outcomes = self._outcomes(connection, batch)
            self.busy_ns += time.perf_counter_ns() - began
            self.wait_ns += began - batch[0].queued_at
            self.writes += len(batch)
            self._to_loop(self._delivered, batch, outcomes)
        return going_on

    @staticmethod
    def _outcomes(connection: _Connection, batch: list[_Write]) -> list[BaseException | None]:
        # Writes of an owner whose earlier write failed are refused here, in the thread,
        # so none lands after the failed one even before the loop hears of the failure.
        outcomes: list[BaseException | None] = [None] * len(batch)
        accepted = []
        for i, write in enumerate(batch):
            if write.owner is not None and not write.owner.accepts_writes:
                outcomes[i] = OwnerStopped(f"{write.owner!r} stopped after a failed write")
            else:
                accepted.append(i)
        try:
            results = connection.commit_batch([batch[i] for i in accepted])
        except Exception as exc:  # the database as a whole refused: locked, read-only, full
            results = [exc] * len(accepted)
        for i, result in zip(accepted, results, strict=True):
            outcomes[i] = result
            owner = batch[i].owner
            if result is not None and owner is not None:
                owner.write_failed()
        return outcomes

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    # -- back on the loop -------------------------------------------------------------

    def _thread_ended(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _delivered(self, batch: list[_Write], outcomes: list[BaseException | None]) -> None:
        if None in outcomes:  # an outcome is None or an exception, which compares by identity
            self.commits += 1
        self._deliveries.append((batch, outcomes, 0))
        if not self._draining:
            self._drain(RESOLVE_SLICE)

    def _drain(self, limit: int | None) -> None:
        """Acknowledge up to ``limit`` writes, in order; the rest in a later loop step.

        A big batch's callbacks (runs ending, sleeps arming) are not urgent: due
        timers and the runs they wake go between two slices.
        """
        budget = limit
        while self._deliveries and (budget is None or budget > 0):
            batch, outcomes, start = self._deliveries.popleft()
            end = len(batch) if budget is None else min(len(batch), start + budget)
            _settle_writes(batch[start:end], outcomes[start:end])
            self._settled += end - start
            if budget is not None:
                budget -= end - start
            if end < len(batch):
                self._deliveries.appendleft((batch, outcomes, end))
        if self._barriers:
            self._release_barriers()
        self._draining = bool(self._deliveries)
        if self._draining:
            assert self._loop is not None
            self._loop.call_soon(self._drain, RESOLVE_SLICE)

    def _release_barriers(self) -> None:
        while self._barriers and self._barriers[0][0] <= self._settled:
            _, future = self._barriers.popleft()
            if not future.done():
                future.set_result(None)


def _settle_writes(writes: list[_Write], outcomes: list[BaseException | None]) -> None:
    for write, outcome in zip(writes, outcomes, strict=True):
        if outcome is None:
            _acknowledge(write)
        else:
            _refuse(write, outcome)


def _acknowledge(write: _Write) -> None:
    if write.on_commit is not None:
        try:
            write.on_commit()
        except Exception:
            log.exception("post-commit callback failed")
    future = write.future
    if future is not None and not future.done():
        future.set_result(write.returned)


def _refuse(write: _Write, exc: BaseException) -> None:
    if write.on_failure is not None:
        try:
            write.on_failure(exc)
        except Exception:
            log.exception("commit-failure callback failed")
    future = write.future
    if future is not None and not future.done():
        future.set_exception(exc)
        if write.on_failure is not None:
            future.exception()  # handled by ``on_failure``: no "never retrieved" log
