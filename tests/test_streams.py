"""Durable streams: committed writes, readers, replay, back-pressure.

Every test runs a real engine on a SQLite file in ``tmp_path``; what is stored is
checked with a separate plain ``sqlite3`` connection. Workflows pause on
``asyncio.Event`` gates the test opens, so nothing waits on wall-clock time.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any

import orjson
import pytest
import stream_child  # the SIGKILL test's child script: imported, its workflow is registered here too
from harness import kill_child, make_unfinished, read_line, spawn_child

from durable import (
    Engine,
    RetryableError,
    Run,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunStatus,
    StepFailed,
    get_step_metadata,
    get_workflow_metadata,
    get_writable,
    sleep,
    step,
    workflow,
)

READ_TIMEOUT_S = 30.0

# Gates and counters shared between a test and the workflows it starts, keyed per test.
GATES: dict[str, asyncio.Event] = {}
CALLS: Counter[str] = Counter()


def gate(key: str, name: str) -> asyncio.Event:
    return GATES.setdefault(f"{key}:{name}", asyncio.Event())


@pytest.fixture
def key() -> Iterator[str]:
    k = uuid.uuid4().hex
    yield k
    for name in [n for n in GATES if n.startswith(k)]:
        del GATES[name]
    for name in [n for n in CALLS if n.startswith(k)]:
        del CALLS[name]


@pytest.fixture
def db(db_path: Path) -> Path:
    """The journal file of conftest's ``engine`` fixture."""
    return db_path


# -- helpers ------------------------------------------------------------------------


