"""Group commit: concurrent writes share commits; nobody resumes before COMMIT."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from durable import Engine, step, workflow
from durable._journal import Journal, migrate
from durable._writer import _Connection, _Write, connect


@step
async def tiny(i: int) -> int:
    return i


@workflow(name="group.five")
async def five_steps() -> int:
    return sum([await tiny(i) for i in range(5)])


async def test_concurrent_runs_share_commits(engine: Engine) -> None:
    before = engine.stats()["commits"]
    runs = await asyncio.gather(*(engine.start(five_steps) for _ in range(200)))
    assert [await r.result(timeout=30) for r in runs] == [10] * 200
    writes = 200 * (1 + 5 + 1)  # started, five steps, completed
    commits = engine.stats()["commits"] - before
    assert commits < writes / 10, (commits, writes)


async def test_writer_counters_account_for_every_write_and_stay_within_the_wall_time(engine: Engine) -> None:
    await engine.execute("CREATE TABLE w (k INTEGER PRIMARY KEY)")
    before = engine.stats()
    began = time.perf_counter_ns()
    for k in range(50):  # each awaited alone: one write per commit
        await engine.execute("INSERT INTO w (k) VALUES (?)", (k,))
    runs = await asyncio.gather(*(engine.start(five_steps) for _ in range(100)))
    assert [await r.result(timeout=30) for r in runs] == [10] * 100
    elapsed = time.perf_counter_ns() - began
    after = engine.stats()
    assert after["writes"] - before["writes"] == 50 + 100 * (1 + 5 + 1)  # started, five steps, completed
    assert after["commits"] - before["commits"] >= 50
    busy = after["writer_busy_ns"] - before["writer_busy_ns"]
    waited = after["writer_wait_ns"] - before["writer_wait_ns"]
    assert 0 < busy < elapsed  # nanoseconds of one thread within the span
    assert 0 <= waited < elapsed  # one wait per batch, one batch after another


async def test_write_is_visible_to_other_connections_when_awaited(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    for k in range(50):
        await engine.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, f"v{k}"))
        # Committed before the await returned: a separate connection sees it at once.
        assert sql.execute("SELECT v FROM t WHERE k = ?", (k,)).fetchone() == (f"v{k}",)


async def test_one_failing_write_does_not_fail_its_batch_neighbours(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE u (k INTEGER PRIMARY KEY)")
    await engine.execute("INSERT INTO u (k) VALUES (1)")
    results = await asyncio.gather(
        engine.execute("INSERT INTO u (k) VALUES (2)"),
        engine.execute("INSERT INTO u (k) VALUES (1)"),  # duplicate key
        engine.execute("INSERT INTO u (k) VALUES (3)"),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert sql.execute("SELECT k FROM u ORDER BY k").fetchall() == [(1,), (2,), (3,)]


async def test_inserts_of_one_batch_land_in_submission_order(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE seqd (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL UNIQUE)")
    await engine.execute("INSERT INTO seqd (v) VALUES (-1)")
    # 300 inserts queued in one loop turn: the writer takes them in a few batches, each
    # a few multi-row statements (sizes that are powers of two); the duplicate fails alone.
    values = [*range(150), -1, *range(150, 299)]
    results = await asyncio.gather(
        *(engine.execute("INSERT INTO seqd (v) VALUES (?)", (v,)) for v in values), return_exceptions=True
    )
    assert [i for i, result in enumerate(results) if result is not None] == [150]
    assert isinstance(results[150], sqlite3.IntegrityError)
    assert [v for (v,) in sql.execute("SELECT v FROM seqd ORDER BY id")] == [-1, *range(299)]


async def test_execute_queues_at_the_call_so_the_calls_set_the_order(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE called (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)")
    first = engine.execute("INSERT INTO called (v) VALUES ('first')")
    second = engine.execute("INSERT INTO called (v) VALUES ('second')")
    await second  # awaited in the other order: the calls, not the awaits, set the order
    assert first.done()  # outcomes come in submission order
    await first
    assert sql.execute("SELECT id, v FROM called ORDER BY id").fetchall() == [(1, "first"), (2, "second")]


async def test_execute_returning_gives_each_write_its_rows(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    await engine.execute("INSERT INTO counters (name, n) VALUES ('a', 0)")
    bump = "UPDATE counters SET n = n + 1 WHERE name = ? RETURNING n"
    results = await asyncio.gather(
        engine.execute_returning(bump, ("a",)),
        engine.execute("INSERT INTO counters (name, n) VALUES ('a', 9)"),  # duplicate key: fails alone
        engine.execute_returning(bump, ("a",)),
        engine.execute_returning(bump, ("missing",)),
        engine.execute_returning("INSERT INTO counters (name, n) VALUES (?, 5) RETURNING name, n", ("b",)),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [results[0], results[2], results[3], results[4]] == [[(1,)], [(2,)], [], [("b", 5)]]
    assert sql.execute("SELECT name, n FROM counters ORDER BY name").fetchall() == [("a", 2), ("b", 5)]


async def test_locked_database_fails_writes_cleanly_and_recovers(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path) as engine:
        await engine.execute("CREATE TABLE w (k INTEGER PRIMARY KEY)")
        sql.execute("BEGIN EXCLUSIVE")  # another writer holds the lock: writes fail after busy_timeout
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await asyncio.wait_for(engine.execute("INSERT INTO w (k) VALUES (1)"), 10)
        finally:
            sql.execute("ROLLBACK")
        await engine.execute("INSERT INTO w (k) VALUES (2)")
        assert await engine.fetchall("SELECT k FROM w") == [(2,)]


async def test_the_writer_survives_an_error_that_is_not_sqlite3s(engine: Engine, sql: sqlite3.Connection) -> None:
    await engine.execute("CREATE TABLE big (k INTEGER)")
    with pytest.raises(OverflowError):
        await engine.execute("INSERT INTO big (k) VALUES (?)", (2**64,))  # sqlite3 cannot bind it
    await engine.execute("INSERT INTO big (k) VALUES (?)", (7,))
    assert sql.execute("SELECT k FROM big").fetchall() == [(7,)]


async def test_a_batch_larger_than_a_resolve_slice_acknowledges_every_write_in_order(
    engine: Engine, sql: sqlite3.Connection
) -> None:
    # The writer acknowledges a big batch in slices, letting other work run between
    # them: every write is still acknowledged, after its commit, in submission order.
    await engine.execute("CREATE TABLE b (k INTEGER PRIMARY KEY)")
    acknowledged: list[int] = []

    async def insert(k: int) -> None:
        await engine.execute("INSERT INTO b (k) VALUES (?)", (k,))
        assert sql.execute("SELECT 1 FROM b WHERE k = ?", (k,)).fetchone() == (1,)
        acknowledged.append(k)

    before = engine.stats()["commits"]
    await asyncio.gather(*(insert(k) for k in range(2000)))
    assert engine.stats()["commits"] - before <= 3  # one or two batches well over a slice
    assert acknowledged == list(range(2000))
    assert sql.execute("SELECT COUNT(*) FROM b").fetchone() == (2000,)


async def test_a_write_with_the_wrong_parameters_fails_alone_when_its_batch_is_grouped(
    engine: Engine, sql: sqlite3.Connection
) -> None:
    # Grouped into one multi-row INSERT, a row's values must never bind to another
    # row's placeholders: each of these fails, as it does when committed alone.
    await engine.execute("CREATE TABLE pairs (a, b)")
    insert = "INSERT INTO pairs (a, b) VALUES (?, ?)"
    wrong: list[Any] = [{"a": k, "b": k} for k in range(64)] + [(k,) if k % 2 else (k, k, k) for k in range(64)]
    results = await asyncio.gather(*(engine.execute(insert, params) for params in wrong), return_exceptions=True)
    assert all(isinstance(result, sqlite3.ProgrammingError) for result in results), results
    assert sql.execute("SELECT COUNT(*) FROM pairs").fetchone() == (0,)
    # Right ones grouped with a wrong one: they land, it fails.
    results = await asyncio.gather(
        *(engine.execute(insert, params) for params in [(1, 1), (2, 2), (3,), (4, 4)]), return_exceptions=True
    )
    assert [type(result).__name__ for result in results] == ["NoneType", "NoneType", "ProgrammingError", "NoneType"]
    assert sql.execute("SELECT a, b FROM pairs ORDER BY rowid").fetchall() == [(1, 1), (2, 2), (4, 4)]


async def test_a_values_row_that_ends_a_compound_select_is_not_merged(engine: Engine, sql: sqlite3.Connection) -> None:
    # Each write inserts the SELECT's row and its own: taken into one multi-row
    # INSERT, the SELECT's row would be inserted once for all of them.
    await engine.execute("CREATE TABLE source (x)")
    await engine.execute("INSERT INTO source (x) VALUES ('copied')")
    await engine.execute("CREATE TABLE target (a)")
    insert = "INSERT INTO target (a) SELECT x FROM source UNION ALL VALUES (?)"
    await asyncio.gather(*(engine.execute(insert, (k,)) for k in range(64)))
    assert sql.execute("SELECT COUNT(*) FROM target WHERE a = 'copied'").fetchone() == (64,)
    assert sql.execute("SELECT COUNT(*) FROM target WHERE a != 'copied'").fetchone() == (64,)


async def test_named_parameters_bind_by_name_in_every_statement_kind(engine: Engine, sql: sqlite3.Connection) -> None:
    # Numbered placeholders (?1) with a sequence are deprecated since Python 3.12 and
    # refused from 3.14; a statement that names a value twice takes a mapping instead.
    await engine.execute("CREATE TABLE named (a, b, twice)")
    insert = "INSERT INTO named (a, b, twice) VALUES (:a, :b, :a || :a)"
    # Queued one after another, identical: grouped in one executemany, by name.
    await asyncio.gather(*(engine.execute(insert, {"b": k, "a": f"x{k}"}) for k in range(3)))
    rows = await engine.execute_returning("UPDATE named SET b = b + :by WHERE a = :a RETURNING a, b", {"a": "x1", "by": 10})
    assert rows == [("x1", 11)]
    assert await engine.fetchall("SELECT a, b, twice FROM named WHERE b >= :least ORDER BY b", {"least": 1}) == [
        ("x2", 2, "x2x2"),
        ("x1", 11, "x1x1"),
    ]
    assert sql.execute("SELECT COUNT(*) FROM named").fetchone() == (3,)


def test_one_write_of_many_rows_commits_within_the_connections_parameter_limit(tmp_path: Path) -> None:
    # A build of SQLite may take fewer parameters per statement than the default (999
    # was the default before 3.32): 300 rows of 11 columns, grouped into one multi-row
    # INSERT of 256, would exceed it and the write would fail; the writer sizes its
    # statements to the connection's limit instead.
    conn = connect(tmp_path / "limit.db", "FULL")
    try:
        migrate(conn, tmp_path / "limit.db")
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        rows = [Journal.step_completed("wrun_limit", seq, "limit.step", b"1", 1, 0.0, 0.0, False) for seq in range(300)]
        assert _Connection(conn).commit_batch([_Write(rows, None)]) == [None]
        stored = conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM ops WHERE run_id = 'wrun_limit'").fetchone()
        assert stored == (300, 0, 299)
    finally:
        conn.close()


async def test_a_barrier_resolves_once_every_earlier_write_has_its_outcome(tmp_path: Path) -> None:
    # What cancel() waits on: writes nothing awaits (a step's result) are settled,
    # committed or refused, before a barrier queued after them resolves.
    journal = Journal(tmp_path / "barrier.db")
    await journal.open()
    try:
        assert journal.barrier().done()  # nothing queued: no wait at all
        await journal.commit([("CREATE TABLE b (k INTEGER PRIMARY KEY)", ())])
        settled: list[str] = []

        def failed(exc: BaseException) -> None:
            settled.append("failed")

        insert = "INSERT INTO b (k) VALUES (?)"
        for k in range(600):  # more than a resolve slice: acknowledged over several loop steps
            journal.commit_then([(insert, (k,))], functools.partial(settled.append, f"+{k}"), failed)
        journal.commit_then([(insert, (0,))], functools.partial(settled.append, "dup"), failed)  # refused: k=0 exists
        barrier = journal.barrier()
        journal.commit_then([(insert, (600,))], functools.partial(settled.append, "after"), failed)
        assert not barrier.done()
        await barrier
        assert settled[:601] == [f"+{k}" for k in range(600)] + ["failed"]
        await journal.barrier()
        assert settled[601:] == ["after"]
        assert journal.barrier().done()  # all settled again
    finally:
        await journal.close()


async def test_a_barrier_still_waiting_when_the_journal_closes_resolves_after_every_earlier_write(tmp_path: Path) -> None:
    # close() commits and acknowledges what was submitted: a cancel waiting on its
    # barrier meanwhile is released after those results, never left hanging.
    journal = Journal(tmp_path / "barrier_close.db")
    await journal.open()
    await journal.commit([("CREATE TABLE c (k INTEGER PRIMARY KEY)", ())])
    settled: list[int] = []

    def failed(exc: BaseException) -> None:
        raise AssertionError(f"write refused: {exc!r}")

    for k in range(300):
        journal.commit_then([("INSERT INTO c (k) VALUES (?)", (k,))], functools.partial(settled.append, k), failed)
    barrier = journal.barrier()
    await journal.close()
    assert barrier.done() and barrier.result() is None
    assert settled == list(range(300))
