"""Deadlines: a run started with ``timeout`` is cancelled when its journaled deadline passes.

Each run in memory with a deadline has one future in the engine's timer queue,
so deadlines wake like sleeps: never early, without polling, and at once at
open for those that passed while the engine was down. When the future resolves,
``expire(run_id, reason)`` cancels the run through the engine's ordinary cancel
path, so a deadline gives every guarantee of ``cancel()``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ._timers import TimerQueue


def deadline_passed(timeout: str, deadline: float) -> str:
    """The error of a run cancelled at its deadline."""
    moment = datetime.fromtimestamp(deadline, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"deadline of {timeout} passed at {moment}"


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a run must be over, and the timeout it came from."""

    at: float
    timeout: str


class Deadlines:
    """The armed deadlines of one engine's runs."""

    def __init__(self, timers: TimerQueue, expire: Callable[[str, str], None]) -> None:
        self._timers = timers
        self._expire = expire
        self._armed: dict[str, tuple[Deadline, asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._armed)

    def arm(self, run_id: str, deadline: Deadline) -> None:
        """Cancel the run at ``deadline`` (once more if it fired before and the run is being resumed)."""
        armed = self._armed.get(run_id)
        if armed is not None and not armed[1].done():
            return
        due: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        due.add_done_callback(functools.partial(self._due, run_id, deadline))
        self._armed[run_id] = (deadline, due)
        self._timers.resolve_at(deadline.at, due)

    def of(self, run_id: str) -> Deadline | None:
        armed = self._armed.get(run_id)
        return None if armed is None else armed[0]

    def disarm(self, run_id: str) -> None:
        """The run is over: its deadline no longer matters."""
        armed = self._armed.pop(run_id, None)
        if armed is not None and not armed[1].done():
            armed[1].cancel()
            self._timers.ended_early()

    def _due(self, run_id: str, deadline: Deadline, due: asyncio.Future[None]) -> None:
        if not due.cancelled():
            self._expire(run_id, deadline_passed(deadline.timeout, deadline.at))
