"""Stream benchmark: prints one JSON line of figures.

    python bench/bench_streams.py [--quick]

- ``stream_delivery_ms_p50`` / ``_p99``: a workflow writes 10,000 chunks, each carrying
  ``time.perf_counter()`` taken at its ``write()`` call, awaiting each write before the next;
  100 in-process readers, attached before the first chunk, record when they receive it.
  Latency is receipt minus write time over every (chunk, reader) pair, so it includes the
  commit (fsync) of the chunk: ``stream_write_ms_p50`` / ``_p99`` is that commit alone, as
  the writer sees it, and ``delivery_write_rate`` the chunks/s the writer reached.
- ``stream_chunks_per_s``: one workflow writing 20,000 small chunks, issuing them in
  ``asyncio.gather`` batches of 100, so the group commit stores a batch per commit.
- ``stream_chunks_per_s_sequential``: one workflow writing 10,000 small chunks, each write
  awaited before the next (one commit, so one fsync, per chunk).

Every figure runs against a fresh SQLite file in a temporary directory with the engine's
defaults (WAL, synchronous=FULL). ``--quick`` shrinks the counts for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from durable import Engine, Run, get_writable, workflow

READERS = 100
DELIVERY_CHUNKS = 10_000
PIPELINED_CHUNKS = 20_000
SEQUENTIAL_CHUNKS = 10_000
BATCH = 100

_gates: dict[str, asyncio.Event] = {}


@workflow(name="bench_streams.timed_writes")
async def timed_writes_wf(n: int) -> tuple[float, list[float]]:
    """Writes n timestamped chunks; returns the writer's chunks/s and each write's commit time (ms)."""
    w = get_writable()
    await w.write({"i": -1, "t": time.perf_counter()})  # readers attach on this one, then the writes start
    await _gates["go"].wait()
    commits = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await w.write({"i": i, "t": t})
        commits.append((time.perf_counter() - t) * 1000.0)
    return n / (time.perf_counter() - start), commits


@workflow(name="bench_streams.sequential")
async def sequential_wf(n: int) -> float:
    w = get_writable()
    t0 = time.perf_counter()
    for i in range(n):
        await w.write(i)
    return time.perf_counter() - t0


@workflow(name="bench_streams.pipelined")
async def pipelined_wf(n: int, batch: int) -> float:
    w = get_writable()
    t0 = time.perf_counter()
    for first in range(0, n, batch):
        await asyncio.gather(*(w.write(i) for i in range(first, min(n, first + batch))))
    return time.perf_counter() - t0


def pct(values: array[float] | list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _reader(run: Run, n: int, attached: asyncio.Event, out: array[float]) -> int:
    count = 0
    values = run.readable()
    try:
        first = await anext(values)
        assert first["i"] == -1, first
        attached.set()
        async for value in values:
            out.append((time.perf_counter() - value["t"]) * 1000.0)
            if value["i"] != count:
                raise AssertionError(f"reader expected chunk {count}, got {value['i']}")
            count += 1
            if count == n:
                break
    finally:
        await values.aclose()
    return count


async def delivery(db: Path, n: int, readers: int) -> dict[str, Any]:
    """Write-to-receipt latency (ms) over all (chunk, reader) pairs, and the writer's own figures."""
    _gates["go"] = asyncio.Event()
    async with Engine(db) as engine:
        run = await engine.start(timed_writes_wf, n)
        latencies = [array("d") for _ in range(readers)]
        attached = [asyncio.Event() for _ in range(readers)]
        tasks = [asyncio.create_task(_reader(run, n, attached[k], latencies[k])) for k in range(readers)]
        for event in attached:
            await event.wait()
        _gates["go"].set()
        counts = await asyncio.gather(*tasks)
        assert counts == [n] * readers, counts
        rate, commits = await run.result()
    everything = array("d")
    for part in latencies:
        everything.extend(part)
    return {
        "stream_delivery_ms_p50": round(pct(everything, 0.50), 3),
        "stream_delivery_ms_p99": round(pct(everything, 0.99), 3),
        "stream_delivery_ms_max": round(max(everything), 3),
        "delivery_pairs": len(everything),
        "delivery_write_rate": round(rate),
        "stream_write_ms_p50": round(pct(commits, 0.50), 3),
        "stream_write_ms_p99": round(pct(commits, 0.99), 3),
    }


async def throughput(db: Path, wf: Any, *args: Any) -> float:
    async with Engine(db) as engine:
        run = await engine.start(wf, *args)
        elapsed: float = await run.result()
        n: int = args[0]
        rows = await engine.fetchall("SELECT COUNT(*), MIN(idx), MAX(idx) FROM chunks WHERE run_id = ?", (run.run_id,))
        assert rows == [(n, 0, n - 1)], rows
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts, for a smoke run")
    opts = parser.parse_args()
    k = 10 if opts.quick else 1
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        d = Path(tmp)
        out.update(await delivery(d / "delivery.db", DELIVERY_CHUNKS // k, READERS))
        pipelined = await throughput(d / "pipelined.db", pipelined_wf, PIPELINED_CHUNKS // k, BATCH)
        sequential = await throughput(d / "sequential.db", sequential_wf, SEQUENTIAL_CHUNKS // k)
        out["stream_chunks_per_s"] = round(pipelined)
        out["stream_chunks_per_s_sequential"] = round(sequential)
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    asyncio.run(main())
