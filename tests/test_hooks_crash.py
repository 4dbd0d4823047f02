"""A hook raced against a sleep, SIGKILLed after the race, replays with the same winner."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import hook_workflows as hw
import pytest
from harness import kill_child, read_line, spawn_child, until

from durable import Engine, RunStatus

pytestmark = pytest.mark.slow


def _count(db: Path, sql: str, *params: object) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


def _hook_active(db: Path, token: str) -> bool:
    return _count(db, "SELECT COUNT(*) FROM hooks WHERE token = ? AND released_at IS NULL", token) == 1


async def _start(db: Path, nap: str) -> tuple[asyncio.subprocess.Process, str, int]:
    proc = await spawn_child("hook_child.py", str(db), nap)
    word, run_id, port = (await read_line(proc)).split()
    assert word == "started"
    return proc, run_id, int(port)


async def _resume(port: int, token: str, payload: str) -> None:
    """Over HTTP, through the child's durable.web: the child's engine owns the file."""
    url = f"http://127.0.0.1:{port}/wf/hooks/{token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()


async def _restart_and_finish(db: Path, run_id: str) -> list[object]:
    engine = Engine(db, workflows=[hw.race])
    engine.resources = engine
    async with engine:
        await until(lambda: _hook_active(db, "race:finish"), what="the replay to reach the finish hook")
        assert await engine.get_run(run_id).status() is RunStatus.RUNNING
        await engine.resume_hook("race:finish", "done")
        result: list[object] = await engine.get_run(run_id).result(timeout=30)
        return result


async def test_hook_that_won_the_race_wins_again_after_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "race-hook.db"
    proc, run_id, port = await _start(db, "60")
    await until(lambda: _hook_active(db, "race"), what="the race hook")
    await _resume(port, "race", "1")  # long before the 60 s sleep ends
    await until(lambda: _hook_active(db, "race:finish"), what="the winner's step")
    await kill_child(proc)

    assert await _restart_and_finish(db, run_id) == ["hook:1", "done"]
    # The winner's step ran once, before the kill: the replay took the same branch.
    assert _count(db, "SELECT COUNT(*) FROM executions") == 1
    assert _count(db, "SELECT COUNT(*) FROM executions WHERE name = 'hook_won'") == 1


async def test_sleep_that_won_the_race_wins_again_after_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "race-sleep.db"
    proc, run_id, port = await _start(db, "0.2")
    await until(lambda: _count(db, "SELECT COUNT(*) FROM executions WHERE name = 'sleep_won'") == 1, what="the sleep to win")
    # The receive that lost is still pending: it takes this payload, after the sleep's end.
    await _resume(port, "race", "2")
    await until(lambda: _hook_active(db, "race:finish"), what="the late payload")
    await kill_child(proc)

    # On replay both outcomes are recorded; they reach the body in the order they
    # completed, so the sleep wins again and the late payload stays the loser's.
    assert await _restart_and_finish(db, run_id) == ["sleep", 2, "done"]
    assert _count(db, "SELECT COUNT(*) FROM executions") == 1
