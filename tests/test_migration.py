"""A journal written by the previous release (schema version 2) opens, migrates and replays."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import orjson

from durable import Engine, RunFailed, get_writable, sleep, step, workflow
from durable._schema import MIGRATIONS

RELEASED_VERSION = 2  # what the release before typed values, stacks and replay order wrote


@step
async def double(n: int) -> dict[str, int]:
    raise AssertionError("journaled before the upgrade: replay must not run it")


@step
async def add(a: int, b: int) -> int:
    return a + b


@workflow(name="migration.sum")
async def sum_wf(n: int) -> dict[str, int]:
    first = await double(n)
    await sleep("1s")
    await get_writable().write({"type": "progress", "at": "replayed, not stored again"})
    total = await add(first["value"], 1)
    return {"total": total}


@workflow(name="migration.failed")
async def failed_wf() -> None:
    return None


def _write_release_journal(db: Path) -> tuple[str, str]:
    """Rows exactly as the previous release wrote them: plain orjson JSON everywhere."""
    conn = sqlite3.connect(db, isolation_level=None)
    for target, script in enumerate(MIGRATIONS[:RELEASED_VERSION], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={target};\nCOMMIT;")
    now = time.time()
    conn.execute(
        "INSERT INTO runs (run_id, workflow_name, input, status, created_at, started_at) VALUES (?, ?, ?, 'running', ?, ?)",
        ("wrun_OLD", "migration.sum", orjson.dumps([[20], {}]), now - 5, now - 5),
    )
    conn.execute(
        "INSERT INTO ops (run_id, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at)"
        " VALUES ('wrun_OLD', 0, 'step', 'test_migration.double', 'completed', ?, 1, ?, ?, NULL)",
        (orjson.dumps({"value": 40}), now - 4, now - 4),
    )
    conn.execute(
        "INSERT INTO ops (run_id, seq, kind, name, state, result, attempt, started_at, completed_at, wake_at)"
        " VALUES ('wrun_OLD', 1, 'sleep', '1s', 'waiting', NULL, NULL, ?, NULL, ?)",
        (now - 4, now - 3),
    )
    conn.execute(
        "INSERT INTO chunks (run_id, namespace, idx, seq, part, data, written_at) VALUES ('wrun_OLD', '', 0, 2, -1, ?, ?)",
        (orjson.dumps({"type": "progress", "at": "2026-01-01T00:00:00.000Z"}), now - 4),
    )
    conn.execute(
        "INSERT INTO runs (run_id, workflow_name, input, status, created_at, started_at, completed_at, error)"
        " VALUES ('wrun_FAILED', 'migration.failed', ?, 'failed', ?, ?, ?, 'ValueError: boom')",
        (orjson.dumps([[], {}]), now - 9, now - 9, now - 8),
    )
    conn.close()
    return "wrun_OLD", "wrun_FAILED"


async def test_a_release_journal_migrates_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "release.db"
    run_id, failed_id = _write_release_journal(db)
    async with Engine(db, workflows=[sum_wf, failed_wf]) as engine:
        run = engine.get_run(run_id)
        assert await run.result(timeout=10) == {"total": 41}
        assert [chunk async for chunk in run.readable()] == [{"type": "progress", "at": "2026-01-01T00:00:00.000Z"}]
        try:
            await engine.get_run(failed_id).result(timeout=10)
        except RunFailed as exc:
            assert (exc.error, exc.error_type, exc.message, exc.stack) == ("ValueError: boom", "ValueError", "boom", "")
        else:
            raise AssertionError("the failed run must raise RunFailed")
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
