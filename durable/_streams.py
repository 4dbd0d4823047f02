"""Stream fan-out: committed chunks pushed to bounded per-reader queues.

A reader first subscribes, then reads what is stored from its index, then takes
live chunks from its queue, skipping what it already yielded. A reader that
falls behind overflows its queue; it is then switched back to reading from the
database, so a slow reader costs memory bounded by the queue size and never
slows the writer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._journal import Journal
from ._values import decode

DEFAULT_NAMESPACE = ""
PAGE = 500


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One stored chunk: its index in the stream and its JSON bytes."""

    index: int
    data: bytes

    @property
    def value(self) -> Any:
        return decode(self.data)


@dataclass(slots=True)
class _Cursor:
    """The index of the next chunk a reader yields."""

    next: int


class _Subscriber:
    __slots__ = ("closed", "items", "limit", "overflowed", "waiter")

    def __init__(self, limit: int) -> None:
        self.items: deque[StreamChunk] = deque()
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def push(self, chunk: StreamChunk) -> None:
        if self.overflowed:
            return
        if len(self.items) >= self.limit:
            # Drop what is queued: the reader will catch up from the database.
            self.items.clear()
            self.overflowed = True
        else:
            self.items.append(chunk)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self.items or self.overflowed or self.closed:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


ClosedCheck = Callable[[], Awaitable[bool]]


class StreamHub:
    """Live subscribers per (run, namespace)."""

    def __init__(self, journal: Journal, queue_limit: int = 1000) -> None:
        self._journal = journal
        self._queue_limit = queue_limit
        self._subscribers: dict[str, dict[str, set[_Subscriber]]] = {}

    def publish(self, run_id: str, namespace: str, chunk: StreamChunk) -> None:
        for sub in self._subscribers.get(run_id, {}).get(namespace, ()):
            sub.push(chunk)

    def close(self, run_id: str, namespace: str | None = None) -> None:
        """End live reading of one namespace, or of every namespace of the run."""
        by_ns = self._subscribers.get(run_id)
        if not by_ns:
            return
        for ns, subs in by_ns.items():
            if namespace is None or ns == namespace:
                for sub in subs:
                    sub.close()

    def close_all(self) -> None:
        for run_id in list(self._subscribers):
            self.close(run_id)

    def stats(self) -> tuple[int, int]:
        subs = [s for by_ns in self._subscribers.values() for group in by_ns.values() for s in group]
        return len(subs), sum(len(s.items) for s in subs)

    def _subscribe(self, run_id: str, namespace: str) -> _Subscriber:
        sub = _Subscriber(self._queue_limit)
        self._subscribers.setdefault(run_id, {}).setdefault(namespace, set()).add(sub)
        return sub

    def _unsubscribe(self, run_id: str, namespace: str, sub: _Subscriber) -> None:
        by_ns = self._subscribers.get(run_id)
        if by_ns is None:
            return
        group = by_ns.get(namespace)
        if group is not None:
            group.discard(sub)
            if not group:
                del by_ns[namespace]
        if not by_ns:
            del self._subscribers[run_id]

    async def _stored(self, run_id: str, namespace: str, start: int) -> list[StreamChunk]:
        return [StreamChunk(idx, data) for idx, data in await self._journal.chunks_from(run_id, namespace, start, PAGE)]

    async def read(
        self, run_id: str, namespace: str, start_index: int, is_closed: ClosedCheck
    ) -> AsyncGenerator[StreamChunk, None]:
        """Chunks from ``start_index`` until the stream closes: stored first, then live."""
        sub = self._subscribe(run_id, namespace)
        try:
            if start_index < 0:  # counts from the end
                start_index = max(0, await self._journal.stream_length(run_id, namespace) + start_index)
            cursor = _Cursor(start_index)
            while True:
                # Subscribed before reading: anything committed after this read is also
                # in the queue. A stream seen closed before the read is complete in the
                # database: read it to the end, then stop.
                sub.overflowed = False
                sub.items.clear()
                closed = sub.closed or await is_closed()
                async for chunk in self._catch_up(run_id, namespace, cursor):
                    yield chunk
                if closed:
                    return
                async for chunk in self._follow(sub, cursor):
                    yield chunk
        finally:
            self._unsubscribe(run_id, namespace, sub)

    async def _catch_up(self, run_id: str, namespace: str, cursor: _Cursor) -> AsyncGenerator[StreamChunk, None]:
        """The stored chunks from the cursor on, page by page."""
        while True:
            page = await self._stored(run_id, namespace, cursor.next)
            for chunk in page:
                yield chunk
                cursor.next = chunk.index + 1
            if len(page) < PAGE:
                return

    @staticmethod
    async def _follow(sub: _Subscriber, cursor: _Cursor) -> AsyncGenerator[StreamChunk, None]:
        """Live chunks in order, until the queue overflowed, skipped ahead or closed."""
        while True:
            await sub.wait()
            while sub.items:
                chunk = sub.items.popleft()
                if chunk.index < cursor.next:
                    continue  # already read from the database
                if chunk.index > cursor.next:
                    return  # a gap: catch up from the database
                yield chunk
                cursor.next += 1
            if sub.overflowed or sub.closed:
                return
