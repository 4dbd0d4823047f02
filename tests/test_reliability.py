"""Reliability of ``python server.py`` as a real subprocess.

- crash safety: SIGKILL mid-batch, mid-sleep and mid-cancel, then a restart on
  the same database: every invoice exactly once, one progress event per
  invoice in the stream, an intact database;
- the cancel guarantee: what the cancel response says was issued is what is
  stored and what was streamed;
- load: 200 concurrent batches all complete;
- slow and vanished SSE clients: the others get every event, a stalled
  connection is dropped, disconnected clients leave nothing behind;
- graceful shutdown: SIGTERM with open streams exits 0, fast and quietly,
  and the batch resumes on the next start.

The random moments come from one seed per test, printed so that a failure
can be replayed with ``RELIABILITY_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from harness import (
    Api,
    ServerFactory,
    ServerProcess,
    SseEvent,
    client_session,
    expected_ids,
    integrity_check,
    mid_batch_target,
    parse_sse,
    progress_numbers,
    sql_rows,
    sse_events,
    stored_invoices,
    until,
)

# SSE fan-out clients: the issue's 500 (about a minute); RELIABILITY_SSE_CLIENTS=100 for a quicker run
SSE_CLIENTS = int(os.environ.get("RELIABILITY_SSE_CLIENTS", "500"))
# The stalled-client test needs the server to give up on a write quickly.
SSE_WRITE_TIMEOUT_S = 2.0


# -- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


def assert_batch_stored_once(db: Path, run_id: str, account_id: str, count: int) -> None:
    """The ``invoices`` and ``run_invoices`` tables hold invoices 1..count of the run, each once."""
    rows = stored_invoices(db, run_id)
    ids = [invoice_id for invoice_id, _ in rows]
    assert [i for i, c in Counter(ids).items() if c > 1] == []
    assert sorted(ids) == expected_ids(account_id, count)
    assert sorted(n for _, n in rows) == list(range(1, count + 1))
    assert sql_rows(db, "SELECT COUNT(*), COUNT(DISTINCT n) FROM run_invoices WHERE run_id = ?", (run_id,)) == [(count, count)]


def assert_stream_of_completed_batch(events: list[SseEvent], total: int) -> None:
    """Indexes 0..total, progress 1..total in order, then ``complete``."""
    assert [index for index, _ in events] == list(range(total + 1))
    assert progress_numbers(events) == list(range(1, total + 1))
    assert [data["type"] for _, data in events].count("progress") == total
    assert events[-1][1]["type"] == "complete"
    assert events[-1][1]["current"] == total


async def read_until(response: aiohttp.ClientResponse, count: int, into: list[SseEvent]) -> None:
    """Read events into ``into`` until it holds ``count`` progress events (or the stream ends)."""
    async for event in sse_events(response):
        into.append(event)
        if event[1].get("type") == "progress" and event[1]["current"] >= count:
            return


def server_fd_count(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


HEALTH_COUNTERS = ("streamSubscribers", "queuedChunks", "activeRuns", "openStreams")


async def health_counts(api: Api) -> dict[str, int]:
    """The leak counters of ``GET /healthz`` (engine.stats() and the SSE hub)."""
    status, body = await api.healthz()
    assert status == 200, (status, body)
    missing = [key for key in HEALTH_COUNTERS if key not in body]
    assert not missing, (
        f"GET /healthz must expose {', '.join(HEALTH_COUNTERS)} "
        f"(engine.stats() and the open SSE responses) for leak checks; it returned {body}"
    )
    assert body["status"] == "ok"
    return {key: int(body[key]) for key in HEALTH_COUNTERS}


# -- 1. crash safety ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
@pytest.mark.parametrize("watch", ["stream", "status"])
async def test_sigkill_mid_batch_then_restart_issues_every_invoice_once(
    make_server: ServerFactory, http: aiohttp.ClientSession, rng: random.Random, watch: str, trial: int
) -> None:
    total, account = 2000, f"crash_{watch}"
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    run_id = await api.start(account, total, "0s")
    target = mid_batch_target(rng, total)

    # Kill once `target` invoices are known to be issued, seen either on the
    # live stream or in /api/status, so the kill lands at a random point of the batch.
    if watch == "stream":
        seen: list[SseEvent] = []
        async with http.get(f"{server.base}/api/stream/{run_id}") as response:
            await read_until(response, target, seen)
            await server.kill()
        assert progress_numbers(seen) == list(range(1, target + 1))
    else:

        async def issued_enough() -> bool:
            return int((await api.status(run_id))["current"]) >= target

        await until(issued_enough, timeout=60, interval=0.005, what=f"{target} invoices")
        await server.kill()

    # A progress event is committed with its invoice: what was seen is stored.
    before = len(stored_invoices(server.db, run_id))
    assert target <= before < total, (target, before)

    await server.start()
    final = await api.wait_terminal(run_id, timeout=90)
    assert (final["status"], final["current"], final["total"]) == ("completed", total, total)
    assert await api.invoice_ids(run_id) == expected_ids(account, total)
    assert_batch_stored_once(server.db, run_id, account, total)
    assert len(stored_invoices(server.db)) == total  # nothing under any other id either
    assert_stream_of_completed_batch(await api.stream(run_id), total)

    assert await server.stop() == 0
    assert integrity_check(server.db) == "ok"


@pytest.mark.slow
async def test_sigkill_during_a_sleep_then_restart_finishes(
    make_server: ServerFactory, http: aiohttp.ClientSession, rng: random.Random
) -> None:
    total, account = 5, "crash_sleep"
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    run_id = await api.start(account, total, "1s")
    after = rng.randint(1, total - 1)  # kill in the sleep that follows invoice `after`
    waiting: dict[str, Any] = {}

    async def sleeping() -> bool:
        status, detail = await api.request("GET", f"/api/runs/{run_id}")
        assert status == 200, detail
        sleeps = [op for op in detail["timeline"] if op["kind"] == "sleep"]
        if detail["current"] == after and len(sleeps) == after and sleeps[-1]["status"] == "waiting":
            waiting.update(sleeps[-1])
            return True
        return False

    # "waiting": its wake-up time is still ahead, so the kill lands inside the 1 s sleep.
    await until(sleeping, timeout=30, interval=0.01, what=f"the sleep after invoice {after}")
    await server.kill()
    assert len(stored_invoices(server.db, run_id)) == after

    await server.start()
    # The journaled wake-up time survives the restart.
    status, detail = await api.request("GET", f"/api/runs/{run_id}")
    assert status == 200
    resumed = next(op for op in detail["timeline"] if op["seq"] == waiting["seq"])
    assert (resumed["kind"], resumed["wakeAt"]) == ("sleep", waiting["wakeAt"])

    final = await api.wait_terminal(run_id, timeout=60)
    assert (final["status"], final["current"]) == ("completed", total)
    assert await api.invoice_ids(run_id) == expected_ids(account, total)
    assert_batch_stored_once(server.db, run_id, account, total)
    assert_stream_of_completed_batch(await api.stream(run_id), total)
    assert await server.stop() == 0
    assert integrity_check(server.db) == "ok"


async def raw_cancel(server: ServerProcess, run_id: str, wait: float | None) -> tuple[int, dict[str, Any]] | None:
    """Send POST /api/cancel on a raw connection; wait up to ``wait`` s (None: for good) for the answer.

    Returns (status, body) when the whole answer arrived, else None.
    """
    assert server.port is not None
    body = orjson.dumps({"runId": run_id})
    head = (
        "POST /api/cancel HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        try:
            raw = await asyncio.wait_for(reader.read(), wait)
        except TimeoutError:
            return None
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    if not status_line or not payload:
        return None
    return int(status_line.split()[1]), orjson.loads(payload)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2))
@pytest.mark.parametrize("kill_after", ["sent", "a_few_ms", "response"])
async def test_sigkill_during_a_cancel(
    make_server: ServerFactory, http: aiohttp.ClientSession, rng: random.Random, kill_after: str, trial: int
) -> None:
    total, account = 600, f"crash_cancel_{kill_after}"
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    run_id = await api.start(account, total, "0s")
    target = mid_batch_target(rng, total)

    async def issued_enough() -> bool:
        return int((await api.status(run_id))["current"]) >= target

    await until(issued_enough, timeout=60, interval=0.005, what=f"{target} invoices")
    wait = {"sent": 0.0, "a_few_ms": rng.uniform(0.0005, 0.005), "response": None}[kill_after]
    answer = await raw_cancel(server, run_id, wait)
    await server.kill()
    if kill_after == "response":
        assert answer is not None and answer[0] == 200, answer

    await server.start()
    # A cancelled run unwinds just after the restart, settling the numbers its steps
    # took without issuing their invoice; its stream ends once it has.
    events = await api.stream(run_id)
    final = await api.wait_terminal(run_id, timeout=60)
    ids = await api.invoice_ids(run_id)
    count = len(ids)
    assert ids == expected_ids(account, count)
    assert_batch_stored_once(server.db, run_id, account, count)
    print(f"target {target}, answer {answer}, final {final['status']} {count}, last event {events[-1][1]['type']}")
    assert progress_numbers(events) == list(range(1, count + 1))
    assert final["status"] in ("cancelled", "completed"), final
    if answer is not None and answer[0] == 200:
        # An acknowledged cancel is durable, and so is the count it reported.
        assert final["status"] == "cancelled"
        assert answer[1]["invoicesIssued"] == count
    if final["status"] == "cancelled":
        assert final["current"] == count
        assert count < total
        assert (events[-1][1]["type"], events[-1][1]["current"]) == ("cancelled", count)
    else:
        assert count == total
        assert events[-1][1]["type"] == "complete"
    assert await server.stop() == 0
    assert integrity_check(server.db) == "ok"


@pytest.mark.slow
async def test_a_cancel_cut_short_by_a_crash_still_ends_the_stream_with_cancelled(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A crash between the cancel's commit and the workflow's unwinding (its "cancelled" event).

    SIGKILL lands in that window in about a third of the kills a few ms after
    POST /api/cancel (seen with test_sigkill_during_a_cancel[a_few_ms] before
    the engine learnt to unwind cancelled runs at open); here the window is
    made deterministic the way recovery tests do it: the run is stopped
    mid-batch, then the database gets exactly what the cancel commits first
    (durable/_runtime.py SET_CANCELLED) and nothing of what follows.
    """
    account = "cut_short"
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    run_id = await api.start(account, 3, "1h")  # invoice 1, then a long sleep

    async def sleeping() -> bool:
        _, detail = await api.request("GET", f"/api/runs/{run_id}")
        return any(op["kind"] == "sleep" and op["status"] == "waiting" for op in detail["timeline"])

    await until(sleeping, timeout=30, what="the run to sleep")
    await server.kill()
    conn = sqlite3.connect(server.db, isolation_level=None)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        assert "unwound" in columns, columns  # the journal records whether a cancelled run has unwound
        conn.execute(
            "UPDATE runs SET status = 'cancelled', completed_at = unixepoch('subsec'), unwound = 0 WHERE run_id = ?",
            (run_id,),
        )
    finally:
        conn.close()

    await server.start()
    final = await api.status(run_id)
    assert (final["status"], final["current"]) == ("cancelled", 1)
    events = await api.stream(run_id, timeout=30)
    # The contract: a cancelled batch's stream ends with its "cancelled" event.
    assert [data["type"] for _, data in events] == ["progress", "cancelled"], events
    assert events[-1][1]["current"] == 1
    assert await api.invoice_ids(run_id) == expected_ids(account, 1)
    assert await server.stop() == 0


