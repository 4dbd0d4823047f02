"""Run the invoicing service: ``python server.py [--host H] [--port P] [--db PATH] [--token T]``.

Defaults come from the environment (``HOST``, ``PORT``, ``INVOICES_DB``,
``INVOICES_TOKEN``), then ``127.0.0.1:3000`` and ``./data/invoices.db``.
SIGINT or SIGTERM stops accepting connections, ends open event streams, closes
the engine (sleeping runs resume at the next start) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path

from aiohttp import web

from durable import DatabaseLocked, tune_gc
from invoices import create_app
from invoices.security import is_loopback_bind

log = logging.getLogger("invoices.server")

SHUTDOWN_TIMEOUT = 2.0  # seconds handlers get to finish; the whole stop stays under 5 s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Durable bulk invoicing service")
    parser.add_argument(
        "--host",
        default=env.get("HOST", "127.0.0.1"),
        help="address to bind (env HOST, default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env.get("PORT", "3000")),
        help="TCP port (env PORT, default 3000; 0 picks a free one)",
    )
    parser.add_argument(
        "--db",
        default=env.get("INVOICES_DB", str(Path("data") / "invoices.db")),
        help="SQLite file (env INVOICES_DB, default ./data/invoices.db)",
    )
    parser.add_argument(
        "--token",
        default=env.get("INVOICES_TOKEN") or None,
        help="require 'Authorization: Bearer <token>' on /api/ routes (env INVOICES_TOKEN)",
    )
    parser.add_argument(
        "--sse-write-timeout",
        type=float,
        default=float(env.get("INVOICES_SSE_WRITE_TIMEOUT", "30")),
        help="seconds a blocked event-stream write may wait before the client is dropped "
        "(env INVOICES_SSE_WRITE_TIMEOUT, default 30)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    db_path = Path(args.db)  # its folder is made by the engine, once the SQLite is known to fit
    app = create_app(db_path, token=args.token, host=args.host, sse_write_timeout=args.sse_write_timeout)
    if not is_loopback_bind(args.host) and not args.token:
        log.warning(
            "listening on %s without a token: anyone who can reach this address can start and "
            "cancel batches; pass --token or INVOICES_TOKEN",
            args.host,
        )
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runner.setup()  # opens the engine, which resumes unfinished runs
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else args.port  # real port for --port 0
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Listening on http://{host}:{port}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        # The handlers stay while cleaning up: a second Ctrl-C must not
        # interrupt the engine's close with a KeyboardInterrupt traceback.
        try:
            await runner.cleanup()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    tune_gc()  # thousands of sleeping runs must not stall the loop in full collections
    try:
        asyncio.run(serve(args))
    except (OSError, sqlite3.Error, DatabaseLocked) as exc:  # the port is taken, the file is held or unreadable ...
        print(f"server.py: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
