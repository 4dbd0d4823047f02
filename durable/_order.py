"""Replay hands recorded results to the workflow body in the order they completed live.

Live, a race (``asyncio.wait(..., FIRST_COMPLETED)``, ``as_completed``, a hook
against a sleep) sees one result at a time, in completion order. A replay that
resolved every recorded result at once would let the race see them all and
pick another winner. So a replaying run delivers its recorded results one at a
time, by completion time, letting the loop run a few steps between two
deliveries so the body reacts to each before it sees the next. Results that
complete live during the replay (a step that was in flight at the crash) wait
until every recorded one was delivered: they completed later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Loop steps between two deliveries: enough for a result to reach the awaiting
# body through asyncio.wait / gather / as_completed and a task of the user's.
SETTLE_STEPS = 6
# Settle rounds the next result may stay unclaimed while later ones wait, before
# those go first: a body that never asks for it must not stall the run.
STALL_ROUNDS = 2

Delivery = Callable[[], None]


class ReplayOrder:
    """Delivers recorded results by completion order, one per settle, then live ones."""

    def __init__(self, order: list[int]) -> None:
        self._order = order  # sequence numbers, by the time their result completed live
        self._positions = set(order)
        self._cursor = 0
        self._claimed: dict[int, Delivery] = {}
        self._held: list[Delivery] = []
        self._settling = False
        self._stalled = 0

    @property
    def replaying(self) -> bool:
        return self._cursor < len(self._order) or self._settling

    def recorded(self, seq: int, deliver: Delivery) -> None:
        """The body asked for the recorded result at ``seq``: deliver it in its turn."""
        if seq not in self._positions:
            deliver()  # not one of the ordered results
            return
        self._claimed[seq] = deliver
        self._pump()

    def live(self, deliver: Delivery) -> None:
        """A result that completed now: at once, or after the recorded ones."""
        if not self.replaying:
            deliver()
            return
        self._held.append(deliver)
        if not self._settling:
            self._settle()  # watch for a stall: the body may wait for this one only

    def _pump(self) -> None:
        if self._settling:
            return
        order = self._order
        if self._cursor >= len(order):
            held, self._held = self._held, []
            for deliver in held:
                deliver()
        elif order[self._cursor] in self._claimed:
            self._stalled = 0
            deliver = self._claimed.pop(order[self._cursor])
            self._cursor += 1
            self._settle()
            deliver()
        elif self._claimed or self._held:
            self._settle()  # others wait for a result the body has not asked for: watch for a stall

    def _settle(self, steps: int = SETTLE_STEPS) -> None:
        self._settling = True
        asyncio.get_running_loop().call_soon(self._settled, steps - 1)

    def _settled(self, steps: int) -> None:
        if steps > 0:
            asyncio.get_running_loop().call_soon(self._settled, steps - 1)
            return
        self._settling = False
        waiting = self._claimed or self._held
        if waiting and self._cursor < len(self._order) and self._order[self._cursor] not in self._claimed:
            self._stalled += 1
            if self._stalled <= STALL_ROUNDS:
                self._settle()
                return
            # The body does not ask for the next result while others wait: it goes
            # without its turn, delivered whenever the body asks for it.
            self._positions.discard(self._order[self._cursor])
            self._cursor += 1
            self._stalled = 0
        self._pump()
