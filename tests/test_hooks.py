"""Hooks: tokens, payload delivery exactly once in arrival order, timeouts, release, replay."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import before_the_timer, until

from durable import (
    Engine,
    HookConflict,
    HookInfo,
    HookNotFound,
    HookTimeout,
    RunCancelled,
    RunStatus,
    create_hook,
    define_hook,
    get_writable,
    sleep,
    step,
    workflow,
)

gates: dict[str, asyncio.Event] = {}
executions: list[str] = []


def make_unfinished(path: Path, run_id: str) -> None:
    """What a crash before the run's end leaves: the run still running, its hooks active again."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE runs SET status = 'running', completed_at = NULL, output = NULL WHERE run_id = ?", (run_id,))
        conn.execute("UPDATE hooks SET released_at = NULL WHERE run_id = ?", (run_id,))
    conn.close()


async def hook_ready(engine: Engine, token: str) -> None:
    async def registered() -> bool:
        return any(info.token == token for info in await engine.list_hooks())

    await until(registered, what=f"hook {token} to be registered")


@step
async def gate(name: str) -> str:
    await gates[name].wait()
    return name


@step
async def note(text: str) -> str:
    executions.append(text)
    return text


@workflow(name="hooks.collect")
async def collect(token: str, count: int) -> list[Any]:
    hook = create_hook(token=token, metadata={"count": count})
    await gate(token)  # payloads sent meanwhile are kept
    got = [await hook]
    if len(got) < count:
        async for payload in hook:
            got.append(payload)
            if len(got) == count:
                break
    return got


@pytest.fixture(autouse=True)
def _reset() -> None:
    gates.clear()
    executions.clear()


async def test_hook_creation_is_journaled_and_its_token_registered(engine: Engine, sql: sqlite3.Connection) -> None:
    gates["t1"] = asyncio.Event()
    run = await engine.start(collect, "t1", 2)
    await hook_ready(engine, "t1")
    info = await engine.get_hook_by_token("t1")
    assert (info.token, info.run_id, info.metadata, info.kind) == ("t1", run.run_id, {"count": 2}, "hook")
    assert await engine.list_hooks() == [info]
    assert await engine.list_hooks(run_id=run.run_id) == [info]
    assert await engine.list_hooks(run_id="wrun_other") == []
    ops = sql.execute("SELECT seq, kind, name, state FROM ops WHERE run_id = ?", (run.run_id,)).fetchall()
    assert ops == [(0, "hook", "hook:t1", "created")]
    row = sql.execute("SELECT token, seq, kind, released_at FROM hooks WHERE run_id = ?", (run.run_id,)).fetchone()
    assert row == ("t1", 0, "hook", None)
    gates["t1"].set()
    await engine.resume_hook("t1", 1)
    await engine.resume_hook("t1", 2)
    assert await run.result(timeout=5) == [1, 2]


@workflow(name="hooks.tokens")
async def default_tokens() -> list[str]:
    return [create_hook().token, create_hook().token]


async def test_default_tokens_are_random_and_long(engine: Engine) -> None:
    first = await (await engine.start(default_tokens)).result(timeout=5)
    second = await (await engine.start(default_tokens)).result(timeout=5)
    tokens = first + second
    assert len(set(tokens)) == 4
    assert all(len(token) == 32 for token in tokens)  # token_urlsafe(24): 192 random bits


async def test_payloads_sent_before_the_workflow_awaits_are_kept_in_order(engine: Engine, sql: sqlite3.Connection) -> None:
    gates["early"] = asyncio.Event()
    run = await engine.start(collect, "early", 4)
    await hook_ready(engine, "early")
    for n in range(3):
        info = await engine.resume_hook("early", {"n": n})
        # Committed before resume_hook returned: another connection sees it.
        stored = sql.execute("SELECT COUNT(*) FROM hook_payloads WHERE run_id = ?", (run.run_id,)).fetchone()
        assert stored == (n + 1,)
        assert info.run_id == run.run_id
    gates["early"].set()
    await engine.resume_hook("early", {"n": 3})
    assert await run.result(timeout=5) == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
    rows = sql.execute("SELECT idx, consumed_seq FROM hook_payloads WHERE run_id = ? ORDER BY idx", (run.run_id,)).fetchall()
    # Each payload went to its own receive: seq 0 the hook, 1 the gate step, then receives 2..5.
    assert rows == [(0, 2), (1, 3), (2, 4), (3, 5)]


