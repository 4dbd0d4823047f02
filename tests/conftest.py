from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from durable import Engine


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
