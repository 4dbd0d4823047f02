"""Hook benchmark: prints one JSON line of figures.

    python bench/bench_hooks.py [--quick]

- ``resume_latency_ms_p50`` / ``_p99``: 1,000 runs each wait on a hook;
  ``engine.resume_hook`` is called for one run at a time. Latency is the time
  the workflow body got the payload minus the time just before
  ``resume_hook`` was called: the payload's commit (``synchronous=FULL``),
  the hand-over to the run and the body's task step. In-process.
- ``http_resumes_per_s``: a server subprocess (this script with ``--serve``)
  mounts ``durable.web`` on 127.0.0.1 with 1,000 runs iterating over their
  hooks; 64 concurrent clients send ``POST /hooks/{token}`` (JSON payloads,
  tokens in turn) until 6,000 requests got their 200. ``http_errors`` counts
  other answers. Server and clients share this machine's cores.

Every figure uses a fresh SQLite file in a temporary directory and the engine's
defaults; the GC is tuned as server.py does. ``--quick`` shrinks the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
from aiohttp import web

from durable import Engine, create_hook, get_resources, tune_gc, workflow
from durable.web import make_app

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Arrivals:
    """What the bench's workflows tell it: when each run's body got its payload."""

    at: dict[int, float] = field(default_factory=dict)
    events: dict[int, asyncio.Event] = field(default_factory=dict)
    hooks_created: int = 0
    all_created: asyncio.Event = field(default_factory=asyncio.Event)
    target: int = 0


@workflow(name="bench.hooks.wait")
async def wait_once(i: int) -> None:
    arrivals = get_resources(Arrivals)
    hook = create_hook(token=f"lat-{i}")
    _created(arrivals)
    await hook
    arrivals.at[i] = time.perf_counter()
    arrivals.events[i].set()


@workflow(name="bench.hooks.listen")
async def listen(i: int) -> None:
    hook = create_hook(token=f"http-{i}")
    _created(get_resources(Arrivals))
    async for _ in hook:
        pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _registered(engine: Engine, arrivals: Arrivals, count: int) -> None:
    """Once every body created its hook, and those creations committed (writes commit in order)."""
    await arrivals.all_created.wait()
    await engine.execute("CREATE TABLE IF NOT EXISTS bench_barrier (x INTEGER)")
    assert len(await engine.list_hooks()) == count


def _created(arrivals: Arrivals) -> None:
    arrivals.hooks_created += 1
    if arrivals.hooks_created == arrivals.target:
        arrivals.all_created.set()


async def resume_latency(db: Path, runs: int) -> list[float]:
    arrivals = Arrivals(target=runs)
    arrivals.events = {i: asyncio.Event() for i in range(runs)}
    engine = Engine(db, workflows=[wait_once], resources=arrivals)
    async with engine:
        for i in range(runs):
            await engine.start(wait_once, i)
        await _registered(engine, arrivals, runs)
        out = []
        for i in range(runs):
            t0 = time.perf_counter()
            await engine.resume_hook(f"lat-{i}", {"n": i})
            await arrivals.events[i].wait()
            out.append((arrivals.at[i] - t0) * 1000)
        return out


# -- HTTP: the server side (a subprocess) --------------------------------------------


async def serve(db: str, port: int, runs: int) -> None:
    tune_gc()
    arrivals = Arrivals(target=runs)
    engine = Engine(db, workflows=[listen], resources=arrivals)
    app = web.Application()
    app.add_subapp("/workflows/", make_app(engine))
    runner = web.AppRunner(app, access_log=None)
    async with engine:
        for i in range(runs):
            await engine.start(listen, i)
        await _registered(engine, arrivals, runs)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
        finally:
            await runner.cleanup()


# -- HTTP: the client side --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def http_resumes(db: Path, runs: int, requests: int, clients: int) -> tuple[float, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(db), str(port), str(runs),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert line.strip() == b"ready", line
        return await _drive(f"http://127.0.0.1:{port}/workflows/hooks/http-", runs, requests, clients)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _drive(base: str, runs: int, requests: int, clients: int) -> tuple[float, int]:
    sent = 0
    ok = 0
    errors = 0
    headers = {"Content-Type": "application/json"}

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal sent, ok, errors
        while sent < requests:
            n = sent
            sent += 1
            async with http.post(f"{base}{n % runs}", data=orjson.dumps({"n": n}), headers=headers) as response:
                await response.read()
                if response.status == 200:
                    ok += 1
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(clients))), 300)
        elapsed = time.perf_counter() - t0
    return ok / elapsed, errors


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=3, metavar=("DB", "PORT", "RUNS"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        db, port, runs = opts.serve
        await serve(db, int(port), int(runs))
        return
    tune_gc()
    k = 10 if opts.quick else 1
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as tmp:
        d = Path(tmp)
        runs = 1000 // k
        latencies = await resume_latency(d / "latency.db", runs)
        out["runs_waiting"] = runs
        out["resume_latency_ms_p50"] = round(pct(latencies, 0.5), 3)
        out["resume_latency_ms_p99"] = round(pct(latencies, 0.99), 3)
        rate, errors = await http_resumes(d / "http.db", runs, 6000 // k, 64)
        out["http_resumes_per_s"] = round(rate)
        out["http_requests"] = 6000 // k
        out["http_errors"] = errors
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    asyncio.run(main())