def stored(db: Path | str, run_id: str, namespace: str = "") -> list[tuple[int, int, int, Any]]:
    """(idx, seq, part, value) of every chunk row of one stream, read with a plain sqlite3 connection."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT idx, seq, part, data FROM chunks WHERE run_id = ? AND namespace = ? ORDER BY idx",
            (run_id, namespace),
        ).fetchall()
    return [(idx, seq, part, orjson.loads(data)) for idx, seq, part, data in rows]


def stored_values(db: Path | str, run_id: str, namespace: str = "") -> list[Any]:
    return [value for _, _, _, value in stored(db, run_id, namespace)]


async def read_all(run: Run, start_index: int = 0, namespace: str | None = None) -> list[Any]:
    async with asyncio.timeout(READ_TIMEOUT_S), aclosing(run.readable(start_index, namespace)) as values:
        return [value async for value in values]


async def read_indexes(run: Run, start_index: int = 0, namespace: str | None = None) -> list[int]:
    async with asyncio.timeout(READ_TIMEOUT_S), aclosing(run.chunks(start_index, namespace)) as chunks:
        return [chunk.index async for chunk in chunks]


async def drain(values: AsyncIterator[Any]) -> list[Any]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        return [value async for value in values]


# -- workflows and steps --------------------------------------------------------------


@step
async def write_and_look(db: str, values: list[str]) -> list[list[Any]]:
    run_id = get_workflow_metadata().run_id
    w = get_writable()
    seen = []
    for value in values:
        await w.write(value)
        seen.append(stored_values(db, run_id))
    return seen


@workflow(name="streams.commit_visible")
async def commit_visible_wf(db: str) -> dict[str, list[list[Any]]]:
    run_id = get_workflow_metadata().run_id
    w = get_writable()
    body = []
    for value in ("b0", "b1"):
        await w.write(value)
        body.append(stored_values(db, run_id))
    in_step = await write_and_look(db, ["s0", "s1"])
    await w.write("b2")
    body.append(stored_values(db, run_id))
    return {"body": body, "step": in_step}


@workflow(name="streams.gated_writes")
async def gated_writes_wf(key: str, n: int, pause_at: list[int]) -> int:
    """Writes 0..n-1; before writing i in pause_at, sets gate 'paused-i' and waits for gate 'go-i'."""
    w = get_writable()
    for i in range(n):
        if i in pause_at:
            gate(key, f"paused-{i}").set()
            await gate(key, f"go-{i}").wait()
        await w.write(i)
    return n


NAMESPACES: list[str | None] = [None, "a", "b"]


@workflow(name="streams.multi_namespace")
async def multi_namespace_wf(key: str, outcome: str) -> str:
    for ns in NAMESPACES:
        w = get_writable(ns)
        for i in range(3):
            await w.write(f"{ns}-{i}")
    gate(key, "paused").set()
    try:
        if outcome == "cancel":
            await sleep("1h")
        await gate(key, "go").wait()
    except RunCancelled:
        await get_writable().write("cancelled")
        raise
    if outcome == "fail":
        raise ValueError("the batch went wrong")
    return "done"


@step
async def counted_write(key: str, name: str, values: list[str]) -> str:
    CALLS[f"{key}:{name}"] += 1
    w = get_writable()
    for value in values:
        await w.write(value)
    return name


@workflow(name="streams.replayed")
async def replayed_wf(key: str) -> list[str]:
    w = get_writable()
    await w.write("b0")  # seq 0
    s1 = await counted_write(key, "s1", ["s1-0", "s1-1"])  # seq 1
    await w.write("b1")  # seq 2
    s2 = await counted_write(key, "s2", ["s2-0"])  # seq 3
    await w.write("b2")  # seq 4
    await get_writable("side").write("side-0")  # seq 5
    return [s1, s2]


REPLAYED_STREAM = [(0, 0, -1, "b0"), (1, 1, 0, "s1-0"), (2, 1, 1, "s1-1"), (3, 2, -1, "b1"), (4, 3, 0, "s2-0"), (5, 4, -1, "b2")]


@step(max_retries=2)
async def flaky_writer(key: str) -> int:
    attempt = get_step_metadata().attempt
    CALLS[f"{key}:attempt-{attempt}"] += 1
    w = get_writable()
    await w.write({"n": 0, "attempt": attempt})
    await w.write({"n": 1, "attempt": attempt})
    if attempt == 1:
        raise RetryableError("first attempt fails", retry_after="10ms")
    await w.write({"n": 2, "attempt": attempt})
    return attempt


@step(max_retries=2)
async def always_failing_writer() -> None:
    await get_writable().write({"attempt": get_step_metadata().attempt})
    raise RetryableError("never works", retry_after="10ms")


@workflow(name="streams.retried")
async def retried_wf(key: str) -> dict[str, Any]:
    attempt = await flaky_writer(key)
    try:
        await always_failing_writer()
    except StepFailed as exc:
        return {"attempt": attempt, "failed": str(exc)}
    return {"attempt": attempt, "failed": None}


QUEUED_SAMPLES: dict[str, list[int]] = {}
ENGINES: dict[str, Engine] = {}


@workflow(name="streams.many_writes")
async def many_writes_wf(key: str, n: int) -> int:
    """Writes 0, waits for gate 'go', then writes 1..n-1, sampling the engine's queued chunks after each."""
    samples = QUEUED_SAMPLES.setdefault(key, [])
    eng = ENGINES[key]
    w = get_writable()
    await w.write(0)
    gate(key, "paused").set()
    await gate(key, "go").wait()
    for i in range(1, n):
        await w.write(i)
        samples.append(eng.stats()["queued_chunks"])
    return n


@workflow(name="streams.namespaces")
async def namespaces_wf() -> None:
    for i in range(4):
        await get_writable().write(f"default-{i}")
        await get_writable("progress").write(f"progress-{i}")
        if i % 2:
            await get_writable("log").write(f"log-{i}")


@workflow(name="streams.closes_one")
async def closes_one_wf(key: str) -> str:
    side = get_writable("side")
    await side.write("side-0")
    await side.close()
    await get_writable().write("main-0")
    gate(key, "closed").set()
    await gate(key, "go").wait()
    return "done"


