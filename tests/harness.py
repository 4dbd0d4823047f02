"""The test harness: subprocesses, the SSE parser, waiting on a condition, and reading the journal.

Every test (and ``bench/soak.py`` and ``bench/bench_http.py``, which put this
folder on ``sys.path``) uses these, and nothing else, for:

- ``until``: the one poll-until helper, for state another connection or
  process makes true. Bounded by a deadline; a timeout names what it waited for.
- ``before_the_timer``: an operation that must not wait for an hour-long
  timer (a cancel of a sleeping run), awaited with a bound far from both.
- ``mid_batch_target``: how far into a batch a crash test kills the server.
- ``ServerProcess``: ``python server.py`` on 127.0.0.1. The first start passes
  ``--port 0`` and reads the real port from the ``Listening on`` line (no race
  for a port picked in advance); later starts reuse that port, so a restarted
  server keeps its URL. SIGTERM with a deadline, SIGKILL, RSS, the stderr log.
- ``spawn_child`` / ``read_line`` / ``kill_child``: a script of tests/ as a
  child process to SIGKILL (crash tests). ``ServerProcess`` starts through
  the same ``spawn``, the only place that creates a subprocess.
- ``SseParser`` and its two front ends: ``sse_events`` (as a response
  arrives) and ``parse_sse`` (a whole body). Strict: an event of this API has
  exactly one ``id`` line and its ``data``, and a stream never ends inside one.
- ``Api`` / ``client_session``: the JSON routes of a ``ServerProcess``.
- ``stored_invoices`` / ``sql_rows`` / ``integrity_check`` / ``make_unfinished``:
  the database file read (or edited, as a crash would leave it) with a plain
  ``sqlite3`` connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, TypeVar

import aiohttp
import orjson

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
JSON_HEADERS = {"Content-Type": "application/json"}
LISTENING = "Listening on http://127.0.0.1:"
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0
# What "at once" means against a timer of an hour: an operation that waits for the timer
# does not return within this; one that does not returns in milliseconds, on a loaded
# machine too, so the bound can neither pass a wrong engine nor fail a right one.
BEFORE_THE_TIMER_S = 30.0

T = TypeVar("T")


# -- waiting -------------------------------------------------------------------------


async def until(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "condition", *, interval: float = 0.002
) -> None:
    """Wait for a condition that another connection or process makes true (there is nothing to await).

    ``check`` may be sync or async. Raises ``AssertionError`` naming ``what`` after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def before_the_timer(operation: Awaitable[T], what: str) -> T:
    """``operation``'s result; fails naming ``what`` if it waits for the hour-long timer it should interrupt."""
    try:
        return await asyncio.wait_for(operation, BEFORE_THE_TIMER_S)
    except TimeoutError:
        raise AssertionError(f"{what} did not return within {BEFORE_THE_TIMER_S:g} s: it waited for its timer") from None


def mid_batch_target(rng: random.Random, total: int) -> int:
    """How many invoices (or corrections) the client waits to see before it kills (or stops) the server.

    The kill must land before the batch ends, and a client falls behind the
    server as the batch goes on: in one run an SSE reader had parsed 1,519
    events when all 2,000 were issued, and the kill found the batch complete.
    The first half of the batch leaves the client room to be twice as slow.
    """
    return rng.randint(1, total // 2)


# -- subprocesses ----------------------------------------------------------------------


async def spawn(
    script: Path, *args: str, stderr: IO[bytes] | int | None = None, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``python <script> <args>`` from the repository root, with the checkout and tests/ importable; stdout is a pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **(env or {})},
    )


async def read_line(process: asyncio.subprocess.Process, timeout: float = 30.0) -> str:
    """The next line the process prints (without its newline); ``AssertionError`` on EOF or timeout."""
    assert process.stdout is not None
    try:
        raw = await asyncio.wait_for(process.stdout.readline(), timeout)
    except TimeoutError:
        raise AssertionError(f"pid {process.pid} printed no line within {timeout} s") from None
    assert raw.endswith(b"\n"), f"pid {process.pid} ended its output (exit {process.returncode}) before a line: {raw!r}"
    return raw.decode().removesuffix("\n")


async def spawn_child(script: str, *args: str) -> asyncio.subprocess.Process:
    """``tests/<script>`` as a child process, to read its progress lines from and to kill."""
    return await spawn(TESTS / script, *args)


