"""``python server.py`` as a real subprocess, driven over HTTP like the README walkthrough."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A ``server.py`` subprocess on a loopback port."""

    def __init__(self, db: Path, stderr_path: Path) -> None:
        self.db = db
        self.stderr_path = stderr_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.stderr_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "server.py",
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        assert line.decode().strip() == f"Listening on {self.base}", line

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout=5)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    instance = Server(tmp_path / "data" / "invoices.db", tmp_path / "stderr.log")
    await instance.start()
    try:
        yield instance
    finally:
        instance.kill()
        if instance.process is not None:
            await instance.process.wait()


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The (id, data) events of an SSE response, as they arrive."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if fields:
                yield int(fields["id"]), orjson.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_walkthrough_cancel_stop_and_restart(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        started = await http.post(
            f"{server.base}/api/start",
            data=orjson.dumps({"accountId": "acct_e2e", "total": 20, "delay": "200ms"}),
            headers=JSON,
        )
        assert started.status == 200
        run_id = (await started.json())["runId"]

        stream = await http.get(f"{server.base}/api/stream/{run_id}")
        assert stream.headers["Content-Type"] == "text/event-stream"
        received: list[tuple[int, dict[str, Any]]] = []
        feed = events(stream)
        async for event in feed:
            received.append(event)
            if len(received) == 3:
                break

        cancelled = await http.post(f"{server.base}/api/cancel", data=orjson.dumps({"runId": run_id}), headers=JSON)
        assert cancelled.status == 200
        body = await cancelled.json()
        issued = body["invoicesIssued"]
        assert (body["previousStatus"], body["currentStatus"]) == ("running", "cancelled")
        assert 3 <= issued < 20

        received += [event async for event in feed]
        assert [index for index, _ in received] == list(range(issued + 1))
        assert [data["type"] for _, data in received] == ["progress"] * issued + ["cancelled"]
        assert received[-1][1]["current"] == issued
        assert received[-1][1]["message"] == f"Invoice batch cancelled after {issued} of 20 invoices"

        status = await (await http.get(f"{server.base}/api/status", params={"runId": run_id})).json()
        assert (status["status"], status["current"], status["total"]) == ("cancelled", issued, 20)
        invoices = await (await http.get(f"{server.base}/api/runs/{run_id}/invoices")).json()
        assert [invoice["invoiceId"] for invoice in invoices["invoices"]] == [
            f"INV-acct_e2e-{n:04d}" for n in range(1, issued + 1)
        ]

    assert await server.stop() == 0
    assert "Traceback" not in server.stderr

    await server.start()  # same database, same port
    async with aiohttp.ClientSession() as http:
        status = await (await http.get(f"{server.base}/api/status", params={"runId": run_id})).json()
        assert (status["status"], status["current"]) == ("cancelled", issued)
    assert await server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.stderr


async def test_sigterm_ends_open_streams_and_the_batch_resumes_on_restart(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        started = await http.post(
            f"{server.base}/api/start",
            data=orjson.dumps({"accountId": "acct_resume", "total": 3, "delay": "300ms"}),
            headers=JSON,
        )
        run_id = (await started.json())["runId"]
        streams = [await http.get(f"{server.base}/api/stream/{run_id}") for _ in range(3)]
        for stream in streams:
            first = await anext(events(stream))
            assert first[0] == 0

        assert await server.stop() == 0
        for stream in streams:  # each open response ended with the server
            await asyncio.wait_for(stream.read(), timeout=5)
    assert "Traceback" not in server.stderr

    await server.start()
    async with aiohttp.ClientSession() as http:
        stream = await http.get(f"{server.base}/api/stream/{run_id}")
        received = [event async for event in events(stream)]
        assert [index for index, _ in received] == [0, 1, 2, 3]
        assert [data["type"] for _, data in received] == ["progress", "progress", "progress", "complete"]
        invoices = await (await http.get(f"{server.base}/api/runs/{run_id}/invoices")).json()
        assert invoices["count"] == 3
    assert await server.stop() == 0
    assert "Traceback" not in server.stderr


async def test_port_in_use_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "server.py",
        "--port",
        str(server.port),
        "--db",
        str(tmp_path / "other.db"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert b"Traceback" not in err
    assert b"server.py:" in err