@workflow(name="streams.write_then_close")
async def write_then_close_wf(key: str) -> None:
    gate(key, "started").set()
    await gate(key, "go").wait()
    side = get_writable("side")
    written = side.write("side-0")  # not awaited: the close is called while it is being committed
    closed = side.close()
    gate(key, "close-called").set()
    await written
    await closed


# -- 1. every write is committed before it returns -------------------------------------


async def test_write_is_committed_before_it_returns_in_body_and_step(engine: Engine, db: Path) -> None:
    run = await engine.start(commit_visible_wf, str(db))
    seen = await run.result(timeout=30)
    # Each list is what a separate sqlite3 connection saw right after one `await w.write(...)` returned.
    assert seen == {
        "body": [["b0"], ["b0", "b1"], ["b0", "b1", "s0", "s1", "b2"]],
        "step": [["b0", "b1", "s0"], ["b0", "b1", "s0", "s1"]],
    }
    assert [(idx, part) for idx, _, part, _ in stored(db, run.run_id)] == [(0, -1), (1, -1), (2, 0), (3, 1), (4, -1)]
    assert await read_all(run) == ["b0", "b1", "s0", "s1", "b2"]


# -- 2. many readers, start indexes -------------------------------------------------------


async def test_hundred_concurrent_readers_receive_the_identical_full_sequence(engine: Engine, key: str) -> None:
    n = 500
    run = await engine.start(gated_writes_wf, key, n, [0, 250])
    early = [asyncio.create_task(read_all(run)) for _ in range(50)]  # before the first write
    await gate(key, "paused-0").wait()
    gate(key, "go-0").set()
    await gate(key, "paused-250").wait()
    late = [asyncio.create_task(read_all(run)) for _ in range(50)]  # mid-stream, 250 chunks stored
    gate(key, "go-250").set()
    results = await asyncio.gather(*early, *late)
    assert await run.result(timeout=30) == n
    assert len(results) == 100
    for received in results:
        assert received == list(range(n))
    assert [idx for idx, _, _, _ in stored(engine.path, run.run_id)] == list(range(n))
    assert engine.stats()["stream_subscribers"] == 0


@pytest.mark.parametrize(
    ("start_index", "expected"),
    [
        (0, list(range(20))),
        (7, list(range(7, 20))),
        (19, [19]),
        (20, []),
        (25, []),
        (-1, [19]),
        (-3, [17, 18, 19]),
        (-20, list(range(20))),
        (-25, list(range(20))),
    ],
)
async def test_start_index_on_a_finished_stream(engine: Engine, key: str, start_index: int, expected: list[int]) -> None:
    run = await engine.start(gated_writes_wf, key, 20, [])
    assert await run.result(timeout=30) == 20
    assert await read_all(run, start_index) == expected
    assert await read_indexes(run, start_index) == expected  # each value is written at its own index


async def test_start_index_on_a_live_stream(engine: Engine, key: str) -> None:
    run = await engine.start(gated_writes_wf, key, 30, [10])
    await gate(key, "paused-10").wait()  # chunks 0..9 stored, the writer waits
    readers = {start: run.readable(start) for start in (4, -3, -1, 15, 10)}
    # The first value of a reader that attaches at or before the end shows where it attached.
    first = {start: await anext(readers[start]) for start in (4, -3, -1)}
    assert first == {4: 4, -3: 7, -1: 9}
    rest = {start: asyncio.create_task(drain(values)) for start, values in readers.items()}
    gate(key, "go-10").set()
    assert await run.result(timeout=30) == 30
    got = {start: await task for start, task in rest.items()}
    assert got == {
        4: list(range(5, 30)),
        -3: list(range(8, 30)),
        -1: list(range(10, 30)),
        15: list(range(15, 30)),  # attached beyond the end: waits for chunk 15, gets nothing before it
        10: list(range(10, 30)),
    }
    for values in readers.values():
        await values.aclose()
    assert engine.stats()["stream_subscribers"] == 0


# -- 3. every stream of a run closes at the end, whatever the end -----------------------


