"""``python -m durable``: real journals made through the public API, with and without a server holding them."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from harness import ROOT, TESTS, ServerFactory, ServerProcess, client_session, until
from inspect_workflows import WORKFLOWS, lift, pipeline, retrying, reviewed, sleeper

from durable import AttemptInfo, Engine, OperationInfo, RunInfo, RunStatus

pytestmark = pytest.mark.timeout(120)

ZONE = "Asia/Kolkata"  # +05:30 all year: local times differ from UTC by a fixed, odd offset


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        return orjson.loads(self.out)


async def cli(*args: str) -> Result:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", "TZ": ZONE}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def local(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    value = moment.astimezone(ZoneInfo(ZONE))
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def ms(attempt: AttemptInfo) -> str:
    """A sub-second duration as the CLI humanizes it."""
    return f"{round((attempt.ended_at - attempt.started_at).total_seconds() * 1000)} ms"


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@dataclass
class Journal:
    db: Path
    gate: str
    failed: RunInfo
    completed: RunInfo
    sleeping: RunInfo  # left running: the engine closed while it slept
    completed_timeline: list[OperationInfo]


@pytest.fixture
async def journal(tmp_path: Path) -> Journal:
    db, gate = tmp_path / "journal.db", str(tmp_path / "gate")
    (tmp_path / "gate").touch()
    async with Engine(db, workflows=WORKFLOWS) as engine:
        failed = await engine.start(pipeline, gate, 2)
        with pytest.raises(Exception, match="card declined"):
            await failed.result(timeout=10)
        completed = await engine.start(retrying, gate)
        assert await completed.result(timeout=10) == "ok after 3"
        sleeping = await engine.start(sleeper, gate, "1h")

        async def asleep() -> bool:
            return [op.kind for op in await sleeping.timeline()] == ["step", "sleep"]

        await until(asleep, what="the sleeper to sleep")
        infos = [await run.describe() for run in (failed, completed, sleeping)]
        timeline = await completed.timeline()
    return Journal(db, gate, infos[0], infos[1], infos[2], timeline)


def status_of(db: Path, run_id: str) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])


# -- reading ------------------------------------------------------------------------------


async def test_inspect_runs_json_prints_exact_fields(journal: Journal) -> None:
    result = await cli("--db", str(journal.db), "inspect", "runs", "--json")
    assert (result.code, result.err) == (0, "")
    assert result.json() == [
        {
            "run_id": info.run_id,
            "workflow_name": info.workflow_name,
            "status": info.status.value,
            "created_at": iso(info.created_at),
            "started_at": iso(info.started_at),
            "completed_at": iso(info.completed_at),
            "error": info.error,
        }
        for info in (journal.sleeping, journal.completed, journal.failed)
    ]
    assert journal.failed.error == "StepFailed: Step inspect.guarded failed: FatalError: card declined"
    assert journal.sleeping.completed_at is None


async def test_inspect_runs_filters_and_pages(journal: Journal) -> None:
    db = str(journal.db)
    failed = await cli("--db", db, "inspect", "runs", "--status", "failed", "--json")
    assert [row["run_id"] for row in failed.json()] == [journal.failed.run_id]
    by_name = await cli("inspect", "runs", "--db", db, "--workflow", "inspect.retrying", "--json")
    assert [row["run_id"] for row in by_name.json()] == [journal.completed.run_id]
    first = await cli("--db", db, "inspect", "runs", "--limit", "2", "--json")
    assert [row["run_id"] for row in first.json()] == [journal.sleeping.run_id, journal.completed.run_id]
    cursor = first.err.removeprefix("more runs: add --after ").strip()
    rest = await cli("--db", db, "inspect", "runs", "--limit", "2", "--after", cursor, "--json")
    assert ([row["run_id"] for row in rest.json()], rest.err) == ([journal.failed.run_id], "")


async def test_inspect_runs_table_in_local_time(journal: Journal) -> None:
    result = await cli("--db", str(journal.db), "inspect", "runs")
    assert result.code == 0
    header, *rows = result.lines
    assert cells(header) == ["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION", "ERROR"]
    assert [cells(row)[:4] for row in rows] == [
        [info.run_id, info.workflow_name, info.status.value, local(info.created_at)]
        for info in (journal.sleeping, journal.completed, journal.failed)
    ]
    assert cells(rows[0])[4] == "-"  # still running: no duration yet
    assert cells(rows[2])[5] == "StepFailed: Step inspect.guarded failed: FatalError: card d…"
    utc = await cli("--db", str(journal.db), "inspect", "runs", "--utc")
    assert cells(utc.lines[1])[3] == journal.sleeping.created_at.strftime("%Y-%m-%d %H:%M:%S.") + (
        f"{journal.sleeping.created_at.microsecond // 1000:03d}Z"
    )


async def test_inspect_run_shows_input_outcome_and_every_attempt(journal: Journal) -> None:
    info = journal.completed
    result = await cli("--db", str(journal.db), "inspect", "run", info.run_id)
    assert (result.code, result.err) == (0, "")
    lines = result.lines
    assert lines[:8] == [
        f"Run:        {info.run_id}",
        "Workflow:   inspect.retrying",
        "Status:     completed",
        f'Input:      [["{journal.gate}"],{{}}]',
        f"Created:    {local(info.created_at)}",
        f"Started:    {local(info.started_at)}",
        f"Completed:  {local(info.completed_at)}",
        lines[7],
    ]
    assert lines[7].startswith("Duration:   ") and lines[7].endswith(" ms")
    assert lines[8:11] == ['Output:     "ok after 3"', "", "Timeline (3 operations)"]
    assert cells(lines[11]) == ["SEQ", "KIND", "NAME", "STATUS", "ATTEMPT", "STARTED", "DURATION", "ERROR"]
    flaky, nap, record = journal.completed_timeline
    tries = flaky.attempts
    assert [cells(line) for line in lines[12:]] == [
        [
            "0",
            "step",
            "inspect.flaky",
            "completed",
            "1",
            local(tries[0].started_at),
            ms(tries[0]),
            "RetryableError: try 1 failed",
        ],
        ["2", local(tries[1].started_at), ms(tries[1]), "RetryableError: try 2 failed"],
        ["3", local(tries[2].started_at), ms(tries[2])],
        ["1", "sleep", "10ms", "completed", "-", local(nap.started_at), "10 ms", f"until {local(nap.wake_at)}"],
        ["2", "step", "inspect.record", "completed", "1", local(record.started_at), ms(record.attempts[0])],
    ]


async def test_inspect_run_of_a_failed_run_and_its_json(journal: Journal) -> None:
    info = journal.failed
    result = await cli("--db", str(journal.db), "inspect", "run", info.run_id, "--utc")
    assert result.code == 0
    error_at = result.lines.index("Error:      StepFailed: Step inspect.guarded failed: FatalError: card declined")
    stack = result.lines[error_at + 1 : result.lines.index("Timeline (3 operations)") - 1]
    # The traceback the journal kept: the workflow's, then its step's.
    assert stack[0] == "    Traceback (most recent call last):"
    assert "    durable._errors.StepFailed: Step inspect.guarded failed: FatalError: card declined" in stack
    assert stack[-1] == "    durable._errors.FatalError: card declined"
    failed_row = next(cells(line) for line in result.lines if line.startswith("4 "))
    assert failed_row[:5] == ["4", "step", "inspect.guarded", "failed", "1"]
    assert failed_row[-1] == "FatalError: card declined"
    assert result.lines[-3:] == ["Streams", "NAMESPACE  CHUNKS", "(default)  2"]
    data = (await cli("--db", str(journal.db), "inspect", "run", info.run_id, "--json")).json()
    assert (data["status"], data["args"], data["kwargs"], data["output"]) == ("failed", [journal.gate, 2], {}, None)
    assert data["error_stack"].endswith("durable._errors.FatalError: card declined\n")
    assert [(op["seq"], op["kind"], op["status"], [a["error"] for a in op["attempts"]]) for op in data["timeline"]] == [
        (0, "step", "completed", [None]),
        (2, "step", "completed", [None]),
        (4, "step", "failed", ["FatalError: card declined"]),
    ]
    assert data["streams"] == [{"namespace": "", "length": 2, "closed": False}]
    assert data["hooks"] == []


async def test_inspect_streams_and_hooks(journal: Journal) -> None:
    db, run_id = str(journal.db), journal.failed.run_id
    result = await cli("--db", db, "inspect", "streams", run_id, "--json")
    assert result.code == 0
    chunks = [orjson.loads(line) for line in result.lines]
    assert [(c["namespace"], c["index"], c["value"]) for c in chunks] == [("", 0, {"step": 0}), ("", 1, {"step": 1})]
    tail = await cli("--db", db, "inspect", "streams", run_id, "--from", "1", "--follow")
    assert (tail.code, len(tail.lines), tail.lines[0].startswith("1  "), tail.lines[0].endswith('  {"step":1}')) == (
        0,
        1,
        True,
        True,
    )
    hooks = await cli("--db", db, "inspect", "hooks")
    assert (hooks.code, hooks.out) == (0, "No hooks.\n")
    assert (await cli("--db", db, "inspect", "hooks", "--run", run_id, "--json")).json() == []


async def test_exit_codes(journal: Journal, tmp_path: Path) -> None:
    db = str(journal.db)
    unknown = await cli("--db", db, "inspect", "run", "wrun_nope")
    assert (unknown.code, unknown.out, unknown.err) == (1, "", "durable: Workflow run wrun_nope not found\n")
    missing = await cli("--db", str(tmp_path / "none.db"), "inspect", "runs")
    assert (missing.code, missing.err) == (1, f"durable: {tmp_path / 'none.db'}: no such database file\n")
    assert not (tmp_path / "none.db").exists()
    for usage in (
        ("inspect", "runs"),  # no --db
        ("--db", db, "inspect", "runs", "--status", "sleepy"),
        ("--db", db, "inspect", "runs", "--limit", "0"),
        ("--db", db, "fork", journal.failed.run_id),  # no --from-step
        ("--db", db, "explode"),
    ):
        result = await cli(*usage)
        assert (result.code, result.out) == (2, ""), usage
        assert "usage: python -m durable" in result.err


# -- changing, without a server ----------------------------------------------------------------


async def test_cancel_without_a_server_opens_the_journal_itself(journal: Journal) -> None:
    db = str(journal.db)
    sleeping, done = journal.sleeping.run_id, journal.completed.run_id
    result = await cli("--db", db, "cancel", sleeping, done, "wrun_nope")
    assert result.code == 1  # one of them was refused
    assert result.lines == [f"{sleeping}: cancelled (was running)"]
    assert result.err.splitlines() == [
        f"{done}: Cannot cancel workflow run {done} with status completed",
        "wrun_nope: Workflow run wrun_nope not found",
    ]
    assert status_of(journal.db, sleeping) == "cancelled"
    again = await cli("--db", db, "cancel", sleeping, "--json")
    assert (again.code, again.json()) == (
        0,
        [{"action": "cancel", "run_id": sleeping, "previous_status": "cancelled", "status": "cancelled"}],
    )


async def test_resume_and_fork_without_a_server_need_the_workflows(journal: Journal) -> None:
    db, run_id = str(journal.db), journal.failed.run_id
    refused = await cli("--db", db, "resume", run_id)
    assert refused.code == 1
    assert refused.err == (
        f"{run_id}: Cannot continue workflow run {run_id}: its workflow 'inspect.pipeline' is not registered in this "
        "engine: continue it in a process that registers it (Engine(path, workflows=[...]), or the server that runs it)\n"
    )
    lift(journal.gate)
    resumed = await cli("--db", db, "resume", run_id, "--import", "inspect_workflows")
    assert (resumed.code, resumed.lines) == (0, [f"{run_id}: resumed (was failed), then ended completed"])
    fork = await cli("--db", db, "fork", run_id, "--from-step", "2", "--import", "inspect_workflows", "--json")
    assert fork.code == 0
    data = fork.json()
    assert (data["action"], data["forked_from"], data["forked_at_seq"], data["ended"]) == ("fork", run_id, 2, "completed")
    shown = (await cli("--db", db, "inspect", "run", data["run_id"])).lines
    assert f"Forked from:  {run_id} at step 2" in shown
    assert 'Output:       {"total":10,"receipt":"charged"}' in shown


# -- a server holds the file ----------------------------------------------------------------------


@pytest.fixture
async def server(make_server: ServerFactory) -> ServerProcess:
    """A started server.py with a token; conftest stops it (SIGTERM, exit 0) at the end."""
    srv = make_server("--token", "s3cret")
    await srv.start()
    return srv


async def start_batch(server: ServerProcess, total: int = 50, delay: str = "1s") -> str:
    async with client_session() as http:
        response = await http.post(
            f"{server.base}/api/start",
            json={"accountId": "acct_cli", "total": total, "delay": delay},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["runId"])


async def test_reading_works_and_changes_go_through_the_server(server: ServerProcess) -> None:
    db = str(server.db)
    run_id = await start_batch(server)
    await until(lambda: status_of(server.db, run_id) == "running", what="the batch to start")

    listed = await cli("--db", db, "inspect", "runs", "--json")
    assert (listed.code, [(r["run_id"], r["workflow_name"], r["status"]) for r in listed.json()]) == (
        0,
        [(run_id, "invoices.batch", "running")],
    )

    refused = await cli("--db", db, "cancel", run_id)
    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        f"durable: {db} is held by process {server.pid} (a running server): "
        "pass --url http://host:port/workflows to send the command to it\n"
    )
    assert status_of(server.db, run_id) == "running"

    url = f"{server.base}/workflows"
    no_token = await cli("--db", db, "cancel", run_id, "--url", url)
    assert no_token.code == 1
    assert no_token.err.startswith(f"{run_id}: Missing or wrong token")
    cancelled = await cli("--db", db, "cancel", run_id, "--url", url, "--token", "s3cret")
    assert (cancelled.code, cancelled.lines) == (0, [f"{run_id}: cancelled (was running)"])
    assert status_of(server.db, run_id) == "cancelled"

    resumed = await cli("--db", db, "resume", run_id, "--url", url, "--token", "s3cret", "--json")
    assert (resumed.code, resumed.json()) == (
        0,
        {"action": "resume", "run_id": run_id, "previous_status": "cancelled", "status": "running"},
    )
    done = await cli("--db", db, "cancel", run_id, "--url", url, "--token", "s3cret")
    assert (done.code, done.lines) == (0, [f"{run_id}: cancelled (was running)"])
    assert RunStatus(status_of(server.db, run_id)) is RunStatus.CANCELLED


async def test_inspect_hooks_lists_the_hooks_runs_wait_on(tmp_path: Path) -> None:
    db, gate = tmp_path / "hooks.db", str(tmp_path / "gate")
    async with Engine(db, workflows=WORKFLOWS) as engine:
        run = await engine.start(reviewed, gate, "d1")

        async def hooked() -> bool:
            return len(await engine.list_hooks(run.run_id)) == 1

        await until(hooked, what="the hook")
        created = iso((await engine.get_hook_by_token("review:d1")).created_at)
    assert created is not None
    listed = await cli("--db", str(db), "inspect", "hooks", "--json")
    assert listed.json() == [
        {
            "run_id": run.run_id,
            "seq": 1,
            "token": "review:d1",
            "kind": "hook",
            "metadata": {"doc": "d1"},
            "respond_with": None,
            "created_at": created,
            "released_at": None,
        }
    ]
    table = await cli("--db", str(db), "inspect", "hooks", "--run", run.run_id, "--utc")
    assert [cells(line) for line in table.lines] == [
        ["TOKEN", "RUN", "KIND", "CREATED", "METADATA"],
        ["review:d1", run.run_id, "hook", created.replace("T", " "), '{"doc":"d1"}'],
    ]


async def test_follow_a_stream_the_server_is_writing(server: ServerProcess) -> None:
    run_id = await start_batch(server, total=4, delay="200ms")
    followed = await cli("--db", str(server.db), "inspect", "streams", run_id, "--follow", "--json")
    assert followed.code == 0
    chunks = [orjson.loads(line) for line in followed.lines]
    assert [chunk["index"] for chunk in chunks] == [0, 1, 2, 3, 4]
    assert [(chunk["value"]["type"], chunk["value"]["current"]) for chunk in chunks] == [
        ("progress", 1),
        ("progress", 2),
        ("progress", 3),
        ("progress", 4),
        ("complete", 4),
    ]
    assert status_of(server.db, run_id) == "completed"
