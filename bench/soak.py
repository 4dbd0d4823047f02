"""Soak the invoicing service: crash, cancel and load scenarios, over and over; prints one JSON line.

    .venv/bin/python bench/soak.py                 # 300 s
    .venv/bin/python bench/soak.py --quick         # about 30 s
    .venv/bin/python bench/soak.py --duration 600 --seed 7

Every scenario runs ``python server.py`` as a subprocess on 127.0.0.1 (port
picked by the server) with databases in a temporary directory, and talks to
it over HTTP like tests/test_reliability.py, whose helpers it shares
(tests/harness.py). Scenarios take turns until the time is up:

- crash: a fresh database, a batch of 2,000 invoices at delay 0s, SIGKILL
  once a random number (1..1900) of invoices is issued, restart, let the
  batch finish. Counts ``duplicates`` (ids served twice, progress events for
  the same invoice twice) and ``missing`` (ids of 1..2000 absent, from the API
  and from the ``invoices`` table), and ``stream_mismatches`` (the stream from
  index 0 is not progress 1..2000 then ``complete``).
- cancel: on a long-lived server, a batch of 500 at 0s cancelled once a
  random number (1..300) of progress events arrived on its SSE stream. A
  ``cancel_mismatch`` is a trial where ``invoicesIssued`` from the cancel
  response, the invoices listed one second later, the progress events of
  the stream and the ``current`` of its final ``cancelled`` event are not
  all equal (or the stream is not 1..k in order). A cancel that arrives after
  the batch completed (409) is not a trial (``cancel_missed``).
- load: on the same server, 200 batches of 10 invoices at 10ms started
  concurrently; each must stream progress 1..10 then ``complete`` and list
  exactly its 10 invoices (``load_lost`` counts the ones that do not).

``requests`` counts HTTP requests (SSE included), ``5xx`` the answers >= 500.
``max_rss_mb`` is the largest VmRSS of any server process, sampled every
0.2 s from /proc/<pid>/status. ``integrity_failures`` counts databases whose
``PRAGMA integrity_check`` is not ``ok`` at the end. ``errors`` counts
scenarios that raised (a timeout, a refused request ...), with the first few
messages in ``error_samples``. Every wait is bounded; the script kills its
servers and exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import (  # noqa: E402
    Api,
    ServerProcess,
    SseEvent,
    client_session,
    expected_ids,
    integrity_check,
    progress_numbers,
    sse_events,
    stored_invoices,
    until,
)

CRASH_TOTAL = 2000
CANCEL_TOTAL = 500
LOAD_BATCHES = 200
LOAD_TOTAL = 10


class Soak:
    def __init__(self, workdir: Path, rng: random.Random) -> None:
        self.workdir = workdir
        self.rng = rng
        self.figures: Counter[str] = Counter()
        self.servers: list[ServerProcess] = []
        self.databases: list[Path] = []
        self.max_rss_mb = 0.0
        self.error_samples: list[str] = []
        self.apis: list[Api] = []
        self.trial = 0

    def server(self, name: str) -> ServerProcess:
        db = self.workdir / f"{name}.db"
        server = ServerProcess(db, self.workdir / f"{name}.stderr.log")
        self.servers.append(server)
        self.databases.append(db)
        return server

    def api(self, http: Any, server: ServerProcess) -> Api:
        api = Api(http, server)
        self.apis.append(api)
        return api

    def account(self, kind: str) -> str:
        self.trial += 1
        return f"{kind}_{self.trial:05d}"

    async def sample_rss(self) -> None:
        while True:
            for server in self.servers:
                self.max_rss_mb = max(self.max_rss_mb, server.rss_mb())
            await asyncio.sleep(0.2)

    def count_batch(self, ids: list[str], sql_ids: list[str], events: list[SseEvent], account: str, total: int) -> bool:
        """Add duplicates and missing invoices of a finished batch; True when it is exact."""
        expected = set(expected_ids(account, total))
        numbers = progress_numbers(events)
        duplicates = (len(ids) - len(set(ids))) + (len(sql_ids) - len(set(sql_ids))) + (len(numbers) - len(set(numbers)))
        missing = len(expected - set(ids)) + len(expected - set(sql_ids))
        self.figures["duplicates"] += duplicates
        self.figures["missing"] += missing
        in_order = (
            numbers == list(range(1, total + 1))
            and [index for index, _ in events] == list(range(total + 1))
            and events[-1][1]["type"] == "complete"
        )
        if not in_order:
            self.figures["stream_mismatches"] += 1
        return duplicates == 0 and missing == 0 and in_order

    # -- scenarios ----------------------------------------------------------------------

    async def crash(self, http: Any) -> None:
        server = self.server(f"crash-{self.trial + 1}")
        account = self.account("crash")
        await server.start()
        api = self.api(http, server)
        try:
            run_id = await api.start(account, CRASH_TOTAL, "0s")
            target = self.rng.randint(1, CRASH_TOTAL - 100)

            async def issued_enough() -> bool:
                return int((await api.status(run_id))["current"]) >= target

            await until(issued_enough, timeout=60, interval=0.005, what=f"{target} invoices")
            await server.kill()
            self.figures["kills"] += 1
            await server.start()
            final = await api.wait_terminal(run_id, timeout=120)
            if final["status"] != "completed":
                self.figures["crash_not_completed"] += 1
            ids = await api.invoice_ids(run_id)
            sql_ids = [invoice_id for invoice_id, _ in stored_invoices(server.db, run_id)]
            events = await api.stream(run_id, timeout=60)
            self.count_batch(ids, sql_ids, events, account, CRASH_TOTAL)
        finally:
            if server.running:
                await server.stop()

    async def cancel(self, http: Any, api: Api) -> None:
        server = api.server
        account = self.account("cancel")
        run_id = await api.start(account, CANCEL_TOTAL, "0s")
        target = self.rng.randint(1, 300)
        events: list[SseEvent] = []
        async with asyncio.timeout(60):
            async with http.get(f"{server.base}/api/stream/{run_id}") as response:
                api.count_response(response.status)
                async for event in sse_events(response):
                    events.append(event)
                    if event[1].get("type") == "progress" and event[1]["current"] >= target:
                        break
                status, body = await api.cancel(run_id)
                events += [event async for event in sse_events(response)]
        if status == 409:
            self.figures["cancel_missed"] += 1
            return
        if status != 200:
            raise RuntimeError(f"cancel answered {status}: {body}")
        self.figures["cancel_trials"] += 1
        issued = body["invoicesIssued"]
        await asyncio.sleep(1.0)  # the guarantee: what the cancel reported is final
        stored = len(await api.invoice_ids(run_id))
        numbers = progress_numbers(events)
        last = events[-1][1] if events else {}
        final_current = last.get("current") if last.get("type") == "cancelled" else None
        if not (issued == stored == len(numbers) == final_current and numbers == list(range(1, issued + 1))):
            self.figures["cancel_mismatches"] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(
                    f"cancel {run_id}: issued {issued}, stored {stored}, progress {len(numbers)}, final {final_current}"
                )

    async def load(self, http: Any, api: Api) -> None:
        accounts = [self.account("load") for _ in range(LOAD_BATCHES)]

        async def one(account: str) -> bool:
            run_id = await api.start(account, LOAD_TOTAL, "10ms")
            events = await api.stream(run_id, timeout=120)
            ids = await api.invoice_ids(run_id)
            sql_ids = [invoice_id for invoice_id, _ in stored_invoices(api.server.db, run_id)]
            return self.count_batch(ids, sql_ids, events, account, LOAD_TOTAL)

        results = await asyncio.gather(*(one(account) for account in accounts), return_exceptions=True)
        self.figures["load_batches"] += len(results)
        for result in results:
            if result is not True:
                self.figures["load_lost"] += 1
                if isinstance(result, BaseException):
                    self.note_error("load", result)

    def note_error(self, scenario: str, exc: BaseException) -> None:
        self.figures["errors"] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{scenario}: {type(exc).__name__}: {exc}"[:300])

    # -- the loop -----------------------------------------------------------------------

    async def run(self, duration: float) -> dict[str, Any]:
        began = time.monotonic()
        deadline = began + duration
        sampler = asyncio.create_task(self.sample_rss())
        try:
            async with client_session() as http:
                main = self.server("main")
                await main.start()
                main_api = self.api(http, main)
                scenarios: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("crash", lambda: self.crash(http)),
                    ("cancel", lambda: self.cancel(http, main_api)),
                    ("load", lambda: self.load(http, main_api)),
                    ("cancel", lambda: self.cancel(http, main_api)),
                ]
                turn = 0
                while time.monotonic() < deadline:
                    name, scenario = scenarios[turn % len(scenarios)]
                    turn += 1
                    try:
                        # A scenario never runs much past the deadline.
                        async with asyncio.timeout(max(30.0, deadline - time.monotonic() + 60)):
                            await scenario()
                    except Exception as exc:
                        self.note_error(name, exc)
                    self.figures[f"{name}_rounds"] += 1
                    if not main.running:  # it died: note it, start it again
                        self.figures["server_deaths"] += 1
                        await main.start()
                if main.running:
                    try:
                        await main.stop()
                    except AssertionError as exc:  # it ignored SIGTERM and was killed
                        self.note_error("shutdown", exc)
        finally:
            sampler.cancel()
            for server in self.servers:
                await server.kill()
        for db in self.databases:
            if db.exists() and integrity_check(db) != "ok":
                self.figures["integrity_failures"] += 1
        requests = sum(api.requests for api in self.apis)
        errors_5xx = sum(api.errors_5xx for api in self.apis)
        tracebacks = sum("Traceback" in server.log_text() for server in self.servers)
        figures = self.figures
        return {
            "duration_s": round(time.monotonic() - began, 1),
            "kills": figures["kills"],
            "duplicates": figures["duplicates"],
            "missing": figures["missing"],
            "cancel_trials": figures["cancel_trials"],
            "cancel_mismatches": figures["cancel_mismatches"],
            "requests": requests,
            "5xx": errors_5xx,
            "max_rss_mb": round(self.max_rss_mb, 1),
            "stream_mismatches": figures["stream_mismatches"],
            "cancel_missed": figures["cancel_missed"],
            "crash_not_completed": figures["crash_not_completed"],
            "load_batches": figures["load_batches"],
            "load_lost": figures["load_lost"],
            "integrity_failures": figures["integrity_failures"],
            "server_deaths": figures["server_deaths"],
            "servers_with_traceback": tracebacks,
            "errors": figures["errors"],
            "error_samples": self.error_samples,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to keep starting scenarios (default 300)")
    parser.add_argument("--quick", action="store_true", help="about 30 s")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random moments")
    args = parser.parse_args(argv)
    duration = 30.0 if args.quick else args.duration
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="invoices-soak-") as tmp:
        soak = Soak(Path(tmp), random.Random(seed))
        result = asyncio.run(soak.run(duration))
    print(json.dumps({**result, "seed": seed}), flush=True)
    bad = ("duplicates", "missing", "cancel_mismatches", "5xx", "stream_mismatches", "load_lost", "integrity_failures", "errors")
    return 1 if any(result[key] for key in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