@pytest.mark.parametrize("outcome", ["complete", "fail", "cancel"])
async def test_every_stream_closes_when_the_run_ends(engine: Engine, key: str, outcome: str) -> None:
    run = await engine.start(multi_namespace_wf, key, outcome)
    await gate(key, "paused").wait()
    live = {ns: run.readable(0, ns) for ns in NAMESPACES}
    firsts = {ns: await anext(values) for ns, values in live.items()}  # each reader is now past its stored part
    assert firsts == {None: "None-0", "a": "a-0", "b": "b-0"}
    readers = {ns: asyncio.create_task(drain(values)) for ns, values in live.items()}
    never_written = asyncio.create_task(read_all(run, 0, "never-written"))

    if outcome == "cancel":
        assert await run.cancel() == RunStatus.RUNNING
        with pytest.raises(RunCancelled):
            await run.result(timeout=30)
    else:
        gate(key, "go").set()
        if outcome == "fail":
            with pytest.raises(RunFailed, match="ValueError: the batch went wrong"):
                await run.result(timeout=30)
        else:
            assert await run.result(timeout=30) == "done"

    expected_default = ["None-0", "None-1", "None-2"] + (["cancelled"] if outcome == "cancel" else [])
    async with asyncio.timeout(READ_TIMEOUT_S):
        ended = {ns: await task for ns, task in readers.items()}
        assert await never_written == []
    assert ended == {None: expected_default[1:], "a": ["a-1", "a-2"], "b": ["b-1", "b-2"]}
    for values in live.values():
        await values.aclose()

    # Readers attaching after the end get what is stored, then end.
    assert await read_all(run) == expected_default
    assert await read_all(run, 0, "a") == ["a-0", "a-1", "a-2"]
    assert await read_all(run, -2, "b") == ["b-1", "b-2"]
    assert await read_all(run, 0, "never-written") == []
    assert engine.stats()["stream_subscribers"] == 0

    # The same from a fresh engine, where the run is only in the journal.
    await engine.close()
    async with Engine(engine.path) as reopened:
        again = reopened.get_run(run.run_id)
        assert await read_all(again) == expected_default
        assert await read_all(again, 1, "a") == ["a-1", "a-2"]
        assert reopened.stats()["stream_subscribers"] == 0


async def test_closing_one_stream_ends_its_readers_only(engine: Engine, key: str, db: Path) -> None:
    run = await engine.start(closes_one_wf, key)
    await gate(key, "closed").wait()
    assert await read_all(run, 0, "side") == ["side-0"]  # closed: ends although the run is running
    main = run.readable()
    assert await anext(main) == "main-0"
    rest = asyncio.create_task(drain(main))
    assert await run.status() == RunStatus.RUNNING
    gate(key, "go").set()
    assert await run.result(timeout=30) == "done"
    assert await rest == []
    await main.aclose()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT namespace FROM closed_streams WHERE run_id = ?", (run.run_id,)).fetchall() == [("side",)]


# -- 4. exactly-once storage across replay, retries and SIGKILL ---------------------------


@pytest.mark.parametrize("delete_ops_from_seq", [None, 3, 1])
async def test_body_writes_are_stored_once_across_replay(db: Path, key: str, delete_ops_from_seq: int | None) -> None:
    async with Engine(db) as engine:
        run = await engine.start(replayed_wf, key)
        assert await run.result(timeout=30) == ["s1", "s2"]
    assert stored(db, run.run_id) == REPLAYED_STREAM
    assert stored(db, run.run_id, "side") == [(0, 5, -1, "side-0")]
    assert (CALLS[f"{key}:s1"], CALLS[f"{key}:s2"]) == (1, 1)

    # Unfinished again; without its ops rows from `delete_ops_from_seq` on, those steps run again.
    make_unfinished(db, run.run_id, delete_ops_from_seq)
    async with Engine(db) as engine:
        again = engine.get_run(run.run_id)
        assert await again.result(timeout=30) == ["s1", "s2"]
        assert await read_all(again) == ["b0", "s1-0", "s1-1", "b1", "s2-0", "b2"]
        assert await read_all(again, 0, "side") == ["side-0"]
    assert stored(db, run.run_id) == REPLAYED_STREAM
    assert stored(db, run.run_id, "side") == [(0, 5, -1, "side-0")]
    reran = {None: (1, 1), 3: (1, 2), 1: (2, 2)}[delete_ops_from_seq]
    assert (CALLS[f"{key}:s1"], CALLS[f"{key}:s2"]) == reran


