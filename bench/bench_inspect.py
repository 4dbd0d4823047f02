"""Inspection benchmark: prints one JSON line of figures.

    python bench/bench_inspect.py [--quick]

- ``inspect run`` on a run of 10,000 steps (made through the public API): the
  read and the rendering in this process, and ``python -m durable inspect run``
  end to end (interpreter start included). Target: under 1 s.
- the run list on a journal of 100,000 runs (the schema made by an Engine, the
  rows inserted in bulk): newest first, by status, by workflow, a keyset page deep
  in the list, and ``python -m durable inspect runs --json`` end to end. Target:
  under 200 ms.

Each figure is the median of several tries, in milliseconds; ``plans`` shows the
index each list query uses. ``--quick`` shrinks the counts for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from durable import Engine, step, workflow
from durable._cli_show import Clock, run_lines
from durable._journal_read import JournalReader

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = [f"bench.flow_{i}" for i in range(5)]
STATUSES = ["completed"] * 7 + ["failed", "cancelled", "running"]


@step(name="bench.unit")
async def unit(i: int) -> int:
    return i


@workflow(name="bench.many_steps")
async def many_steps(n: int) -> int:
    results = await asyncio.gather(*(unit(i) for i in range(n)))
    return sum(results)


def median_ms(fn: Callable[[], Any], tries: int) -> float:
    fn()  # warm: the first read pulls the pages into the OS cache
    times = []
    for _ in range(tries):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 2)


def cli_ms(*args: str, tries: int = 3) -> float:
    command = [sys.executable, "-m", "durable", *args]
    return median_ms(
        lambda: subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), tries
    )


async def make_long_run(db: Path, steps: int) -> str:
    async with Engine(db, workflows=[many_steps], synchronous="OFF") as engine:
        run = await engine.start(many_steps, steps)
        await run.result()
        return run.run_id


def bench_run(db: Path, run_id: str, tries: int) -> dict[str, float]:
    with JournalReader(db) as reader:

        def show() -> None:
            detail = reader.run(run_id)
            assert detail is not None
            run_lines(detail, reader.timeline(run_id), reader.streams(run_id), Clock())

        return {"read_and_render_ms": median_ms(show, tries), "cli_ms": cli_ms("--db", str(db), "inspect", "run", run_id)}


async def make_many_runs(db: Path, count: int) -> None:
    async with Engine(db):
        pass  # the schema and its indexes, as a server would leave them
    conn = sqlite3.connect(db)
    base = time.time() - count
    rows = (
        (f"wrun_bench{i:08d}", WORKFLOWS[i % len(WORKFLOWS)], b"[[],{}]", STATUSES[(i * 7) % len(STATUSES)], base + i)
        for i in range(count)
    )
    with conn:
        conn.executemany(
            "INSERT INTO runs (run_id, workflow_name, input, status, created_at, started_at, completed_at)"
            " VALUES (?, ?, ?, ?, ?, ?+0.001, ?+0.5)",
            ((*row, row[4], row[4]) for row in rows),
        )
    conn.close()


def plan(db: Path, where: str, params: tuple[Any, ...]) -> str:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        f"EXPLAIN QUERY PLAN SELECT run_id FROM runs {where} ORDER BY created_at DESC, run_id DESC LIMIT 51", params
    ).fetchall()
    conn.close()
    return "; ".join(str(row[-1]) for row in rows)


def bench_list(db: Path, count: int, tries: int) -> dict[str, Any]:
    with JournalReader(db) as reader:
        middle = reader.list_runs(limit=1, after=f"{time.time() - count / 2!r}:wrun_").runs[0].cursor
        figures: dict[str, Any] = {
            "newest_ms": median_ms(lambda: reader.list_runs(), tries),
            "by_status_ms": median_ms(lambda: reader.list_runs(status="failed"), tries),
            "by_workflow_ms": median_ms(lambda: reader.list_runs(workflow=WORKFLOWS[3]), tries),
            "by_status_and_workflow_ms": median_ms(lambda: reader.list_runs("cancelled", WORKFLOWS[2]), tries),
            "deep_page_ms": median_ms(lambda: reader.list_runs(after=middle), tries),
            "workflow_names_ms": median_ms(reader.workflow_names, tries),
        }
    figures["cli_ms"] = cli_ms("--db", str(db), "inspect", "runs", "--json")
    figures["plans"] = {
        "newest": plan(db, "", ()),
        "by_status": plan(db, "WHERE status = ?", ("failed",)),
        "by_workflow": plan(db, "WHERE workflow_name = ?", (WORKFLOWS[3],)),
        "by_status_and_workflow": plan(db, "WHERE status = ? AND workflow_name = ?", ("cancelled", WORKFLOWS[2])),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    args = parser.parse_args()
    steps, runs, tries = (500, 5_000, 3) if args.quick else (10_000, 100_000, 7)
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        long_db, many_db = Path(tmp) / "long.db", Path(tmp) / "many.db"
        began = time.perf_counter()
        run_id = asyncio.run(make_long_run(long_db, steps))
        built_run_s = time.perf_counter() - began
        asyncio.run(make_many_runs(many_db, runs))
        result = {
            "steps": steps,
            "runs": runs,
            "build_long_run_s": round(built_run_s, 2),
            "inspect_run": bench_run(long_db, run_id, tries),
            "run_list": bench_list(many_db, runs, tries),
            "cpus": os.cpu_count(),
        }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
