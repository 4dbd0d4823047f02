"""Queues: runs that wait for a slot, started in priority and start order as slots free.

A queue limits how many of its runs run at once (``concurrency``), how many of
those share one ``queue_key`` (``per_key_concurrency``; runs without a key are
not limited per key), and how many start per period (``rate``). Nothing polls:
a run that stops frees its slot and starts the next one in the same callback,
and a full rate window arms one loop timer for the moment it lets the next run
start.

Order: a smaller ``priority`` first, runs without a priority before all runs
with one (as in DBOS), then start order (``queue_seq``, journaled, so that a
restart keeps every run's place). The waiting runs of each key sit in a heap of
their own; the queue's ``ready`` heap holds the best waiting run of each key
with a free slot, so the next run to start is at its top however many runs wait
behind a busy key. A sorted list of every waiting run's order answers
positions.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._serde import Duration, parse_duration

if TYPE_CHECKING:
    from ._options import StartPlan
    from ._runtime import RunContext

log = logging.getLogger("durable")

Order = tuple[int, int, int]


def queue_order(priority: int | None, seq: int) -> Order:
    """Runs without a priority first, then by priority (smaller first), then by start order."""
    return (0, 0, seq) if priority is None else (1, priority, seq)


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue declared on an engine; ``rate`` is (starts, period in seconds)."""

    name: str
    concurrency: int | None = None
    per_key_concurrency: int | None = None
    rate: tuple[int, float] | None = None


