"""The journal's schema: an ordered list of migrations, applied at open, and the SQLite it needs."""

from __future__ import annotations

import sqlite3

# The oldest SQLite the journal's statements run on: a fork numbers the chunks it
# copies with a window function (ROW_NUMBER, from 3.25), and resuming a cancelled
# run binds one parameter per run cancelled with it, which may be thousands (a
# statement takes 32,766 by default from 3.32, 999 before).
MIN_SQLITE = (3, 32, 0)


def check_sqlite(version: tuple[int, int, int]) -> None:
    """Refuse an SQLite older than ``MIN_SQLITE`` at open, rather than at the first statement it cannot run."""
    if version < MIN_SQLITE:
        raise sqlite3.NotSupportedError(
            f"durable needs SQLite {dotted(MIN_SQLITE)} or later (window functions, 32,766 parameters per statement);"
            f" this Python's sqlite3 module uses SQLite {dotted(version)}: run it with a Python built against a newer SQLite"
        )


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


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
    # Errors keep their type, message and traceback (runs.error_info as JSON, attempts.stack);
    # a step result the body no longer awaited (it cancelled the future, as
    # asyncio.wait_for does on timeout) is marked, so replay does not hand it over.
    """
    ALTER TABLE runs ADD COLUMN error_info BLOB;
    ALTER TABLE attempts ADD COLUMN stack TEXT;
    ALTER TABLE ops ADD COLUMN abandoned INTEGER NOT NULL DEFAULT 0;
    """,
    # How a run was started. A child knows its parent; a deadline is journaled
    # with the timeout it came from (for the error that says it passed); a queued run
    # keeps its place across restarts through (priority, queue_seq).
    """
    ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
    ALTER TABLE runs ADD COLUMN deadline REAL;
    ALTER TABLE runs ADD COLUMN timeout TEXT;
    ALTER TABLE runs ADD COLUMN queue TEXT;
    ALTER TABLE runs ADD COLUMN queue_key TEXT;
    ALTER TABLE runs ADD COLUMN priority INTEGER;
    ALTER TABLE runs ADD COLUMN queue_seq INTEGER;
    CREATE INDEX runs_children ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
    CREATE INDEX runs_queue_seq ON runs (queue_seq) WHERE queue_seq IS NOT NULL;
    """,
    # Hooks (create_hook / create_webhook): a token is unique among active hooks, and
    # every hook of a run is released in the transaction that gives the run its final
    # status, whichever code path commits it. Payloads are numbered per hook in arrival
    # order; ``consumed_seq`` is the receive operation of the workflow that got one.
    """
    CREATE TABLE hooks (
        run_id       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        token        TEXT NOT NULL,
        kind         TEXT NOT NULL,
        metadata     BLOB NOT NULL,
        respond_with BLOB,
        created_at   REAL NOT NULL,
        released_at  REAL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX hooks_active_token ON hooks (token) WHERE released_at IS NULL;
    CREATE INDEX hooks_active_by_run ON hooks (run_id) WHERE released_at IS NULL;
    CREATE INDEX hooks_by_token ON hooks (token, created_at);

    CREATE TABLE hook_payloads (
        run_id          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        idx             INTEGER NOT NULL,
        payload         BLOB NOT NULL,
        idempotency_key TEXT,
        received_at     REAL NOT NULL,
        consumed_seq    INTEGER,
        consumed_at     REAL,
        PRIMARY KEY (run_id, seq, idx)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX hook_payloads_key ON hook_payloads (run_id, seq, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE UNIQUE INDEX hook_payloads_consumed ON hook_payloads (run_id, consumed_seq)
        WHERE consumed_seq IS NOT NULL;

    CREATE TRIGGER hooks_released_with_run AFTER UPDATE OF status ON runs
        WHEN NEW.status IN ('completed', 'failed', 'cancelled')
    BEGIN
        UPDATE hooks SET released_at = COALESCE(NEW.completed_at, (julianday('now') - 2440587.5) * 86400.0)
            WHERE run_id = NEW.run_id AND released_at IS NULL;
    END;

    -- A payload racing its hook's release is refused, never stored for a released hook.
    CREATE TRIGGER hook_payloads_need_active_hook BEFORE INSERT ON hook_payloads
        WHEN NOT EXISTS (SELECT 1 FROM hooks WHERE run_id = NEW.run_id AND seq = NEW.seq AND released_at IS NULL)
    BEGIN
        SELECT RAISE(ABORT, 'durable: hook released');
    END;
    """,
    # Inspecting and operating runs: a fork records the run and the sequence
    # number it was copied from; the run list filters by workflow, newest first.
    """
    ALTER TABLE runs ADD COLUMN forked_from TEXT;
    ALTER TABLE runs ADD COLUMN forked_at_seq INTEGER;
    CREATE INDEX runs_by_workflow_created ON runs (workflow_name, created_at);
    """,
]