# -- 2. the cancel guarantee ----------------------------------------------------------------


@pytest.mark.slow
async def test_cancel_at_random_moments_matches_stored_and_streamed(
    make_server: ServerFactory, http: aiohttp.ClientSession, rng: random.Random
) -> None:
    total, trials = 500, 6
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    issued_by_run: dict[str, tuple[str, int]] = {}
    for trial in range(trials):
        account = f"cancel_{trial}"
        run_id = await api.start(account, total, "0s")
        target = mid_batch_target(rng, total)
        events: list[SseEvent] = []
        async with http.get(f"{server.base}/api/stream/{run_id}") as response:
            await read_until(response, target, events)
            status, body = await api.cancel(run_id)
            events += [event async for event in sse_events(response)]
        if status == 409:  # the batch finished before the cancel arrived: nothing to compare
            assert body["currentStatus"] == "completed"
            continue
        assert status == 200, body
        issued = body["invoicesIssued"]
        issued_by_run[run_id] = (account, issued)
        assert (body["previousStatus"], body["currentStatus"]) == ("running", "cancelled")
        assert target <= issued < total
        ids = await api.invoice_ids(run_id)
        assert ids == expected_ids(account, issued)
        assert progress_numbers(events) == list(range(1, issued + 1))
        assert [index for index, _ in events] == list(range(issued + 1))
        assert events[-1][1]["type"] == "cancelled"
        assert events[-1][1]["current"] == issued
        final = await api.status(run_id)
        assert (final["status"], final["current"]) == ("cancelled", issued)
        # A second cancel is a no-op that reports the same count.
        status, again = await api.cancel(run_id)
        assert status == 200, again
        assert (again["previousStatus"], again["invoicesIssued"]) == ("cancelled", issued)
        assert len(stored_invoices(server.db, run_id)) == issued
    assert len(issued_by_run) >= trials - 1  # a cancel at invoice <= 300 of 500 rarely misses the batch
    assert await server.stop() == 0
    assert (api.errors_5xx, "Traceback" in server.log_text()) == (0, False)
    # The guarantee: nothing is issued after the cancel returned. The engine has closed, and a
    # cancelled, unwound run is never resumed, so what the file holds now is final.
    for run_id, (account, issued) in issued_by_run.items():
        assert stored_invoices(server.db, run_id) == [(f"INV-{account}-{n:04d}", n) for n in range(1, issued + 1)]
        assert sql_rows(server.db, "SELECT status, unwound FROM runs WHERE run_id = ?", (run_id,)) == [("cancelled", 1)]