async def test_step_writes_are_stored_at_most_once_across_retries(engine: Engine, key: str, db: Path) -> None:
    run = await engine.start(retried_wf, key)
    assert await run.result(timeout=30) == {
        "attempt": 2,
        "failed": f"Step {always_failing_writer.name} failed: RetryableError: never works",
    }
    assert (CALLS[f"{key}:attempt-1"], CALLS[f"{key}:attempt-2"]) == (1, 1)
    # flaky_writer (seq 0): attempt 1 stored writes 0 and 1; attempt 2 skipped them and stored write 2.
    # always_failing_writer (seq 1): its first write is stored by attempt 1 only, of 3 attempts.
    assert stored(db, run.run_id) == [
        (0, 0, 0, {"n": 0, "attempt": 1}),
        (1, 0, 1, {"n": 1, "attempt": 1}),
        (2, 0, 2, {"n": 2, "attempt": 2}),
        (3, 1, 0, {"attempt": 1}),
    ]
    assert await read_all(run) == [row[3] for row in stored(db, run.run_id)]
    timeline = await run.timeline()
    assert [(op.seq, op.status, len(op.attempts)) for op in timeline] == [(0, "completed", 2), (1, "failed", 3)]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_replay_after_sigkill_does_not_duplicate_chunks(db: Path, seed: int) -> None:
    n = 200
    kill_after_steps = random.Random(seed).randrange(0, n // 2)
    child = await spawn_child("stream_child.py", str(db), str(n))
    run_id = await read_line(child)
    for i in range(kill_after_steps):
        assert await read_line(child) == f"step {i}"
    await kill_child(child)

    with closing(sqlite3.connect(db)) as conn:
        (status,) = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert status == "running", f"the child finished before the kill (seed {seed}): the crash was not tested"
    before = stored_values(db, run_id)
    assert len(before) >= 2 * kill_after_steps - 1  # step i printed after its chunk committed
    assert before == stream_child.expected_stream(n)[: len(before)]

    async with Engine(db) as engine:
        run = engine.get_run(run_id)
        assert await run.result(timeout=60) == n
        assert await read_all(run) == stream_child.expected_stream(n)
    rows = stored(db, run_id)
    assert [idx for idx, _, _, _ in rows] == list(range(2 * n))
    assert [value for _, _, _, value in rows] == stream_child.expected_stream(n)
    # Step i is seq 2i and writes part 0; body write i is seq 2i+1.
    assert [(seq, part) for _, seq, part, _ in rows] == [(s, 0 if s % 2 == 0 else -1) for s in range(2 * n)]


# -- 5. back-pressure ---------------------------------------------------------------------


async def test_stalled_reader_keeps_a_bounded_queue_and_resumes_without_gap(tmp_path: Path, key: str) -> None:
    n, limit = 10_000, 100
    async with Engine(tmp_path / "bp.db", stream_queue_limit=limit) as engine:
        ENGINES[key] = engine
        try:
            run = await engine.start(many_writes_wf, key, n)
            await gate(key, "paused").wait()
            stalled = run.readable()
            assert await anext(stalled) == 0  # then it reads nothing until the writer is done
            follower = run.readable()
            assert await anext(follower) == 0
            follower_rest = asyncio.create_task(drain(follower))
            gate(key, "go").set()
            # The writer is not held back by the stalled reader: the run ends while it still waits.
            assert await run.result(timeout=60) == n
            assert await follower_rest == list(range(1, n))
            await follower.aclose()
            # Sampled after each write: the follower keeps up (its queue is empty when the writer resumes);
            # the stalled reader's queue grows to the limit, then overflows, is dropped, and takes nothing more.
            samples = QUEUED_SAMPLES[key]
            assert samples == list(range(1, limit + 1)) + [0] * (n - 1 - limit)
            # The stalled reader's queue overflowed, was dropped, and stays empty: it will read the database.
            assert engine.stats()["stream_subscribers"] == 1
            assert engine.stats()["queued_chunks"] == 0
            assert await drain(stalled) == list(range(1, n))
            await stalled.aclose()
            assert engine.stats()["stream_subscribers"] == 0
        finally:
            ENGINES.pop(key, None)
            QUEUED_SAMPLES.pop(key, None)


# -- 6. namespaces ----------------------------------------------------------------------------


async def test_namespaces_are_independent_streams(engine: Engine, db: Path) -> None:
    run = await engine.start(namespaces_wf)
    await run.result(timeout=30)
    assert [(idx, value) for idx, _, _, value in stored(db, run.run_id)] == [(i, f"default-{i}") for i in range(4)]
    assert [(idx, value) for idx, _, _, value in stored(db, run.run_id, "progress")] == [(i, f"progress-{i}") for i in range(4)]
    assert [(idx, value) for idx, _, _, value in stored(db, run.run_id, "log")] == [(0, "log-1"), (1, "log-3")]
    assert await read_all(run) == await read_all(run, 0, "") == [f"default-{i}" for i in range(4)]
    assert await read_all(run, 2, "progress") == ["progress-2", "progress-3"]
    assert await read_all(run, -1, "log") == ["log-3"]
    assert await read_indexes(run, 0, "log") == [0, 1]


# -- leaks ----------------------------------------------------------------------------------


async def test_readers_leave_no_subscriber_behind(engine: Engine, key: str) -> None:
    run = await engine.start(gated_writes_wf, key, 10, [5])
    await gate(key, "paused-5").wait()

    closed_mid_stream = [run.readable() for _ in range(3)]
    for values in closed_mid_stream:
        assert await anext(values) == 0
    async with aclosing(run.readable(-1)) as values:
        async for value in values:
            assert value == 4
            break
    waiting = run.readable(50)  # attached beyond the end, closed while waiting for a chunk
    waiting_task = asyncio.ensure_future(anext(waiting))
    finishing = [asyncio.create_task(read_all(run)) for _ in range(4)]
    live = [asyncio.ensure_future(anext(values)) for values in closed_mid_stream]
    assert [await task for task in live] == [1, 1, 1]
    for values in closed_mid_stream:
        await values.aclose()
    waiting_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting_task
    await waiting.aclose()

    gate(key, "go-5").set()
    assert await run.result(timeout=30) == 10
    assert [await task for task in finishing] == [list(range(10))] * 4
    assert engine.stats()["stream_subscribers"] == 0
    assert engine.stats()["queued_chunks"] == 0


# -- edges ------------------------------------------------------------------------------------


@workflow(name="streams.unserializable")
async def unserializable_wf() -> str:
    w = get_writable()
    await w.write("before")
    try:
        await w.write({"not json": object()})
    except TypeError as exc:
        message = type(exc).__name__
    else:
        message = "stored"
    await w.write("after")
    return message


async def test_a_value_that_is_not_json_is_a_type_error_and_stores_nothing(engine: Engine, db: Path) -> None:
    run = await engine.start(unserializable_wf)
    assert await run.result(timeout=30) == "TypeError"
    assert [(idx, value) for idx, _, _, value in stored(db, run.run_id)] == [(0, "before"), (1, "after")]


async def test_reading_an_unknown_run_raises_run_not_found(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        await read_all(engine.get_run("wrun_does_not_exist"))
    assert engine.stats()["stream_subscribers"] == 0


# -- engine bugs found while writing these tests ------------------------------------------


async def test_a_run_that_closed_a_stream_replays(db: Path, key: str) -> None:
    """A run that closed a stream and is then resumed must replay its writes to that stream.

    Fails today: _runtime.RunContext.write checks ``namespace in self.closed`` before
    ``_take``; on resume ``closed`` is loaded from closed_streams, so the replayed
    first write to the closed stream raises ValueError and the run fails.
    """
    async with Engine(db) as engine:
        run = await engine.start(closes_one_wf, key)
        await gate(key, "closed").wait()
        gate(key, "go").set()
        assert await run.result(timeout=30) == "done"
    make_unfinished(db, run.run_id)
    async with Engine(db) as engine:
        again = engine.get_run(run.run_id)
        assert await again.result(timeout=30) == "done"
        assert await read_all(again, 0, "side") == ["side-0"]
        assert await read_all(again) == ["main-0"]


async def test_reader_attaching_while_a_close_commits_gets_the_stream(engine: Engine, key: str, db: Path) -> None:
    """A reader that attaches after ``close()`` was called but before it committed must not miss chunks.

    Fails today: close_stream adds the namespace to RunContext.closed at call time, so
    StreamHub.read takes the stream for closed, does its last read before the pending
    write has committed, and ends with nothing although the stream holds "side-0".
    """
    run = await engine.start(write_then_close_wf, key)
    await gate(key, "started").wait()
    blocker = sqlite3.connect(db, timeout=5, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the engine's next commit waits for it
        gate(key, "go").set()
        await gate(key, "close-called").wait()  # write and close are submitted, neither can commit
        side = run.readable(0, "side")
        first = asyncio.ensure_future(anext(side))
        for _ in range(5):
            # Reads share one connection, served in order: each round trip lets the reader take its next step.
            await engine.fetchall("SELECT 1")
        early = first.exception() if first.done() else None  # retrieved, so a failure here reports once
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert early is None and not first.done(), f"the reader ended before the stream's only write committed: {early!r}"
    assert await first == "side-0"
    assert await drain(side) == []
    await run.result(timeout=30)
    assert stored_values(db, run.run_id, "side") == ["side-0"]


async def test_closing_a_readable_unsubscribes_at_once(engine: Engine, key: str) -> None:
    """``await values.aclose()`` on ``run.readable()`` must drop the reader's subscription before it returns.

    Fails today: Run.readable (_engine.py) iterates ``self.chunks(...)`` with a bare
    ``async for``; closing readable abandons that inner generator without closing it,
    so the subscriber stays until the event loop's async-generator finalizer closes it
    later. ``run.chunks()`` closes its inner reader and does not have the problem.
    """
    run = await engine.start(gated_writes_wf, key, 3, [])
    assert await run.result(timeout=30) == 3
    chunks = run.chunks()
    assert (await anext(chunks)).index == 0
    assert engine.stats()["stream_subscribers"] == 1
    await chunks.aclose()
    assert engine.stats()["stream_subscribers"] == 0
    values = run.readable()
    assert await anext(values) == 0
    assert engine.stats()["stream_subscribers"] == 1
    await values.aclose()
    assert engine.stats()["stream_subscribers"] == 0


async def test_reader_suspended_in_its_stored_part_gets_every_chunk_after_the_end(engine: Engine, key: str) -> None:
    """A reader paused inside its first (short) page of stored chunks, while the run writes more than a
    page (500) and ends, must still get every chunk when it resumes.

    Fails today: StreamHub.read (_streams.py), once the stream is closed, makes its
    "one more read" a single ``_stored`` call, which returns at most PAGE chunks: the
    reader gets 1..500 and ends, although the stream ends at 600.
    """
    run = await engine.start(gated_writes_wf, key, 601, [1])
    await gate(key, "paused-1").wait()
    values = run.readable()
    assert await anext(values) == 0  # from a stored page of one chunk; the reader is paused inside it
    gate(key, "go-1").set()
    assert await run.result(timeout=30) == 601
    assert await drain(values) == list(range(1, 601))
    await values.aclose()