async def test_delivered_exactly_once_in_order_across_restarts(db_path: Path, sql: sqlite3.Connection) -> None:
    gates["many"] = asyncio.Event()
    gates["many"].set()
    sent = [f"p{n}" for n in range(30)]
    async with Engine(db_path) as engine:
        run = await engine.start(collect, "many", len(sent))
        await hook_ready(engine, "many")
        for payload in sent[:12]:
            await engine.resume_hook("many", payload)
    # Closed mid-way: some payloads were received, maybe some only stored.
    async with Engine(db_path) as engine:
        for payload in sent[12:20]:
            await engine.resume_hook("many", payload)
    async with Engine(db_path) as engine:
        for payload in sent[20:]:
            await engine.resume_hook("many", payload)
        assert await engine.get_run(run.run_id).result(timeout=5) == sent
    consumed = sql.execute("SELECT consumed_seq FROM hook_payloads WHERE run_id = ? ORDER BY idx", (run.run_id,)).fetchall()
    assert [seq for (seq,) in consumed] == list(range(2, 2 + len(sent)))
    # The finished run replays to the same list from the journal alone.
    make_unfinished(db_path, run.run_id)
    async with Engine(db_path) as engine:
        assert await engine.get_run(run.run_id).result(timeout=5) == sent


async def test_await_a_hook_once(engine: Engine) -> None:
    @workflow(name="hooks.twice")
    async def twice() -> str:
        hook = create_hook(token="twice")
        await hook
        try:
            await hook
        except RuntimeError as exc:
            return str(exc)
        return "awaited twice"

    local = Engine(engine.path.with_name("twice.db"), workflows=[twice])
    async with local:
        run = await local.start(twice)
        await hook_ready(local, "twice")
        await local.resume_hook("twice", 1)
        message = await run.result(timeout=5)
    assert "was awaited already" in message


async def test_idempotency_key_stores_once(engine: Engine, sql: sqlite3.Connection) -> None:
    gates["idem"] = asyncio.Event()
    run = await engine.start(collect, "idem", 2)
    await hook_ready(engine, "idem")
    first = await engine.resume_hook("idem", "a", idempotency_key="k1")
    again = await engine.resume_hook("idem", "a-again", idempotency_key="k1")
    assert first == again
    assert isinstance(first, HookInfo)
    await engine.resume_hook("idem", "b", idempotency_key="k2")
    gates["idem"].set()
    assert await run.result(timeout=5) == ["a", "b"]
    rows = sql.execute("SELECT idx, payload, idempotency_key FROM hook_payloads ORDER BY idx").fetchall()
    assert rows == [(0, b'"a"', "k1"), (1, b'"b"', "k2")]


async def test_unknown_or_released_token_raises_and_stores_nothing(engine: Engine, sql: sqlite3.Connection) -> None:
    with pytest.raises(HookNotFound, match="No active hook has the token 'nope'"):
        await engine.resume_hook("nope", {"x": 1})
    with pytest.raises(HookNotFound):
        await engine.get_hook_by_token("nope")
    gates["done"] = asyncio.Event()
    gates["done"].set()
    run = await engine.start(collect, "done", 1)
    await hook_ready(engine, "done")
    await engine.resume_hook("done", "only")
    assert await run.result(timeout=5) == ["only"]
    with pytest.raises(HookNotFound):
        await engine.resume_hook("done", "late")
    assert sql.execute("SELECT payload FROM hook_payloads").fetchall() == [(b'"only"',)]
    with pytest.raises(TypeError):
        await engine.resume_hook("done", object())


@workflow(name="hooks.hold")
async def hold(token: str) -> str:
    hook = create_hook(token=token)
    return str(await hook)


@workflow(name="hooks.grab")
async def grab(token: str) -> str:
    try:
        hook = create_hook(token=token)
    except HookConflict as exc:
        await note(f"conflict with {exc.run_id}")
        return f"conflict: {exc.run_id}"
    return str(await hook)


