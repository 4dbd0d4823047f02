"""Engine benchmark: prints one JSON line of figures.

    python bench/bench_engine.py [--quick] [--only serial|burst] [--shape 1000x20 ...] [--tune-gc]

Every figure runs against a fresh SQLite file in a temporary directory with the
engine's defaults (WAL, synchronous=FULL) and CPython's default GC thresholds
(``--tune-gc`` applies ``durable.tune_gc()`` first, as server.py does). ``--quick``
shrinks the counts for a smoke run; the issue's figures are for the full counts.

``serial_*``: the service's shape. Runs are started one after another, each
start awaited, while the runs started before step, sleep and wake:

- ``serial_1000x20`` / ``serial_200x10`` / ``serial_one_workflow`` (1 x 5,000):
  ``_steps_per_s`` over the whole figure (first start to last result),
  ``_start_ms`` and ``_step_ms`` (each step as its workflow body sees it) as
  p50/p99, and ``_worst_stall_ms``. Then where the time went: ``_loop_busy_pct``
  (the loop thread's CPU time) and ``_writer_busy_pct`` (the writer thread
  committing), as shares of the wall time; ``_writes_per_commit``,
  ``_commit_ms`` (a batch's commit) and ``_first_write_wait_ms`` (how long a
  batch's first write waited for its commit to begin). Busy shares that add up
  to about 100 % mean the two threads take turns; a first-write wait beyond
  the time the loop needs to queue the rest of the batch is the writer waiting
  for the interpreter lock, which the loop keeps while it has work.
- ``serial_10k_sleep_lateness_ms``: 10,000 workflows each sleeping 1 s; in the
  body, the time after the sleep returns minus the time before it was called,
  minus 1 s (p50/p99).
- ``serial_start_ms``: 1,000 starts of a workflow that does nothing.

``burst_*``: every run of a figure started at once with ``gather`` (the
CPU-bound case). Then cancel latency (of sleeping runs), recovery of 10,000
sleeping runs at open, queue dispatch and a fan-out of 1,000 children.

``--shape`` runs only the serial figures named (``1000x20``, ``200x10``,
``one_workflow``, ``10k_sleep``, ``start``), to profile one shape, e.g.
``py-spy record --threads --idle -- python bench/bench_engine.py --shape 1000x20``.

A ``_worst_stall_ms`` is the longest the event loop went, while its figure
ran, between two looks at its sockets and timers (one loop iteration's
callbacks): what a due timer or an arriving request could have waited. The
loop's selector measures it, so measuring wakes nothing. A ``_cpu_steal_pct``
is the share of CPU time the hypervisor took meanwhile (``machine.py``): a
figure measured with a high one says more about the neighbours than the code.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import selectors
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from machine import StealMeter

from durable import Engine, sleep, start_child, step, tune_gc, workflow

lateness: list[float] = []
woken = {"count": 0, "target": 0}
all_woken = asyncio.Event()
reached = {"count": 0, "target": 0}
all_reached = asyncio.Event()


@step
async def noop(i: int) -> int:
    return i


step_latencies: list[float] = []  # ms, as the workflow body sees each step


@workflow(name="bench.steps")
async def steps_wf(n: int) -> int:
    for i in range(n):
        before = time.perf_counter()
        await noop(i)
        step_latencies.append((time.perf_counter() - before) * 1000)
    return n


@workflow(name="bench.nothing")
async def nothing_wf() -> None:
    return None


@workflow(name="bench.sleep")
async def sleep_wf(seconds: float) -> None:
    before = time.time()
    await sleep(seconds)
    lateness.append(time.time() - (before + seconds))
    woken["count"] += 1
    if woken["count"] == woken["target"]:
        all_woken.set()


@workflow(name="bench.park")
async def park_wf() -> None:
    pending = sleep("1h")
    reached["count"] += 1
    if reached["count"] >= reached["target"]:
        all_reached.set()
    await pending


body_started: dict[int, float] = {}
queue_open = asyncio.Event()


@workflow(name="bench.queued")
async def queued_wf(n: int) -> None:
    body_started[n] = time.perf_counter()
    await queue_open.wait()  # the first run holds the slot until every run is queued
    await noop(n)


@workflow(name="bench.child")
async def child_wf(n: int) -> int:
    for i in range(5):
        await noop(i)
    return n


@workflow(name="bench.fanout")
async def fanout_wf(count: int) -> int:
    children = await asyncio.gather(*(start_child(child_wf, i) for i in range(count)))
    return sum(await asyncio.gather(*(child.result() for child in children)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def seq_steps(db: Path, n: int) -> float:
    async with Engine(db) as engine:
        t0 = time.perf_counter()
        run = await engine.start(steps_wf, n)
        await run.result()
        return n / (time.perf_counter() - t0)


async def concurrent_steps(db: Path, runs: int, n: int) -> float:
    async with Engine(db) as engine:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*(engine.start(steps_wf, n) for _ in range(runs)))
        await asyncio.gather(*(h.result() for h in handles))
        return runs * n / (time.perf_counter() - t0)


async def start_latency(db: Path, n: int) -> tuple[list[float], float]:
    """``n`` runs of a workflow that does nothing, each start awaited: latencies (ms), worst stall."""
    async with Engine(db) as engine:
        out = []
        handles = []
        with StallMonitor() as stalls:
            for _ in range(n):
                t0 = time.perf_counter()
                handles.append(await engine.start(nothing_wf))
                out.append((time.perf_counter() - t0) * 1000)
            await asyncio.gather(*(h.result() for h in handles))
        return out, stalls.worst_ms


async def sleeping(db: Path, n: int) -> tuple[list[float], float]:
    lateness.clear()
    woken["count"], woken["target"] = 0, n
    all_woken.clear()
    async with Engine(db) as engine:
        # All at once: the wake-ups come in one burst, the hard case for lateness.
        await asyncio.gather(*(engine.start(sleep_wf, 1.0) for _ in range(n)))
        await asyncio.sleep(0.5)
        rss = rss_mb()
        # Counting wake-ups keeps 10,000 result() waiters out of the burst being measured.
        await all_woken.wait()
        return [x * 1000 for x in lateness], rss


async def cancel_latency(db: Path, n: int) -> list[float]:
    reached["count"], reached["target"] = 0, n
    all_reached.clear()
    async with Engine(db) as engine:
        handles = await asyncio.gather(*(engine.start(park_wf) for _ in range(n)))
        await all_reached.wait()
        await asyncio.sleep(0.1)  # let the last sleeps commit: cancel a run that is asleep
        out = []
        for h in handles:
            t0 = time.perf_counter()
            await h.cancel()
            out.append((time.perf_counter() - t0) * 1000)
        return out


async def recovery(db: Path, n: int) -> float:
    reached["count"], reached["target"] = 0, n
    all_reached.clear()
    async with Engine(db) as engine:
        await asyncio.gather(*(engine.start(park_wf) for _ in range(n)))
        await all_reached.wait()
    reached["count"] = 0
    all_reached.clear()
    t0 = time.perf_counter()
    engine = Engine(db)
    await engine.open()
    await all_reached.wait()
    elapsed = time.perf_counter() - t0
    await engine.close()
    return elapsed


# -- the service's shape: starts awaited one by one while earlier runs work --------------------


class TimedSelector(selectors.DefaultSelector):
    """The loop's selector, timing what the loop does between two of its selects."""

    def __init__(self) -> None:
        super().__init__()
        self.longest = 0.0  # seconds: the longest one loop iteration ran its callbacks
        self._returned: float | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        called = time.perf_counter()
        if self._returned is not None:
            self.longest = max(self.longest, called - self._returned)
        ready = super().select(timeout)
        self._returned = time.perf_counter()
        return ready