async def spawn_crash_child(db: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """``tests/crash_child.py DB ARGS``, once it printed ``started <run id>``: the process and the run id."""
    process = await spawn_child("crash_child.py", str(db), *args)
    word, _, run_id = (await read_line(process)).partition(" ")
    assert (word, run_id.startswith("wrun_")) == ("started", True), (word, run_id)
    return process, run_id


async def kill_child(process: asyncio.subprocess.Process) -> None:
    """SIGKILL, and wait until the process is gone."""
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


class ServerDidNotStart(RuntimeError):
    """``server.py`` exited, or printed something else, instead of its ``Listening on`` line."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class ServerProcess:
    """One ``server.py`` subprocess on 127.0.0.1; start it again on the same database (and port) after a stop."""

    def __init__(
        self,
        db: Path,
        log_path: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.db = db
        self.log_path = log_path
        self.args = list(args)
        self.env = env
        self.port = port  # 0 until the first start: the server picks one, later starts keep it
        self.process: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        assert self.port, "the server has not been started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start the server and wait for its ``Listening on`` line; ``ServerDidNotStart`` if it exits instead."""
        assert not self.running, "already running"
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db), *self.args]
        with self.log_path.open("ab") as log:
            process = await spawn(ROOT / "server.py", *args, stderr=log, env=self.env)
        self.process = process
        assert process.stdout is not None
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout)).decode().strip()
        except TimeoutError:
            await self.kill()
            raise ServerDidNotStart(f"server.py printed nothing within {timeout} s; log:\n{self.log_tail()}", None) from None
        if not line.startswith(LISTENING):
            code = await self._reap(SHUTDOWN_TIMEOUT)
            raise ServerDidNotStart(f"server.py did not start (exit {code}, stdout {line!r}); log:\n{self.log_tail()}", code)
        port = int(line.removeprefix(LISTENING))
        assert self.port in (0, port), f"asked for port {self.port}, got {port}"
        self.port = port

    async def _reap(self, timeout: float) -> int | None:
        """Wait for the exit (SIGKILL after ``timeout``); the exit status, None if it had to be killed."""
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = SHUTDOWN_TIMEOUT) -> int:
        """Send ``sig`` and return the exit status; ``AssertionError`` (after a SIGKILL) if it takes over ``timeout`` s."""
        assert self.process is not None, "the server is not running"
        if self.process.returncode is None:
            self.process.send_signal(sig)
        code = await self._reap(timeout)
        assert code is not None, f"server.py ignored signal {sig} for {timeout} s and was killed; log:\n{self.log_tail()}"
        return code

    async def kill(self) -> int | None:
        """SIGKILL: the process dies at once, mid-whatever; its exit status (None if it was not running)."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        return await self._reap(30.0)

    def rss_mb(self) -> float:
        """The server's resident memory (VmRSS) in MiB; 0 when it is not running."""
        if not self.running:
            return 0.0
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_text(self) -> str:
        """What every start of this server wrote to stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class ServerFactory(Protocol):
    """The ``make_server`` fixture: ``make_server(*args)`` is a ``ServerProcess`` not started yet."""

    def __call__(self, *args: str) -> ServerProcess: ...


# -- server-sent events ------------------------------------------------------------------


class SseEvent(NamedTuple):
    """One event of a run's stream: its index (the ``id`` line) and its JSON ``data``."""

    id: int
    data: dict[str, Any]


class SseParser:
    """Lines in, events out: fields until a blank line; lines starting with ':' are comments."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        self._fields: dict[str, list[str]] = {}

    def feed(self, line: str) -> SseEvent | None:
        """Take one line (without its line break); the event it completes, if any."""
        if line == "":
            fields, self._fields = self._fields, {}
            if not fields:
                return None
            assert set(fields) == {"id", "data"} and len(fields["id"]) == 1, f"not an event of this API: {fields}"
            return SseEvent(int(fields["id"][0]), orjson.loads("\n".join(fields["data"])))
        if line.startswith(":"):
            self.comments.append(line)
            return None
        name, _, value = line.partition(":")
        self._fields.setdefault(name, []).append(value.removeprefix(" "))
        return None

    def end(self) -> None:
        """The stream ended: it must not have ended inside an event."""
        assert self._fields == {}, f"the stream ended inside an event: {self._fields}"


async def sse_lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The lines of an event stream as they arrive, without their line breaks."""
    while True:
        raw = await response.content.readline()
        if not raw:
            return
        yield raw.decode().removesuffix("\n").removesuffix("\r")


async def sse_events(response: aiohttp.ClientResponse, parser: SseParser | None = None) -> AsyncIterator[SseEvent]:
    """The events of an SSE response as they arrive; pass a ``parser`` to see the comments too."""
    parser = parser or SseParser()
    async for line in sse_lines(response):
        event = parser.feed(line)
        if event is not None:
            yield event
    parser.end()


