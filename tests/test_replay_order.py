"""Replay hands recorded results over in the order they completed live: races keep their winner."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import orjson
import pytest
import race_workflows
from harness import kill_child, read_line, spawn_child, until

from durable import Engine

EXPECTED = {"wait_first": "fast", "as_completed": "fast", "sleep_vs_step": "sleep", "wait_for": "timeout"}


def _parked(db: Path, run_id: str) -> bool:
    """The winner is written and the run sleeps in its parking sleep, with every step journaled."""
    with closing(sqlite3.connect(db)) as conn:
        chunk = conn.execute("SELECT COUNT(*) FROM chunks WHERE run_id = ?", (run_id,)).fetchone()[0]
        parked = conn.execute(
            "SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'sleep' AND name = ?", (run_id, str(race_workflows.PARK_S))
        ).fetchone()[0]
        return bool(chunk == 1 and parked == 1)


@pytest.mark.slow
@pytest.mark.parametrize("race", sorted(EXPECTED))
async def test_race_keeps_its_winner_after_sigkill_and_restart(tmp_path: Path, race: str) -> None:
    db = tmp_path / "race.db"
    proc = await spawn_child("race_child.py", str(db), race)
    word, _, run_id = (await read_line(proc)).partition(" ")
    assert word == "started"
    try:
        await until(lambda: _parked(db, run_id), timeout=30, what="the race to be decided and journaled")
    finally:
        await kill_child(proc)
    with closing(sqlite3.connect(db)) as conn:
        (data,) = conn.execute("SELECT data FROM chunks WHERE run_id = ?", (run_id,)).fetchone()
    assert orjson.loads(data) == {"winner": EXPECTED[race]}  # live

    async with Engine(db, workflows=list(race_workflows.RACES.values())) as engine:
        assert await engine.get_run(run_id).result(timeout=30) == EXPECTED[race]  # replayed
