"""SIGKILL at a random moment in a 200-step workflow: every effect once, no journaled step re-run."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import crash_workflows as cw
import pytest
from harness import kill_child, spawn_crash_child, until

from durable import Engine

STEPS = 200


@pytest.mark.parametrize("trial", range(3))
async def test_sigkill_mid_run_then_recover(tmp_path: Path, trial: int) -> None:
    db = tmp_path / f"crash-{trial}.db"
    proc, run_id = await spawn_crash_child(db, "steps", str(STEPS))
    # Kill once a random number of steps has executed, so the kill lands inside the run.
    target = random.randint(1, STEPS - 20)
    watch = sqlite3.connect(db)
    try:
        await until(lambda: watch.execute("SELECT COUNT(*) FROM executions").fetchone()[0] >= target, what="steps to run")
    finally:
        watch.close()
    await kill_child(proc)

    conn = sqlite3.connect(db)
    journaled = {f"{run_id}:{seq}" for (seq,) in conn.execute("SELECT seq FROM ops WHERE run_id = ?", (run_id,))}
    before = dict(conn.execute("SELECT step_id, COUNT(*) FROM executions GROUP BY step_id").fetchall())
    conn.close()

    async with Engine(db) as engine:
        cw.ENGINE["engine"] = engine
        assert await engine.get_run(run_id).result(timeout=60) == sum(2 * n for n in range(STEPS))

    conn = sqlite3.connect(db)
    effects = conn.execute("SELECT step_id, n FROM effects ORDER BY n").fetchall()
    executions = dict(conn.execute("SELECT step_id, COUNT(*) FROM executions GROUP BY step_id").fetchall())
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    # Every side effect exactly once, in step order, keyed by the stable step_id.
    assert [n for _, n in effects] == list(range(STEPS))
    assert [sid for sid, _ in effects] == [f"{run_id}:{n}" for n in range(STEPS)]
    # No step whose result was journaled before the kill ran again after it.
    for step_id in journaled:
        assert executions[step_id] == before[step_id] == 1
    # At most the step in flight at the kill ran twice.
    assert sum(1 for c in executions.values() if c > 1) <= 1
    assert target - 1 <= len(journaled) < STEPS


async def test_sigkill_while_a_child_runs_then_the_parent_replays_the_same_child(tmp_path: Path) -> None:
    db = tmp_path / "family.db"
    proc, parent_id = await spawn_crash_child(db, "family", str(STEPS))
    target = random.randint(1, STEPS - 20)
    watch = sqlite3.connect(db)
    try:
        await until(lambda: watch.execute("SELECT COUNT(*) FROM executions").fetchone()[0] >= target, what="child steps to run")
    finally:
        watch.close()
    await kill_child(proc)

    child_id = f"{parent_id}~0"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT kind, name, state FROM ops WHERE run_id = ?", (parent_id,)).fetchall() == [
        ("child", "crash.steps", "started")
    ]
    conn.close()

    async with Engine(db) as engine:
        cw.ENGINE["engine"] = engine
        result = await engine.get_run(parent_id).result(timeout=60)
    assert result == {"child": child_id, "total": sum(2 * n for n in range(STEPS))}

    conn = sqlite3.connect(db)
    # One child, ever: the replay found the journaled one instead of starting another.
    assert conn.execute("SELECT run_id, status FROM runs WHERE parent_run_id = ?", (parent_id,)).fetchall() == [
        (child_id, "completed")
    ]
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)
    assert conn.execute("SELECT kind, state FROM ops WHERE run_id = ?", (parent_id,)).fetchall() == [("child", "completed")]
    effects = conn.execute("SELECT step_id, n FROM effects ORDER BY n").fetchall()
    conn.close()
    assert [sid for sid, _ in effects] == [f"{child_id}:{n}" for n in range(STEPS)]