async def test_token_held_by_another_run_conflicts_then_is_reusable(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path) as engine:
        holder = await engine.start(hold, "shared")
        await hook_ready(engine, "shared")
        taker = await engine.start(grab, "shared")
        assert await taker.result(timeout=5) == f"conflict: {holder.run_id}"
        assert executions == [f"conflict with {holder.run_id}"]
        await engine.resume_hook("shared", "first")
        assert await holder.result(timeout=5) == "first"
        # Released in the transaction that completed the run, at its completion time.
        released = sql.execute(
            "SELECT h.released_at = r.completed_at FROM hooks h JOIN runs r USING (run_id) WHERE run_id = ?", (holder.run_id,)
        )
        assert released.fetchone() == (1,)
        reuser = await engine.start(grab, "shared")
        await hook_ready(engine, "shared")
        assert (await engine.get_hook_by_token("shared")).run_id == reuser.run_id
        await engine.resume_hook("shared", "second")
        assert await reuser.result(timeout=5) == "second"
    # The conflict replays as a conflict, though the token is free now.
    make_unfinished(db_path, taker.run_id)
    executions.clear()
    async with Engine(db_path) as engine:
        assert await engine.get_run(taker.run_id).result(timeout=5) == f"conflict: {holder.run_id}"
    assert executions == []


@workflow(name="hooks.dispose")
async def dispose_early(token: str) -> list[str]:
    hook = create_hook(token=token)
    first = await hook
    hook.dispose()
    await gate(token)
    rest = [payload async for payload in hook]  # a disposed hook receives nothing more
    return [first, *rest]


async def test_dispose_releases_the_token(engine: Engine, sql: sqlite3.Connection) -> None:
    gates["disp"] = asyncio.Event()
    run = await engine.start(dispose_early, "disp")
    await hook_ready(engine, "disp")
    await engine.resume_hook("disp", "one")
    await until(lambda: sql.execute("SELECT released_at IS NOT NULL FROM hooks").fetchone() == (1,), what="the release")
    with pytest.raises(HookNotFound):
        await engine.resume_hook("disp", "two")
    other = await engine.start(hold, "disp")  # the token is free again while the first run still runs
    await hook_ready(engine, "disp")
    await engine.resume_hook("disp", "for the other")
    assert await other.result(timeout=5) == "for the other"
    gates["disp"].set()
    assert await run.result(timeout=5) == ["one"]


@workflow(name="hooks.fails")
async def fails_holding(token: str) -> None:
    create_hook(token=token)
    await gate(token)
    raise ValueError("boom")


async def test_failed_and_cancelled_runs_release_their_tokens(engine: Engine, sql: sqlite3.Connection) -> None:
    gates["f"] = asyncio.Event()
    failing = await engine.start(fails_holding, "f")
    await hook_ready(engine, "f")
    gates["f"].set()
    with pytest.raises(Exception, match="boom"):
        await failing.result(timeout=5)
    with pytest.raises(HookNotFound):
        await engine.resume_hook("f", 1)
    waiting = await engine.start(hold, "c")
    await hook_ready(engine, "c")
    # A run waiting on a hook is cancelled at once.
    assert await before_the_timer(waiting.cancel(), "cancel() of a run waiting on a hook") is RunStatus.RUNNING
    with pytest.raises(RunCancelled):
        await waiting.result(timeout=1)
    with pytest.raises(HookNotFound):
        await engine.resume_hook("c", 1)
    rows = sql.execute(
        "SELECT h.token, h.released_at = r.completed_at FROM hooks h JOIN runs r USING (run_id) ORDER BY h.token"
    ).fetchall()
    assert rows == [("c", 1), ("f", 1)]
    assert await engine.list_hooks() == []


@workflow(name="hooks.cancel_unwind")
async def unwinds(token: str) -> None:
    hook = create_hook(token=token)
    try:
        await hook.wait(timeout="1h")
    except RunCancelled:
        await get_writable().write("unwound")
        raise


async def test_cancel_interrupts_a_timed_wait(engine: Engine) -> None:
    run = await engine.start(unwinds, "timed")
    await until(lambda: _has_receive(run.run_id, engine.path), what="the timed receive to be journaled")
    assert await before_the_timer(run.cancel(), "cancel() of a run in a receive timing out in 1 h") is RunStatus.RUNNING
    assert [chunk async for chunk in run.readable()] == ["unwound"]
    assert engine.stats()["active_runs"] == 0