class TimedLoop(asyncio.SelectorEventLoop):
    """The bench's event loop: its selector measures stalls without waking it."""

    def __init__(self) -> None:
        self.timed_selector = TimedSelector()
        super().__init__(self.timed_selector)


class StallMonitor:
    """The worst event-loop stall while it runs: the longest the loop went without looking
    at its sockets and timers (one iteration's callbacks), as its selector saw it.

    A 1 ms timer measured this before: it saw a stall only as the lateness of its
    next tick, and woke an idle loop a thousand times a second to do so.
    """

    def __init__(self) -> None:
        self.worst_ms = 0.0

    def __enter__(self) -> StallMonitor:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, TimedLoop), "run the bench in a TimedLoop"
        self._selector = loop.timed_selector
        self._selector.longest = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.worst_ms = self._selector.longest * 1000


class CycleMeter:
    """Who was busy while a figure ran: the loop thread (its CPU time) and the writer thread
    (committing), as shares of the wall time, and how long a batch's first write waited
    for its commit to begin. Loop and writer taking turns add up to about 100 %."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.figures: dict[str, float] = {}

    def __enter__(self) -> CycleMeter:
        self._before = self._engine.stats()
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        cpu = time.thread_time() - self._cpu
        after = self._engine.stats()
        delta = {key: after[key] - self._before[key] for key in ("commits", "writes", "writer_busy_ns", "writer_wait_ns")}
        commits = max(delta["commits"], 1)
        self.figures = {
            "loop_busy_pct": round(100 * cpu / wall, 1),
            "writer_busy_pct": round(100 * delta["writer_busy_ns"] / 1e9 / wall, 1),
            "writes_per_commit": round(delta["writes"] / commits, 1),
            "commit_ms": round(delta["writer_busy_ns"] / 1e6 / commits, 3),
            "first_write_wait_ms": round(delta["writer_wait_ns"] / 1e6 / commits, 3),
        }


async def serial_steps(db: Path, runs: int, n: int) -> tuple[float, list[float], float, dict[str, float]]:
    """``runs`` workflows of ``n`` steps, each start awaited in turn: steps/s, start latencies (ms), worst stall, cycle.

    Each step's latency as the body saw it lands in ``step_latencies``.
    """
    step_latencies.clear()
    async with Engine(db) as engine:
        with StallMonitor() as stalls, CycleMeter(engine) as cycle:
            t0 = time.perf_counter()
            handles = []
            starts = []
            for _ in range(runs):
                s0 = time.perf_counter()
                handles.append(await engine.start(steps_wf, n))
                starts.append((time.perf_counter() - s0) * 1000)
            for handle in handles:
                await handle.result()
            elapsed = time.perf_counter() - t0
        return runs * n / elapsed, starts, stalls.worst_ms, cycle.figures


async def serial_sleeping(db: Path, n: int) -> tuple[list[float], float]:
    """``n`` workflows sleeping 1 s, started one by one: lateness (ms) in the body, worst stall."""
    lateness.clear()
    woken["count"], woken["target"] = 0, n
    all_woken.clear()
    async with Engine(db) as engine:
        with StallMonitor() as stalls:
            for _ in range(n):
                await engine.start(sleep_wf, 1.0)
            await all_woken.wait()
        return [x * 1000 for x in lateness], stalls.worst_ms


def figure(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 0.5), 3), "p99": round(pct(values, 0.99), 3)}


async def serial_steps_figures(d: Path, name: str, runs: int, n: int) -> dict[str, Any]:
    """steps/s, start and step latencies (p50/p99, ms) and the worst stall of one serial step figure."""
    rate, starts, stall, cycle = await serial_steps(d / f"{name}.db", runs, n)
    return {
        f"{name}_steps_per_s": round(rate),
        f"{name}_start_ms": figure(starts),
        f"{name}_step_ms": figure(step_latencies),
        f"{name}_worst_stall_ms": round(stall, 2),
        **{f"{name}_{key}": value for key, value in cycle.items()},
    }


async def serial_sleep_figures(d: Path, k: int) -> dict[str, Any]:
    gc.collect()
    late, stall = await serial_sleeping(d / "serial-sleep.db", 10000 // k)
    return {"serial_10k_sleep_lateness_ms": figure(late), "serial_10k_sleep_worst_stall_ms": round(stall, 2)}


async def serial_start_figures(d: Path, k: int) -> dict[str, Any]:
    starts, stall = await start_latency(d / "serial-start.db", 1000 // k)
    return {"serial_start_ms": figure(starts), "serial_start_worst_stall_ms": round(stall, 2)}


SERIAL_SHAPES: dict[str, Callable[[Path, int], Awaitable[dict[str, Any]]]] = {
    "1000x20": lambda d, k: serial_steps_figures(d, "serial_1000x20", 1000 // k, 20),
    "200x10": lambda d, k: serial_steps_figures(d, "serial_200x10", 200 // k, 10),
    "one_workflow": lambda d, k: serial_steps_figures(d, "serial_one_workflow", 1, 5000 // k),
    "10k_sleep": serial_sleep_figures,
    "start": serial_start_figures,
}


async def serial_figures(d: Path, k: int, shapes: list[str]) -> dict[str, Any]:
    """The figures of a server's shape (each start awaited while earlier runs step, sleep and wake)."""
    out: dict[str, Any] = {}
    for shape in shapes:
        with StealMeter() as steal:
            out.update(await SERIAL_SHAPES[shape](d, k))
        out[f"serial_{shape}_cpu_steal_pct"] = steal.percent
    return out


