"""Run a coroutine at once, and give it a Task only if it has to wait.

Most steps finish without ever suspending (the function computes, the result is
queued for the journal). A Task for each of them costs a task object and a
loop callback per step, about a tenth of the loop's time per step. Python 3.12's
eager tasks do the same; 3.11 has none, so this module does it by hand: the
coroutine's first leg runs now, in a context of its own (as a Task would give
it), and only a coroutine that suspends is wrapped in a Task that goes on from
where it stopped, in that same context.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends: ``None`` when it finished, else the Task that finishes it.

    An exception the coroutine raises in its first leg propagates to the caller.
    """
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_go_on(coro, waiting_on), context=context)


async def _go_on(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _Resumed(coro, waiting_on)


class _Resumed:
    """Awaitable that hands the Task what ``coro`` waits on, then drives ``coro`` to its end.

    What the Task sends or throws in (a result, a cancellation) goes on to ``coro``.
    """

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self._coro, self._waiting_on
        self._waiting_on = None
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # a cancellation, or the close of the Task: coro gets it as it came
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return