def _has_receive(run_id: str, path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return bool(conn.execute("SELECT COUNT(*) FROM ops WHERE run_id = ? AND kind = 'receive'", (run_id,)).fetchone()[0] == 1)
    finally:
        conn.close()


@workflow(name="hooks.timeout")
async def times_out(token: str, seconds: float) -> list[str]:
    hook = create_hook(token=token)
    outcome = []
    try:
        outcome.append(await hook.wait(timeout=seconds))
    except HookTimeout as exc:
        outcome.append(f"timeout: {exc}")
        await note("timed out")
    finish = create_hook(token=f"{token}:finish")
    outcome.append(await finish)
    return outcome


async def test_wait_timeout_is_durable_and_replays_the_same(db_path: Path, sql: sqlite3.Connection) -> None:
    async with Engine(db_path) as engine:
        run = await engine.start(times_out, "to", 1.0)
        await until(lambda: _has_receive(run.run_id, db_path), what="the timed receive")
    (deadline,) = sql.execute("SELECT wake_at FROM ops WHERE run_id = ? AND kind = 'receive'", (run.run_id,)).fetchone()
    # Reopened: the deadline is the journaled one, not a new second from now.
    async with Engine(db_path) as engine:
        await hook_ready(engine, "to:finish")
        assert time.time() >= deadline
        row = sql.execute("SELECT state, completed_at, wake_at FROM ops WHERE run_id = ? AND kind = 'receive'", (run.run_id,))
        assert row.fetchone() == ("timeout", deadline, deadline)
        await engine.resume_hook("to", "late")  # the hook outlives its wait's timeout: kept, not received
        await engine.resume_hook("to:finish", "end")
        expected = ["timeout: Hook 'to' received no payload within 1.0", "end"]
        assert await engine.get_run(run.run_id).result(timeout=5) == expected
    assert executions == ["timed out"]
    rows = sql.execute("SELECT payload, consumed_seq FROM hook_payloads WHERE seq = 0 AND run_id = ?", (run.run_id,))
    assert rows.fetchall() == [(b'"late"', None)]
    make_unfinished(db_path, run.run_id)
    executions.clear()
    async with Engine(db_path) as engine:
        assert await engine.get_run(run.run_id).result(timeout=5) == expected
    assert executions == []


async def test_wait_gets_a_payload_before_its_timeout(engine: Engine) -> None:
    run = await engine.start(times_out, "in-time", 60.0)
    await until(lambda: _has_receive(run.run_id, engine.path), what="the timed receive")
    await engine.resume_hook("in-time", "on time")
    await hook_ready(engine, "in-time:finish")
    await engine.resume_hook("in-time:finish", "end")
    assert await run.result(timeout=5) == ["on time", "end"]


@workflow(name="hooks.race_loop")
async def race_loop(count: int, cancel_loser: bool) -> list[int]:
    hook = create_hook(token="loop")
    got: list[int] = []
    waiting: asyncio.Future[Any] | None = None
    while len(got) < count:
        if waiting is None:
            waiting = hook.wait(timeout="15ms")
        tick = asyncio.ensure_future(sleep("8ms"))
        done, _ = await asyncio.wait({waiting, tick}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            try:
                got.append(waiting.result())
            except HookTimeout:
                pass
            waiting = None
        elif cancel_loser:
            waiting.cancel()
            waiting = None
    return got


@pytest.mark.parametrize("cancel_loser", [True, False], ids=["cancel-the-loser", "keep-waiting"])
async def test_racing_wait_with_timeout_against_sleep_loses_no_payload(
    db_path: Path, sql: sqlite3.Connection, cancel_loser: bool
) -> None:
    count = 40
    async with Engine(db_path) as engine:
        run = await engine.start(race_loop, count, cancel_loser)
        await hook_ready(engine, "loop")
        rng = random.Random(12)
        for n in range(count):
            await engine.resume_hook("loop", n)
            if rng.random() < 0.7:  # bursts, and gaps across timeouts and sleeps
                await asyncio.sleep(rng.choice([0.0, 0.004, 0.009, 0.017]))
        assert await run.result(timeout=20) == list(range(count))
    # Each payload went to one receive, in arrival order, however the races went.
    rows = sql.execute("SELECT consumed_seq FROM hook_payloads WHERE run_id = ? ORDER BY idx", (run.run_id,)).fetchall()
    seqs = [seq for (seq,) in rows]
    assert len(seqs) == count and None not in seqs and seqs == sorted(set(seqs))


@dataclass
class Approval:
    approved: bool
    comment: str = ""
    reviewers: list[str] | None = None


Approve = define_hook(Approval)


@workflow(name="hooks.typed")
async def typed(token: str) -> list[Any]:
    hook = Approve.create(token=token)
    first = await hook
    second = await hook.wait()
    return [type(first).__name__, first.approved, first.comment, second.reviewers]


async def test_typed_hook_validates_caller_side_and_converts(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(typed, "typed")
    await hook_ready(engine, "typed")
    with pytest.raises(ValueError, match=r"^approved: expected bool, got str 'yes'$"):
        await Approve.resume(engine, "typed", {"approved": "yes"})
    with pytest.raises(ValueError, match=r"^approved: required field of Approval is missing$"):
        await Approve.resume(engine, "typed", {"comment": "x"})
    with pytest.raises(ValueError, match=r"^colour: unknown field of Approval$"):
        await Approve.resume(engine, "typed", {"approved": True, "colour": "red"})
    with pytest.raises(ValueError, match=r"^reviewers: expected a list, got str$"):
        await Approve.resume(engine, "typed", {"approved": True, "reviewers": "ann"})
    # A live typed hook checks plain resume_hook calls too.
    with pytest.raises(ValueError, match=r"^reviewers\[1\]: expected str, got int 2$"):
        await engine.resume_hook("typed", {"approved": True, "reviewers": ["ann", 2]})
    assert sql.execute("SELECT COUNT(*) FROM hook_payloads").fetchone() == (0,)
    await Approve.resume(engine, "typed", Approval(True, "ok"))
    await Approve.resume(engine, "typed", {"approved": False, "reviewers": ["ann", "bo"]})
    assert await run.result(timeout=5) == ["Approval", True, "ok", ["ann", "bo"]]


def positive(value: Any) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"amount: expected a positive integer, got {value!r}")
    return value


Amount = define_hook(positive)


@workflow(name="hooks.validated")
async def validated() -> int:
    return await Amount.create(token="amount") * 2


async def test_validator_hook(engine: Engine) -> None:
    run = await engine.start(validated)
    await hook_ready(engine, "amount")
    with pytest.raises(ValueError, match=r"^amount: expected a positive integer, got -3$"):
        await Amount.resume(engine, "amount", -3)
    await Amount.resume(engine, "amount", 21)
    assert await run.result(timeout=5) == 42


async def test_hooks_are_per_engine(tmp_path: Path) -> None:
    gates["shared"] = asyncio.Event()
    gates["shared"].set()
    async with Engine(tmp_path / "a.db") as first, Engine(tmp_path / "b.db") as second:
        run_a = await first.start(hold, "same")
        run_b = await second.start(hold, "same")  # another engine: no conflict
        await hook_ready(first, "same")
        await hook_ready(second, "same")
        await first.resume_hook("same", "a")
        await second.resume_hook("same", "b")
        assert [await run_a.result(timeout=5), await run_b.result(timeout=5)] == ["a", "b"]
        assert first.stats()["active_hooks"] == second.stats()["active_hooks"] == 0


@step
async def hook_in_step() -> str:
    try:
        create_hook(token="in-step")
    except RuntimeError as exc:
        return str(exc)
    return "created"


@workflow(name="hooks.in_step")
async def in_step() -> list[str]:
    hook = create_hook(token="body")
    refused = [await hook_in_step()]

    @step(name="hooks.receive_in_step")
    async def receive_in_step() -> str:
        try:
            hook.wait()
        except RuntimeError as exc:
            return str(exc)
        return "received"

    refused.append(await receive_in_step())
    return refused


async def test_hooks_belong_to_the_workflow_body(engine: Engine) -> None:
    run = await engine.start(in_step)
    first, second = await run.result(timeout=5)
    assert first == "create_hook() must be called in a workflow body, not in a step or outside a workflow"
    assert second == f"<Hook 'body' of run {run.run_id}> can only be received from in the workflow body that created it"
    with pytest.raises(RuntimeError, match=r"create_hook\(\) must be called in a workflow body"):
        create_hook()


async def test_a_deadline_releases_the_hooks_of_its_run(engine: Engine, sql: sqlite3.Connection) -> None:
    run = await engine.start(hold.with_options(timeout="300ms"), "deadline")
    await hook_ready(engine, "deadline")
    with pytest.raises(RunCancelled, match="deadline"):
        await run.result(timeout=10)
    with pytest.raises(HookNotFound):
        await engine.resume_hook("deadline", 1)
    rows = sql.execute("SELECT h.released_at = r.completed_at FROM hooks h JOIN runs r USING (run_id)").fetchall()
    assert rows == [(1,)]
    assert engine.stats()["active_hooks"] == 0
