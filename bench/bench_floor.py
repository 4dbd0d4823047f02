"""The machine's floor for the serial figures of ``bench_engine.py``: prints one JSON line.

    python bench/bench_floor.py [--quick]

The same shapes (starts awaited one by one while earlier runs step), the same
schema, rows and pragmas (WAL, ``synchronous=FULL``), with the least Python a
durable engine needs and nothing else: one writer thread that commits every
write queued since its last commit as one transaction, an asyncio future per
write resolved after COMMIT, a run's body as a task awaiting one commit per
step. No replay, no cancel, no timers, no ordering or failure handling, so an
engine cannot reach these figures, only approach them: the distance between a
``floor_*`` figure and its ``serial_*`` twin is the engine's own cost; a goal
above the floor is out of reach on this machine without weakening
durability (each acknowledged write waits for its fsync).

Figures: ``floor_1000x20_steps_per_s``, ``floor_200x10_steps_per_s``,
``floor_one_workflow_steps_per_s`` (1 x 5,000), ``floor_start_ms`` (p50/p99
of 1,000 starts of a run that does nothing), and ``floor_commit_ms`` (p50 of
one step's INSERT and COMMIT made directly on the loop thread, so no thread
hop at all: the fsync itself), each with its ``_cpu_steal_pct``. The four
serial figures also give ``_loop_busy_pct``, the loop thread's CPU time as a
share of the wall time, measured as ``bench_engine.py`` measures its own: the
loop's CPU time per step (busy share / 100 / steps per second) of the two
benches side by side is the engine's Python cost per step.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from machine import StealMeter

from durable._journal import Journal, Statement
from durable._schema import MIGRATIONS

Write = tuple[list[Statement], asyncio.Future[None]]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    return conn


class BareWriter:
    """Group commit on a thread, nothing more: every queued write in one transaction."""

    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._inbox: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="floor-writer")
        self._thread.start()

    def commit(self, statements: list[Statement]) -> asyncio.Future[None]:
        future = self._loop.create_future()
        self._inbox.put((statements, future))
        return future

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while (first := self._inbox.get()) is not None:
            batch = [first]
            stop = False
            while not self._inbox.empty():
                more = self._inbox.get_nowait()
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._conn.execute("BEGIN IMMEDIATE")
            for statements, _ in batch:
                for sql, params in statements:
                    self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
            self._loop.call_soon_threadsafe(_resolve, [future for _, future in batch])
            if stop:
                return


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        future.set_result(None)


class BareRuns:
    """Runs of ``n`` steps each: a started row, one op row per step, a completed row."""

    def __init__(self, writer: BareWriter) -> None:
        self._writer = writer
        self._count = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, steps: int) -> None:
        self._count += 1
        run_id = f"wrun_{self._count:026d}"
        now = time.time()
        await self._writer.commit([Journal.new_run(run_id, "bench.steps", orjson.dumps([steps]), now)])
        self.tasks.append(asyncio.get_running_loop().create_task(self._body(run_id, steps)))

    async def _body(self, run_id: str, steps: int) -> None:
        for seq in range(steps):
            began = time.time()
            result = orjson.dumps(seq)
            await self._writer.commit([Journal.step_completed(run_id, seq, "bench.noop", result, 1, began, time.time(), False)])
        await self._writer.commit([Journal.run_ended(run_id, "completed", b"null", None, time.time())])


async def serial_steps(db: Path, runs: int, steps: int) -> tuple[float, list[float], float]:
    """Steps/s over the figure, each start's latency (ms), and the loop thread's CPU time as a share of the wall time (%)."""
    writer = BareWriter(connect(db), asyncio.get_running_loop())
    try:
        bare = BareRuns(writer)
        starts = []
        t0, cpu0 = time.perf_counter(), time.thread_time()
        for _ in range(runs):
            s0 = time.perf_counter()
            await bare.start(steps)
            starts.append((time.perf_counter() - s0) * 1000)
        await asyncio.gather(*bare.tasks)
        wall = time.perf_counter() - t0
        return runs * steps / wall, starts, 100 * (time.thread_time() - cpu0) / wall
    finally:
        writer.close()


def commit_on_the_loop(db: Path, count: int) -> list[float]:
    """One op row per transaction, on this thread: each commit's time (ms)."""
    conn = connect(db)
    out = []
    for seq in range(count):
        began = time.perf_counter()
        conn.execute(*Journal.step_completed("wrun_0", seq, "bench.noop", b"1", 1, time.time(), time.time(), False))
        out.append((time.perf_counter() - began) * 1000)
    conn.close()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main(quick: bool) -> dict[str, Any]:
    k = 10 if quick else 1
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, runs, steps in (("1000x20", 1000 // k, 20), ("200x10", 200 // k, 10), ("one_workflow", 1, 5000 // k)):
            with StealMeter() as steal:
                rate, _, loop_busy = await serial_steps(d / f"{name}.db", runs, steps)
            out[f"floor_{name}_steps_per_s"] = round(rate)
            out[f"floor_{name}_loop_busy_pct"] = round(loop_busy, 1)
            out[f"floor_{name}_cpu_steal_pct"] = steal.percent
        with StealMeter() as steal:
            _, starts, loop_busy = await serial_steps(d / "start.db", 1000 // k, 0)
        out["floor_start_ms"] = {"p50": round(pct(starts, 0.5), 3), "p99": round(pct(starts, 0.99), 3)}
        out["floor_start_loop_busy_pct"] = round(loop_busy, 1)
        out["floor_start_cpu_steal_pct"] = steal.percent
        with StealMeter() as steal:
            commits = commit_on_the_loop(d / "commit.db", 2000 // k)
        out["floor_commit_ms"] = {"p50": round(pct(commits, 0.5), 3), "p99": round(pct(commits, 0.99), 3)}
        out["floor_commit_cpu_steal_pct"] = steal.percent
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(orjson.dumps(asyncio.run(main(parser.parse_args().quick))).decode(), flush=True)