async def queue_dispatch(db: Path, n: int) -> tuple[list[float], list[float]]:
    """Slot freed (a run of a concurrency-1 queue stopped) to the next run launched, and to its body's first line.

    The first figure is the scheduler's own latency; the second adds the next run's
    ``running`` commit (one fsync). The two ends are timed by wrapping the queue
    scheduler's release and launch on this engine instance: bench instrumentation only.
    """
    body_started.clear()
    queue_open.clear()
    async with Engine(db) as engine:
        engine.queue("bench", concurrency=1)
        queues = engine._runs.queues
        freed: list[float] = []
        launched: dict[str, float] = {}
        release, launch = queues.release, queues._launch

        def timed_release(run_id: str) -> None:
            freed.append(time.perf_counter())
            release(run_id)

        def timed_launch(run: Any) -> None:
            launched[run.run_id] = time.perf_counter()
            launch(run)

        queues.release = timed_release  # type: ignore[method-assign]
        queues._launch = timed_launch
        runs = [await engine.start(queued_wf.with_options(queue="bench"), i) for i in range(n)]
        queue_open.set()
        await asyncio.gather(*(run.result() for run in runs))
        # Run i was launched by the release of run i - 1, the i-th release.
        gaps = [(launched[runs[i].run_id] - freed[i - 1]) * 1000 for i in range(1, n)]
        to_body = [(body_started[i] - freed[i - 1]) * 1000 for i in range(1, n)]
        return gaps, to_body


