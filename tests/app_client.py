"""The invoicing app in this process, behind aiohttp's test client on a loopback port.

``AppClient`` records the status of every response, so a fixture can check that
nothing was a 5xx; the test modules extend it with the calls they make.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from harness import sql_rows

from invoices import create_app

JSON = {"Content-Type": "application/json"}


@dataclass
class AppClient:
    """A test client of one app on one database file, plus the statuses it answered with."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    db: Path
    statuses: list[int] = field(default_factory=list)

    async def send(self, method: str, path: str, body: Any = None) -> ClientResponse:
        if body is None:
            return await self.client.request(method, path)
        return await self.client.request(method, path, data=orjson.dumps(body), headers=JSON)

    async def json(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.send(method, path, body)
        assert response.status == status, await response.text()
        return await response.json()

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return sql_rows(self.db, query, params)


Client = TypeVar("Client", bound=AppClient)


async def open_client(kind: type[Client], db: Path, statuses: list[int], **app_options: Any) -> Client:
    """``create_app(db, **app_options)`` served on 127.0.0.1; every status it answers goes to ``statuses``."""
    app = create_app(db, **app_options)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        statuses.append(response.status)

    app.on_response_prepare.append(record)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return kind(client, app, db, statuses)


@asynccontextmanager
async def serving(kind: type[Client], db: Path, allowed_5xx: Collection[int] = ()) -> AsyncIterator[Client]:
    """A client for a fixture: closed at the end, which then checks that no answer was a 5xx (but ``allowed_5xx``)."""
    statuses: list[int] = []
    instance = await open_client(kind, db, statuses)
    try:
        yield instance
    finally:
        await instance.client.close()
    assert [status for status in statuses if status >= 500 and status not in allowed_5xx] == []
