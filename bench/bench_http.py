"""HTTP figures of the invoicing service; prints one JSON line.

Starts ``python server.py`` as a subprocess on a free 127.0.0.1 port, with the
tests' launcher (``ServerProcess`` of tests/harness.py), on a fresh database in
a temporary directory (default engine settings, so ``synchronous=FULL``), then
measures over real HTTP from this process:

- ``batch_10k_s``: wall time from sending ``POST /api/start`` for a batch of
  10,000 invoices at delay ``0s`` until ``GET /api/status`` reports it
  ``completed`` (polled every 20 ms, so up to 20 ms pessimistic).
- ``batch_cpu_steal_pct``: the share of CPU time the hypervisor took during
  that batch (``machine.py``).
- ``cancel_sent_at_issued`` / ``cancel_answer_issued`` / ``issued_after_cancel``
  / ``cancel_latency_ms``: another batch of 10,000 invoices at delay ``0s``
  (account ``bench_cancel``), followed on ``GET /api/stream/{runId}``; once
  2,000 of its progress events have arrived, ``POST /api/cancel``.
  ``cancel_sent_at_issued`` is how many progress events the client had
  parsed when it sent the cancel (the server had issued at least that many),
  ``cancel_answer_issued`` the answer's ``invoicesIssued``, documented as
  final, and ``issued_after_cancel`` the count of
  ``GET /api/runs/{runId}/invoices``, read once the stream has ended and
  ``GET /api/status`` says ``cancelled``, minus that answer: 0 unless an
  invoice went out after the answer. ``cancel_latency_ms`` is the cancel's
  round trip, which the server answers once the workflow has stopped, so it
  includes the invoice steps in flight finishing.
- ``start_requests_per_s``: 50 concurrent clients send ``POST /api/start``
  (1 invoice, delay ``0s``) until 3,000 requests got their 200; requests per
  second over that span. The server runs those workflows meanwhile, as it
  would in real use. ``start_errors`` counts non-200 answers.
- ``sse_fanout_p99_ms`` / ``sse_clients_missing_events``: one run (100
  invoices, 50 ms apart) streamed to 500 concurrent SSE clients. Latency is
  write-to-receipt: the moment a client has parsed the event (the tests' SSE
  parser) minus the invoice's stored ``issuedAt``, which the step stamps just before it
  writes the invoice and the event in one commit, so the figure includes the
  commit (fsync), fan-out, the socket and client parsing. ``issuedAt`` has
  millisecond resolution and is truncated, which can only make latencies look
  larger. Events issued before every client was connected are left out of
  the latency (those are replayed history, not live delivery) but are still
  checked for completeness: a client is "missing events" unless it received
  ids 0..100 exactly once, in order, ending with ``complete``.

Server and clients share this machine's cores, so the figures are an upper
bound of what the server alone needs. Every phase is bounded in time; the
script stops the server and exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Api, ServerProcess, sse_events
from machine import StealMeter

JSON = {"Content-Type": "application/json"}


async def post_start(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> tuple[int, str | None]:
    async with http.post(f"{base}/api/start", data=orjson.dumps(body), headers=JSON) as response:
        if response.status != 200:
            await response.read()
            return response.status, None
        return 200, (await response.json())["runId"]


async def wait_status(http: aiohttp.ClientSession, base: str, run_id: str, deadline: float) -> str:
    while True:
        async with http.get(f"{base}/api/status", params={"runId": run_id}) as response:
            status: str = (await response.json())["status"]
        if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def bench_batch(http: aiohttp.ClientSession, base: str, total: int) -> float | None:
    began = time.perf_counter()
    code, run_id = await post_start(http, base, {"accountId": "bench_batch", "total": total, "delay": "0s"})
    if run_id is None:
        raise RuntimeError(f"start failed with {code}")
    status = await wait_status(http, base, run_id, time.monotonic() + 60)
    elapsed = time.perf_counter() - began
    return round(elapsed, 3) if status == "completed" else None


async def bench_cancel(api: Api, total: int, cancel_after: int) -> dict[str, int | float]:
    """Cancel a batch once ``cancel_after`` of its progress events arrived: what was seen, answered and stored."""
    run_id = await api.start("bench_cancel", total, "0s")
    progress = 0
    reached = asyncio.Event()

    async def follow() -> None:
        # Counts on while the cancel is under way, so that at the cancel the count
        # is every event the client has parsed, not just the one that crossed the mark.
        nonlocal progress
        try:
            async with api.http.get(f"{api.server.base}/api/stream/{run_id}") as response:
                async for event in sse_events(response):
                    if event.data["type"] == "progress":
                        progress += 1
                        if progress >= cancel_after:
                            reached.set()
        finally:
            reached.set()  # a stream that ended short must not leave the cancel waiting

    async with asyncio.timeout(120), asyncio.TaskGroup() as group:
        group.create_task(follow())
        await reached.wait()
        sent_at = progress
        if sent_at < cancel_after:
            raise RuntimeError(f"the stream of {run_id} ended after {sent_at} progress events, before the cancel")
        began = time.perf_counter()
        code, answer = await api.cancel(run_id)
        latency_ms = (time.perf_counter() - began) * 1000
        if code != 200:
            raise RuntimeError(f"cancel of {run_id} answered {code}: {answer}")
    # The group waited for the stream to end: after its "cancelled" event.
    final = await api.wait_terminal(run_id, timeout=10)
    if final["status"] != "cancelled":
        raise RuntimeError(f"run {run_id} ended {final['status']} after its cancel")
    stored = len(await api.invoice_ids(run_id))
    answered: int = answer["invoicesIssued"]
    return {
        "cancel_sent_at_issued": sent_at,
        "cancel_answer_issued": answered,
        "issued_after_cancel": stored - answered,
        "cancel_latency_ms": round(latency_ms, 1),
    }


async def bench_starts(http: aiohttp.ClientSession, base: str, requests: int, clients: int) -> tuple[float, int]:
    sent = 0
    errors = 0

    async def client(index: int) -> None:
        nonlocal sent, errors
        while sent < requests:
            sent += 1
            code, _ = await post_start(http, base, {"accountId": f"bench_start_{index}", "total": 1, "delay": "0s"})
            if code != 200:
                errors += 1

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), timeout=60)
    elapsed = time.perf_counter() - began
    return round(requests / elapsed, 1), errors


async def wait_idle(http: aiohttp.ClientSession, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = 0
        for status in ("pending", "running"):
            async with http.get(f"{base}/api/runs", params={"status": status, "limit": "1"}) as response:
                busy += len((await response.json())["runs"])
        if not busy:
            return
        await asyncio.sleep(0.1)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def bench_fanout(base: str, clients: int, events: int, delay: str) -> tuple[float | None, int]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        _, run_id = await post_start(http, base, {"accountId": "bench_fanout", "total": events, "delay": delay})
        assert run_id is not None
        connected = 0
        all_connected = asyncio.Event()
        received: list[list[tuple[int, str, float]]] = [[] for _ in range(clients)]

        async def client(index: int) -> None:
            nonlocal connected
            async with http.get(f"{base}/api/stream/{run_id}") as response:
                connected += 1
                if connected == clients:
                    all_connected.set()
                seen = received[index]
                async for event in sse_events(response):
                    seen.append((event.id, event.data["type"], time.time()))

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.wait_for(all_connected.wait(), timeout=60)
        live_from = time.time()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)

        async with http.get(f"{base}/api/runs/{run_id}/invoices") as response:
            invoices = (await response.json())["invoices"]
    issued = {invoice["n"] - 1: _epoch(invoice["issuedAt"]) for invoice in invoices}

    expected_ids = list(range(events + 1))
    missing = 0
    latencies: list[float] = []
    for seen in received:
        if [index for index, _, _ in seen] != expected_ids or seen[-1][1] != "complete":
            missing += 1
        for index, kind, at in seen:
            stamp = issued.get(index)
            if kind == "progress" and stamp is not None and stamp > live_from:
                latencies.append((at - stamp) * 1000)
    if not latencies:
        return None, missing
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return round(p99, 1), missing


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "bench.db", Path(tmp) / "server.log")
        await server.start()
        base = server.base
        exit_code: int | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), timeout=timeout) as http:
                with StealMeter() as steal:
                    batch = await bench_batch(http, base, args.batch_total)
                cancel = await bench_cancel(Api(http, server), args.cancel_total, args.cancel_after)
                rps, errors = await bench_starts(http, base, args.start_requests, args.start_clients)
                await wait_idle(http, base, 60)
            p99, missing = await bench_fanout(base, args.sse_clients, args.sse_events, args.sse_delay)
        finally:
            try:
                exit_code = await server.stop()
            except AssertionError:  # it ignored SIGTERM and was killed
                exit_code = None
    return {
        "batch_total": args.batch_total,
        "batch_10k_s": batch,
        "batch_cpu_steal_pct": steal.percent,
        "cancel_total": args.cancel_total,
        **cancel,
        "start_requests": args.start_requests,
        "start_requests_per_s": rps,
        "start_errors": errors,
        "sse_clients": args.sse_clients,
        "sse_events": args.sse_events + 1,
        "sse_fanout_p99_ms": p99,
        "sse_clients_missing_events": missing,
        "server_exit_code": exit_code,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-total", type=int, default=10_000)
    parser.add_argument("--cancel-total", type=int, default=10_000)
    parser.add_argument("--cancel-after", type=int, default=2_000)
    parser.add_argument("--start-requests", type=int, default=3_000)
    parser.add_argument("--start-clients", type=int, default=50)
    parser.add_argument("--sse-clients", type=int, default=500)
    parser.add_argument("--sse-events", type=int, default=100)
    parser.add_argument("--sse-delay", default="50ms")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result), flush=True)