async def child_fanout(db: Path, count: int) -> float:
    async with Engine(db) as engine:
        t0 = time.perf_counter()
        run = await engine.start(fanout_wf, count)
        assert await run.result() == sum(range(count))
        return time.perf_counter() - t0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["burst", "serial"], help="one family of figures (default: both)")
    parser.add_argument("--tune-gc", action="store_true", help="durable.tune_gc() first, as server.py does")
    parser.add_argument(
        "--shape", choices=list(SERIAL_SHAPES), action="append", help="only this serial figure (repeatable; for a profiler)"
    )
    opts = parser.parse_args()
    if opts.tune_gc:
        tune_gc()
    k = 10 if opts.quick else 1
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        d = Path(tmp)
        if opts.only != "burst":
            out.update(await serial_figures(d, k, opts.shape or list(SERIAL_SHAPES)))
            gc.collect()
        if opts.only == "serial" or opts.shape:
            print(orjson.dumps(out).decode())
            return
        with StealMeter() as steal:
            out.update(await burst_figures(d, k))
        out["burst_cpu_steal_pct"] = steal.percent
        out["pid_fds"] = len(os.listdir("/proc/self/fd"))
    print(orjson.dumps(out).decode())


async def burst_figures(d: Path, k: int) -> dict[str, Any]:
    """Every run of a figure started at once with gather (the CPU-bound case), and the engine's other figures."""
    out: dict[str, Any] = {}
    with StallMonitor() as stalls:
        out["burst_one_workflow_steps_per_s"] = round(await seq_steps(d / "seq.db", 5000 // k))
    out["burst_one_workflow_worst_stall_ms"] = round(stalls.worst_ms, 2)
    with StallMonitor() as stalls:
        out["burst_1000x20_steps_per_s"] = round(await concurrent_steps(d / "conc.db", 1000 // k, 20))
    out["burst_1000x20_worst_stall_ms"] = round(stalls.worst_ms, 2)
    gc.collect()  # each scenario starts without the previous ones' garbage
    with StallMonitor() as stalls:
        late, rss = await sleeping(d / "sleep.db", 10000 // k)
    out["burst_10k_sleep_lateness_ms"] = figure(late)
    out["burst_10k_sleep_worst_stall_ms"] = round(stalls.worst_ms, 2)
    out["rss_mb_10k_sleeping"] = round(rss, 1)
    out["cancel_latency_ms"] = figure(await cancel_latency(d / "cancel.db", 1000 // k))
    out["recovery_10k_sleeping_s"] = round(await recovery(d / "recover.db", 10000 // k), 3)
    gaps, to_body = await queue_dispatch(d / "queue.db", 1000 // k)
    out["queue_dispatch_ms"] = figure(gaps)
    out["queue_dispatch_to_body_ms"] = figure(to_body)
    out["child_fanout_1000_s"] = round(await child_fanout(d / "fanout.db", 1000 // k), 3)
    return out


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=TimedLoop) as runner:
        runner.run(main())
