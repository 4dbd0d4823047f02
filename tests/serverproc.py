"""``python server.py`` as a subprocess, and small HTTP/SSE clients for it.

Shared by ``tests/test_reliability.py`` and ``bench/soak.py`` (which puts this
folder on ``sys.path``). Everything talks to 127.0.0.1 only.

- ``ServerProcess``: start on a free port (``--port 0``; the real port is read
  from the ``Listening on`` line, so there is no race for the port), SIGKILL,
  SIGTERM with a deadline, RSS from ``/proc``, the stderr log.
- ``sse_events``: the ``(id, data)`` events of an SSE response as they arrive.
- ``until``: await a condition with a deadline instead of sleeping blindly.
- ``Api``: the JSON routes the reliability scenarios use, counting requests
  and 5xx answers.
- ``stored_invoices``: what the ``invoices`` table really holds, read with a
  plain ``sqlite3`` connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from proc import until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JSON_HEADERS = {"Content-Type": "application/json"}
LISTENING = "Listening on "

Event = tuple[int, dict[str, Any]]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One ``server.py`` subprocess on 127.0.0.1; start it again on the same database after a stop."""

    def __init__(
        self,
        db: Path,
        stderr_path: Path,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.stderr_path = stderr_path
        self.args = list(args)
        self.env = env
        self.port: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        assert self.port is not None, "the server has not been started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait for its ``Listening on`` line."""
        assert not self.running, "already running"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with self.stderr_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--db",
                str(self.db),
                *self.args,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        assert self.process.stdout is not None
        try:
            line = (await asyncio.wait_for(self.process.stdout.readline(), timeout)).decode().strip()
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"server.py printed nothing within {timeout} s; stderr:\n{self.stderr_tail()}") from None
        if not line.startswith(LISTENING + "http://127.0.0.1:"):
            code = await self._reap(5.0)
            raise RuntimeError(f"server.py did not start (exit {code}, stdout {line!r}); stderr:\n{self.stderr_tail()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.starts += 1

    async def _reap(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        self.process = None
        return code

    async def kill(self) -> int | None:
        """SIGKILL: the process dies at once, mid-whatever; returns its exit status."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        return await self._reap(30.0)

    async def terminate(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send ``sig`` and wait up to ``timeout`` s: (exit code or None if it had to be killed, seconds)."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        self.process.send_signal(sig)
        try:
            code: int | None = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            code = None
            self.process.kill()
            await self.process.wait()
        elapsed = loop.time() - began
        self.process = None
        return code, elapsed

    def rss_mb(self) -> float:
        """The server's resident memory (VmRSS), in MiB; 0 when it is not running."""
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

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The ``(id, data)`` events of an SSE response as they arrive; comments are skipped."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if "data" in fields:
                yield int(fields["id"]), orjson.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def parse_sse(body: bytes) -> list[Event]:
    """The ``(id, data)`` events of a complete SSE body (cheaper than parsing line by line as it arrives)."""
    events: list[Event] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        fields: dict[bytes, bytes] = {}
        for line in block.split(b"\n"):
            if line and not line.startswith(b":"):
                name, _, value = line.partition(b":")
                fields[name] = value.removeprefix(b" ")
        if b"data" in fields:
            events.append((int(fields[b"id"]), orjson.loads(fields[b"data"])))
    return events


def progress_numbers(events: Sequence[Event]) -> list[int]:
    """``current`` of each progress event, in stream order."""
    return [data["current"] for _, data in events if data.get("type") == "progress"]


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

    async def stream(self, run_id: str, start_index: int = 0, timeout: float = 60.0) -> list[Event]:
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


def stored_invoices(db: Path, run_id: str | None = None) -> list[tuple[str, int]]:
    """``(invoice_id, n)`` rows of the ``invoices`` table (of one run), read with plain sqlite3."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        if run_id is None:
            rows = conn.execute("SELECT invoice_id, n FROM invoices ORDER BY invoice_id").fetchall()
        else:
            rows = conn.execute("SELECT invoice_id, n FROM invoices WHERE run_id = ? ORDER BY invoice_id", (run_id,)).fetchall()
    finally:
        conn.close()
    return [(str(invoice_id), int(n)) for invoice_id, n in rows]


def integrity_check(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def expected_ids(account_id: str, count: int) -> list[str]:
    return [f"INV-{account_id}-{n:04d}" for n in range(1, count + 1)]
