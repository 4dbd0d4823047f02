"""One queue of wall-clock wake-ups driving every durable timer, with no polling."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from typing import Protocol


class Clock(Protocol):
    """What a timer moves forward when it fires: a run's deterministic clock."""

    def advance_clock(self, moment: float) -> None: ...


class TimerQueue:
    """Futures that resolve at an epoch time; one loop callback armed for the earliest.

    Most waits arrive in the order they wake (the same duration from "now", as in a
    burst of runs sleeping "1s"): those queue in a deque, O(1) in and out. A wait due
    before the newest queued one goes to a heap instead; the earlier of the two heads
    wakes first.
    """

    def __init__(self) -> None:
        self._line: deque[tuple[float, asyncio.Future[None], Clock | None]] = deque()
        self._heap: list[tuple[float, int, asyncio.Future[None], Clock | None]] = []
        self._counter = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._done = 0  # waits ended early since the last rebuild (an upper bound of such entries)

    def __len__(self) -> int:
        return len(self._line) + len(self._heap)

    def wait_until(self, wake_at: float) -> asyncio.Future[None]:
        """A future that resolves once ``time.time() >= wake_at`` (never before)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.resolve_at(wake_at, future)
        return future

    def resolve_at(self, wake_at: float, future: asyncio.Future[None], clock: Clock | None = None) -> None:
        """Resolve ``future`` at ``wake_at`` unless it is done by then (it then leaves the queue).

        ``clock`` moves to ``wake_at`` as the future resolves.
        """
        if wake_at <= time.time():
            _wake(future, wake_at, clock)
            return
        line = self._line
        if not line or wake_at >= line[-1][0]:
            line.append((wake_at, future, clock))
        else:
            heapq.heappush(self._heap, (wake_at, next(self._counter), future, clock))
        if self._armed_for is None or wake_at < self._armed_for:
            self._arm(asyncio.get_running_loop())

    def ended_early(self) -> None:
        """A wait given to ``resolve_at`` ended before its time (a cancelled sleep).

        It stays queued until its time comes, holding its run's frames: once such
        entries are the majority, rebuild the queue without them.
        """
        self._done += 1
        if self._done > 64 and self._done * 2 > len(self):
            self._line = deque(entry for entry in self._line if not entry[1].done())
            self._heap = [entry for entry in self._heap if not entry[2].done()]
            heapq.heapify(self._heap)
            self._done = 0

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_for = None
        wake_at = self._earliest()
        if wake_at is None:
            return
        self._armed_for = wake_at
        self._handle = loop.call_at(loop.time() + max(0.0, wake_at - time.time()), self._fire, loop)

    def _earliest(self) -> float | None:
        """The earliest wake time of a wait still pending (ended waits leave the heads lazily)."""
        line, heap = self._line, self._heap
        while line and line[0][1].done():
            line.popleft()
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        heads = [entry[0] for entry in (line[0] if line else None, heap[0] if heap else None) if entry is not None]
        return min(heads) if heads else None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        self._armed_for = None
        now = time.time()
        line, heap = self._line, self._heap
        while True:  # every due wait, earliest first
            if line and line[0][0] <= now and not (heap and heap[0][0] < line[0][0]):
                wake_at, future, clock = line.popleft()
            elif heap and heap[0][0] <= now:
                wake_at, _, future, clock = heapq.heappop(heap)
            else:
                break
            _wake(future, wake_at, clock)
        # The loop clock may fire a hair early against the wall clock: re-arm for the rest.
        self._arm(loop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed_for = None
        for _, future, _ in self._line:
            future.cancel()
        for _, _, future, _ in self._heap:
            future.cancel()
        self._line.clear()
        self._heap.clear()


def _wake(future: asyncio.Future[None], wake_at: float, clock: Clock | None) -> None:
    if not future.done():
        if clock is not None:
            clock.advance_clock(wake_at)
        future.set_result(None)
