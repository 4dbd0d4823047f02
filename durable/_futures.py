"""Settling futures that may already be done (cancelled by a timeout, or settled by a cancel)."""

from __future__ import annotations

import asyncio
from typing import Any


def settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def settle_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def done_future() -> asyncio.Future[None]:
    """An already resolved future, for an operation that has nothing left to wait for."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
