"""One heap of wall-clock wake-ups driving every durable timer, with no polling."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class TimerHeap:
    """Futures that resolve at an epoch time; one loop callback armed for the earliest."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._done = 0  # waits ended early since the last rebuild (an upper bound of such entries)

    def __len__(self) -> int:
        return len(self._heap)

    def wait_until(self, wake_at: float) -> asyncio.Future[None]:
        """A future that resolves once ``time.time() >= wake_at`` (never before)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.resolve_at(wake_at, future)
        return future

    def resolve_at(self, wake_at: float, future: asyncio.Future[None]) -> None:
        """Resolve ``future`` at ``wake_at`` unless it is done by then (it then leaves the heap)."""
        if wake_at <= time.time():
            if not future.done():
                future.set_result(None)
            return
        heapq.heappush(self._heap, (wake_at, next(self._counter), future))
        if self._armed_for is None or wake_at < self._armed_for:
            self._arm(asyncio.get_running_loop())

    def ended_early(self) -> None:
        """A wait given to ``resolve_at`` ended before its time (a cancelled sleep).

        It stays in the heap until its time comes, holding its run's frames: once such
        entries are the majority, rebuild the heap without them.
        """
        self._done += 1
        if self._done > 64 and self._done * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].done()]
            heapq.heapify(self._heap)
            self._done = 0

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_for = None
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)  # cancelled waits leave lazily
        if not self._heap:
            return
        wake_at = self._heap[0][0]
        self._armed_for = wake_at
        self._handle = loop.call_at(loop.time() + max(0.0, wake_at - time.time()), self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        self._armed_for = None
        now = time.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)
        # The loop clock may fire a hair early against the wall clock: re-arm for the rest.
        self._arm(loop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed_for = None
        for _, _, future in self._heap:
            future.cancel()
        self._heap.clear()