# -- 3. load --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_200_concurrent_batches_all_complete(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    batches, total = 200, 10
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)

    async def one(i: int) -> tuple[str, list[SseEvent], list[str]]:
        run_id = await api.start(f"load_{i:03d}", total, "10ms")
        events = await api.stream(run_id, timeout=90)
        return run_id, events, await api.invoice_ids(run_id)

    results = await asyncio.gather(*(one(i) for i in range(batches)))
    assert len({run_id for run_id, _, _ in results}) == batches
    for i, (run_id, events, ids) in enumerate(results):
        assert_stream_of_completed_batch(events, total)
        assert ids == expected_ids(f"load_{i:03d}", total), run_id
    counts = sql_rows(server.db, "SELECT run_id, COUNT(*) FROM run_invoices GROUP BY run_id")
    assert sorted(count for _, count in counts) == [total] * batches
    assert len(stored_invoices(server.db)) == batches * total
    statuses = Counter([(await api.status(run_id))["status"] for run_id, _, _ in results])
    assert statuses == {"completed": batches}
    assert api.errors_5xx == 0


# -- 6. slow and vanished clients -------------------------------------------------------------


def stalled_client(server: ServerProcess, run_id: str) -> socket.socket:
    """A client that asks for the stream, then never reads, with a tiny receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: sets the window
    sock.connect(("127.0.0.1", server.port or 0))
    sock.sendall(f"GET /api/stream/{run_id} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    return sock


def server_holds_connection(server: ServerProcess, client: socket.socket) -> bool:
    """Whether the server process still has the socket of this client's connection open.

    Looked up in /proc: the server-side socket of the connection (local port =
    the server's, remote port = the client's) and the server's descriptors. A
    socket the server closed may linger in the kernel (FIN-WAIT) behind data
    the client never read, but the server no longer holds it.
    """
    client_port = client.getsockname()[1]
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (server.port, client_port) and fields[9] != "0":
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{server.pid}/fd")
    links = set()
    for fd in fd_dir.iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return bool(inodes & links)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_fanout_with_a_stalled_client(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    # 2,000 events (~450 KB) over 10+ s: far more than a stalled client's
    # buffers should hold, and the run is still going when its write timeout expires.
    total, delay = 2000, "5ms"
    server: ServerProcess = make_server("--sse-write-timeout", str(SSE_WRITE_TIMEOUT_S))
    await server.start()
    api = Api(http, server)
    rss_before = server.rss_mb()
    run_id = await api.start("fanout", total, delay)
    stalled = stalled_client(server, run_id)
    await until(lambda: server_holds_connection(server, stalled), timeout=10, what="the server to accept the stalled client")

    async def reader() -> list[SseEvent]:
        async with http.get(f"{server.base}/api/stream/{run_id}") as response:
            assert response.status == 200
            return parse_sse(await response.read())  # parsed at the end: the server sets the pace

    try:
        readers = [asyncio.create_task(reader()) for _ in range(SSE_CLIENTS)]
        # The stalled connection is dropped by the write timeout while the run
        # still streams, not merely closed once its stream ends.
        await until(
            lambda: not server_holds_connection(server, stalled),
            timeout=90,
            interval=0.1,
            what="the server to drop the stalled connection",
        )
        at_drop = await api.status(run_id)
        assert at_drop["status"] == "running", (
            f"the stalled connection was only released when the run ended ({at_drop['status']}, "
            f"{at_drop['current']} of {total} invoices), not after the {SSE_WRITE_TIMEOUT_S} s write timeout"
        )
        # The server stays responsive while it streams to the others.
        counts = await health_counts(api)
        assert counts["activeRuns"] == 1
        results = await asyncio.wait_for(asyncio.gather(*readers), timeout=100)
        for events in results:
            assert_stream_of_completed_batch(events, total)
    finally:
        stalled.close()
    await until(
        lambda: _counts_are(api, openStreams=0, streamSubscribers=0, queuedChunks=0, activeRuns=0),
        timeout=10,
        interval=0.1,
        what="streams and subscribers to be released",
    )
    # Memory stays bounded: the stalled client holds at most its socket buffers,
    # each reader at most its queue (1000 chunks of ~300 bytes).
    assert server.rss_mb() - rss_before < 150
    assert (await api.status(run_id))["status"] == "completed"
    assert api.errors_5xx == 0


async def _counts_are(api: Api, **expected: int) -> bool:
    counts = await health_counts(api)
    return all(counts[key] == value for key, value in expected.items())


@pytest.mark.slow
async def test_vanished_clients_leave_nothing_behind(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    clients = 50
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    # One invoice, then a long sleep: the run stays active, its stream open.
    run_id = await api.start("vanish", 3, "1h")
    await until(lambda: _counts_are(api, activeRuns=1), timeout=10, what="the run to be active")
    baseline_fds = server_fd_count(server)
    baseline = await health_counts(api)
    assert baseline == {"streamSubscribers": 0, "queuedChunks": 0, "activeRuns": 1, "openStreams": 0}

    for _ in range(3):  # cycles: a leak grows with each
        # Separate sessions, so closing them really closes the sockets.
        sessions = [client_session() for _ in range(clients)]
        responses = [await session.get(f"{server.base}/api/stream/{run_id}") for session in sessions]
        for response in responses:
            first = await anext(sse_events(response))
            assert first[0] == 0
        await until(
            lambda: _counts_are(api, openStreams=clients, streamSubscribers=clients),
            timeout=10,
            what="every stream to be open",
        )
        for response, session in zip(responses, sessions, strict=True):
            response.close()  # drop the connection without reading on
            await session.close()
        await until(
            lambda: _counts_are(api, openStreams=0, streamSubscribers=0, queuedChunks=0, activeRuns=1),
            timeout=15,
            interval=0.1,
            what="vanished clients' streams to be released",
        )
        await until(lambda: server_fd_count(server) <= baseline_fds, timeout=10, what="sockets to be closed")

    status, body = await api.cancel(run_id)
    assert status == 200, body
    assert body["invoicesIssued"] == 1
    await until(lambda: _counts_are(api, activeRuns=0), timeout=10, what="the run to end")


# -- 7. graceful shutdown ----------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_during_a_batch_with_open_streams(
    make_server: ServerFactory, http: aiohttp.ClientSession, rng: random.Random
) -> None:
    total, account, clients = 2000, "graceful", 5
    server: ServerProcess = make_server()
    await server.start()
    api = Api(http, server)
    run_id = await api.start(account, total, "0s")
    target = mid_batch_target(rng, total)
    responses = [await http.get(f"{server.base}/api/stream/{run_id}") for _ in range(clients)]
    seen: list[list[SseEvent]] = [[] for _ in range(clients)]
    try:
        await read_until(responses[0], target, seen[0])
        assert await server.stop(signal.SIGTERM, timeout=5.0) == 0
        # Every open response ends: the clients are not left hanging.
        for response, events in zip(responses, seen, strict=True):
            async with asyncio.timeout(5):
                try:
                    async for event in sse_events(response):
                        events.append(event)
                except aiohttp.ClientPayloadError:
                    pass  # cut off mid-chunk is an end too
        for events in seen:
            assert [index for index, _ in events] == list(range(len(events)))
            assert progress_numbers(events) == list(range(1, len(events) + 1))
    finally:
        for response in responses:
            response.close()
    assert "Traceback" not in server.log_text()
    stored = len(stored_invoices(server.db, run_id))
    assert target <= stored < total

    await server.start()
    final = await api.wait_terminal(run_id, timeout=90)
    assert (final["status"], final["current"]) == ("completed", total)
    assert await api.invoice_ids(run_id) == expected_ids(account, total)
    assert_batch_stored_once(server.db, run_id, account, total)
    assert_stream_of_completed_batch(await api.stream(run_id), total)
    assert await server.stop() == 0
    assert "Traceback" not in server.log_text()
    assert integrity_check(server.db) == "ok"