def _limit(name: str, value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None (no limit), got {value!r}")
    return value


def _rate(value: object) -> tuple[int, float] | None:
    if value is None:
        return None
    rule = f"rate must be (count, period) such as (100, '1m'), got {value!r}"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(rule)
    count, period = value
    if _limit("rate's count", count) is None:
        raise ValueError(rule)
    seconds = parse_duration(period)
    if seconds <= 0:
        raise ValueError(f"rate's period must be more than 0, got {period!r}")
    return count, seconds


def make_queue(name: str, concurrency: int | None, per_key_concurrency: int | None, rate: tuple[int, Duration] | None) -> Queue:
    """A checked queue declaration: a ``ValueError`` names the argument and the rule."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a queue's name must be a non-empty string, got {name!r}")
    return Queue(name, _limit("concurrency", concurrency), _limit("per_key_concurrency", per_key_concurrency), _rate(rate))


@dataclass(eq=False, slots=True)
class QueuedRun:
    """A run waiting in a queue; ``live`` until it starts or leaves."""

    run: RunContext
    plan: StartPlan
    line: _Line
    order: Order
    live: bool = True

    @property
    def key(self) -> str | None:
        return self.plan.queue_key

    def __lt__(self, other: QueuedRun) -> bool:
        # Heap items are (order, entry). Orders tie only between a withdrawn entry and the
        # one restoring it; either may come first, as a withdrawn entry is skipped.
        return id(self) < id(other)


@dataclass(eq=False, slots=True)
class _Line:
    """One queue: its declaration (``None`` until declared), its running and waiting runs."""

    name: str
    config: Queue | None = None
    running: int = 0
    running_by_key: dict[str, int] = field(default_factory=dict)
    waiting: list[Order] = field(default_factory=list)  # sorted: positions
    by_key: dict[str | None, list[tuple[Order, QueuedRun]]] = field(default_factory=dict)
    ready: list[tuple[Order, QueuedRun]] = field(default_factory=list)
    head_of: dict[str | None, QueuedRun] = field(default_factory=dict)  # each key's run in ``ready``
    starts: deque[float] = field(default_factory=deque)  # loop times of recent starts (rate)
    rate_timer: asyncio.TimerHandle | None = None

    def has_slot(self) -> bool:
        limit = self.config.concurrency if self.config is not None else None
        return limit is None or self.running < limit

    def key_has_slot(self, key: str | None) -> bool:
        limit = self.config.per_key_concurrency if self.config is not None else None
        return key is None or limit is None or self.running_by_key.get(key, 0) < limit

    def refill(self, key: str | None) -> None:
        """Put the key's best waiting run in ``ready`` if it has none there and a slot is free."""
        if key in self.head_of or not self.key_has_slot(key):
            return
        heap = self.by_key.get(key)
        while heap and not heap[0][1].live:
            heapq.heappop(heap)
        if not heap:
            self.by_key.pop(key, None)
            return
        order, entry = heapq.heappop(heap)
        self.head_of[key] = entry
        heapq.heappush(self.ready, (order, entry))

    def add(self, entry: QueuedRun) -> None:
        bisect.insort(self.waiting, entry.order)
        heapq.heappush(self.by_key.setdefault(entry.key, []), (entry.order, entry))
        head = self.head_of.get(entry.key)
        if head is not None and entry.order < head.order:
            # The newcomer goes before the key's run in ``ready``: that one goes back to
            # its heap, and its entry in ``ready`` is skipped when it comes up.
            del self.head_of[entry.key]
            heapq.heappush(self.by_key[entry.key], (head.order, head))
        self.refill(entry.key)

    def leave(self, entry: QueuedRun) -> None:
        """The run no longer waits: it starts, or it was cancelled."""
        entry.live = False
        del self.waiting[bisect.bisect_left(self.waiting, entry.order)]
        if self.head_of.get(entry.key) is entry:
            del self.head_of[entry.key]
            self.refill(entry.key)

    def count_start(self, key: str | None) -> None:
        self.running += 1
        if key is not None:
            self.running_by_key[key] = self.running_by_key.get(key, 0) + 1

    def count_stop(self, key: str | None) -> None:
        self.running -= 1
        if key is not None:
            left = self.running_by_key[key] - 1
            if left:
                self.running_by_key[key] = left
            else:
                del self.running_by_key[key]
        self.refill(key)


class QueueScheduler:
    """The queues of one engine: which runs wait, which hold a slot, and which starts next."""

    def __init__(self, launch: Callable[[RunContext], None]) -> None:
        self._launch = launch
        self._lines: dict[str, _Line] = {}
        self._waiting: dict[str, QueuedRun] = {}  # by run id
        self._running: dict[str, tuple[_Line, str | None]] = {}  # by run id: runs holding a slot
        self._seq = 0
        self.paused = False
        self.closed = False

    # -- declarations and order -------------------------------------------------

    def declare(self, queue: Queue) -> Queue:
        line = self._lines.setdefault(queue.name, _Line(queue.name))
        if line.config is not None:
            if line.config != queue:
                raise ValueError(f"queue {queue.name!r} is already declared as {line.config}; it cannot become {queue}")
            return line.config
        line.config = queue
        for key in list(line.by_key):  # runs that waited for the declaration (resumed before it)
            line.refill(key)
        self._dispatch(line)
        return queue

    def check_declared(self, name: str) -> None:
        line = self._lines.get(name)
        if line is None or line.config is None:
            raise ValueError(
                f"queue {name!r} is not declared on this engine: call engine.queue({name!r}, concurrency=...) "
                "before starting runs on it"
            )

    def seq_floor(self, last: int) -> None:
        """Continue start order after the journal's last queued run."""
        self._seq = max(self._seq, last)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- runs -------------------------------------------------------------------------

    def submit(self, run: RunContext, plan: StartPlan) -> None:
        """Queue a pending run; it starts at once when its queue has a slot."""
        assert plan.queue is not None and plan.queue_seq is not None
        line = self._lines.setdefault(plan.queue, _Line(plan.queue))
        if line.config is None:
            log.warning(
                "run %s waits on queue %r, which this engine has not declared: engine.queue(%r, ...) lets it start",
                run.run_id,
                plan.queue,
                plan.queue,
            )
        entry = QueuedRun(run, plan, line, queue_order(plan.priority, plan.queue_seq))
        self._waiting[run.run_id] = entry
        line.add(entry)
        self._dispatch(line)

    def occupy(self, run_id: str, plan: StartPlan) -> None:
        """A run of the queue that started before (resumed at open): it holds a slot, whatever the limit."""
        assert plan.queue is not None
        line = self._lines.setdefault(plan.queue, _Line(plan.queue))
        line.count_start(plan.queue_key)
        self._running[run_id] = (line, plan.queue_key)

    def release(self, run_id: str) -> None:
        """The run stopped: its slot goes to the next waiting run at once."""
        held = self._running.pop(run_id, None)
        if held is not None:
            line, key = held
            line.count_stop(key)
            self._dispatch(line)

    def waiting_run(self, run_id: str) -> QueuedRun | None:
        return self._waiting.get(run_id)

    def withdraw(self, entry: QueuedRun) -> None:
        """Take a waiting run out of its queue (it is being cancelled)."""
        if self._waiting.get(entry.run.run_id) is entry:
            del self._waiting[entry.run.run_id]
            entry.line.leave(entry)

    def restore(self, entry: QueuedRun) -> None:
        """Put a withdrawn run back in its place (its cancellation could not be committed)."""
        again = QueuedRun(entry.run, entry.plan, entry.line, entry.order)
        self._waiting[entry.run.run_id] = again
        entry.line.add(again)
        self._dispatch(entry.line)

    def position(self, run_id: str) -> int | None:
        """1 for the next run of its queue to start, 2 for the one after, ...; ``None`` when not waiting."""
        entry = self._waiting.get(run_id)
        if entry is None:
            return None
        return bisect.bisect_left(entry.line.waiting, entry.order) + 1

    def __len__(self) -> int:
        return len(self._waiting)

    # -- dispatch -----------------------------------------------------------------------

    def dispatch_all(self) -> None:
        for line in list(self._lines.values()):
            self._dispatch(line)

    def _dispatch(self, line: _Line) -> None:
        if self.paused or self.closed or line.config is None:
            return
        while line.ready and line.has_slot() and self._rate_allows(line):
            _, entry = heapq.heappop(line.ready)
            if line.head_of.get(entry.key) is not entry:
                continue  # stale: the key's best run changed since this entry was pushed
            self._start(line, entry)

    def _start(self, line: _Line, entry: QueuedRun) -> None:
        run_id = entry.run.run_id
        del self._waiting[run_id]
        line.count_start(entry.key)  # first: leaving refills the key's place in ``ready`` if it has a slot left
        line.leave(entry)
        if line.config is not None and line.config.rate is not None:
            line.starts.append(asyncio.get_running_loop().time())
        self._running[run_id] = (line, entry.key)
        self._launch(entry.run)

    def _rate_allows(self, line: _Line) -> bool:
        rate = line.config.rate if line.config is not None else None
        if rate is None:
            return True
        count, period = rate
        loop = asyncio.get_running_loop()
        now = loop.time()
        starts = line.starts
        while starts and starts[0] <= now - period:
            starts.popleft()
        if len(starts) < count:
            return True
        if line.rate_timer is None:
            line.rate_timer = loop.call_at(starts[0] + period, self._window_opened, line)
        return False

    def _window_opened(self, line: _Line) -> None:
        line.rate_timer = None
        self._dispatch(line)

    def close(self) -> None:
        """The engine closes: waiting runs stay queued in the journal, in their place."""
        self.closed = True
        for line in self._lines.values():
            if line.rate_timer is not None:
                line.rate_timer.cancel()
                line.rate_timer = None
        waiting, self._waiting = list(self._waiting.values()), {}
        for entry in waiting:
            entry.run.detach()
        self._running.clear()
