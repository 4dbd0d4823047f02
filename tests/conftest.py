from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from harness import Api, ServerFactory, ServerProcess, client_session

from durable import Engine


@pytest.fixture
def rng() -> random.Random:
    """Randomness a failing run can replay: the seed is printed, and ``RELIABILITY_SEED=<seed>`` reuses it."""
    seed = int(os.environ.get("RELIABILITY_SEED") or random.randrange(2**32))
    print(f"RELIABILITY_SEED={seed}")
    return random.Random(seed)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[Engine]:
    async with Engine(db_path) as eng:
        yield eng


@pytest.fixture
def sql(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the journal, for checking what is really committed."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """``make_server(*args)``: a ``server.py`` not started yet, on ``tmp_path/invoices-<n>.db``.

    At the end every server still running gets SIGTERM and must exit 0 in time.
    """
    servers: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        n = len(servers)
        server = ServerProcess(tmp_path / f"invoices-{n}.db", tmp_path / f"server-{n}.log", args=args)
        servers.append(server)
        return server

    yield make
    problems = []
    for server in servers:
        if server.running:
            try:
                code = await server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
            else:
                if code != 0:
                    problems.append(f"server.py exited with {code}; log:\n{server.log_tail()}")
    assert problems == [], "\n".join(problems)


@pytest.fixture
async def server(make_server: ServerFactory) -> ServerProcess:
    """A started ``server.py`` with the default arguments; ``make_server`` stops it at the end (SIGTERM, exit 0)."""
    srv = make_server()
    await srv.start()
    return srv


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The invoicing API of ``server``, over one client session."""
    async with client_session() as http:
        yield Api(http, server)