def parse_sse(body: bytes, parser: SseParser | None = None) -> list[SseEvent]:
    """The events of a complete SSE body (cheaper than parsing it as it arrives)."""
    parser = parser or SseParser()
    lines = body.decode().split("\n")
    assert lines[-1] == "", f"the body does not end with a line break: {lines[-1]!r}"
    events = [event for line in lines[:-1] if (event := parser.feed(line.removesuffix("\r"))) is not None]
    parser.end()
    return events


def progress_numbers(events: Sequence[SseEvent]) -> list[int]:
    """``current`` of each progress event, in stream order."""
    return [int(data["current"]) for _, data in events if data.get("type") == "progress"]


# -- the JSON API of a ServerProcess ----------------------------------------------------------


class Api:
    """The routes the scenarios use; counts requests and 5xx answers."""

    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.http = http
        self.server = server
        self.requests = 0
        self.errors_5xx = 0

    def count_response(self, status: int) -> None:
        self.requests += 1
        if status >= 500:
            self.errors_5xx += 1

    async def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request."""
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"] = JSON_HEADERS
        async with self.http.request(method, self.server.base + path, **kwargs) as response:
            payload = await response.read()
            self.count_response(response.status)
            return response.status, orjson.loads(payload) if payload else None

    async def start(self, account_id: str, total: int, delay: str) -> str:
        status, body = await self.request("POST", "/api/start", {"accountId": account_id, "total": total, "delay": delay})
        assert status == 200, (status, body)
        run_id: str = body["runId"]
        return run_id

    async def status(self, run_id: str) -> dict[str, Any]:
        status, body = await self.request("GET", "/api/status", params={"runId": run_id})
        assert status == 200, (status, body)
        result: dict[str, Any] = body
        return result

    async def cancel(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return await self.request("POST", "/api/cancel", {"runId": run_id})

    async def invoice_ids(self, run_id: str) -> list[str]:
        """Invoice ids of a run via ``GET /api/runs/{id}/invoices``, in the order served."""
        status, body = await self.request("GET", f"/api/runs/{run_id}/invoices")
        assert status == 200, (status, body)
        ids = [invoice["invoiceId"] for invoice in body["invoices"]]
        assert body["count"] == len(ids), body["count"]
        return ids

    async def healthz(self) -> tuple[int, Any]:
        return await self.request("GET", "/healthz")

    async def wait_terminal(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/api/status`` until the run is completed, failed or cancelled."""
        latest: dict[str, Any] = {}

        async def done() -> bool:
            latest.update(await self.status(run_id))
            return latest["status"] in ("completed", "failed", "cancelled")

        await until(done, timeout=timeout, interval=0.05, what=f"run {run_id} to end")
        return latest

    async def stream(self, run_id: str, start_index: int = 0, timeout: float = 60.0) -> list[SseEvent]:
        """The whole stream of a run from ``start_index``, until the server ends it."""
        async with asyncio.timeout(timeout):
            async with self.http.get(
                f"{self.server.base}/api/stream/{run_id}", params={"startIndex": str(start_index)}
            ) as response:
                self.count_response(response.status)
                assert response.status == 200, response.status
                return [event async for event in sse_events(response)]


def client_session(limit: int = 0) -> aiohttp.ClientSession:
    """A session without the default cap of 100 connections (``limit=0``), no proxies from the environment."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), trust_env=False)


# -- the database file, read with a plain sqlite3 connection --------------------------------


def sql_rows(db: Path, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query on the database file, read with a connection of its own."""
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return [tuple(row) for row in conn.execute(query, params).fetchall()]


def stored_invoices(db: Path, run_id: str | None = None) -> list[tuple[str, int]]:
    """``(invoice_id, n)`` rows of the ``invoices`` table (of one run), by invoice id."""
    if run_id is None:
        rows = sql_rows(db, "SELECT invoice_id, n FROM invoices ORDER BY invoice_id")
    else:
        rows = sql_rows(db, "SELECT invoice_id, n FROM invoices WHERE run_id = ? ORDER BY invoice_id", (run_id,))
    return [(str(invoice_id), int(n)) for invoice_id, n in rows]


def integrity_check(db: Path) -> str:
    return str(sql_rows(db, "PRAGMA integrity_check")[0][0])


def expected_ids(account_id: str, count: int) -> list[str]:
    return [f"INV-{account_id}-{n:04d}" for n in range(1, count + 1)]


def make_unfinished(db: Path, run_id: str, delete_ops_from_seq: int | None = None) -> None:
    """What a crash leaves: the run still running, optionally without its operations from ``delete_ops_from_seq`` on."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE runs SET status = 'running', completed_at = NULL, output = NULL, error = NULL WHERE run_id = ?", (run_id,)
        )
        if delete_ops_from_seq is not None:
            conn.execute("DELETE FROM ops WHERE run_id = ? AND seq >= ?", (run_id, delete_ops_from_seq))
