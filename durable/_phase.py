"""The lifecycle of one run in memory: one state at a time, and the moves between them."""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where a run in memory is; its stored status is ``RunContext.status``."""

    QUEUED = "queued"  # waiting for a slot on its queue: the body has not started
    ACTIVE = "active"  # the body runs and its operations execute
    CANCELLING = "cancelling"  # cancel was requested: the next new operation raises RunCancelled
    ENDING = "ending"  # the body returned or raised: its final status is being committed
    ENDED = "ended"  # the final status is committed (or the cancel has unwound); streams closed
    FAULTED = "faulted"  # a journal write failed: stopped as by a crash, the engine resumes it later
    DETACHED = "detached"  # the engine closed while it ran: it resumes at the next open

    @property
    def stopped(self) -> bool:
        """Nothing of this execution runs any more."""
        return self in _STOPPED

    @property
    def accepts_operations(self) -> bool:
        return self is Phase.ACTIVE


_STOPPED = frozenset({Phase.ENDED, Phase.FAULTED, Phase.DETACHED})

# A fault or a close can stop a run in any phase that is not already stopped.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # A queued run starts when a slot frees, or ends cancelled without ever starting.
    Phase.QUEUED: frozenset({Phase.ACTIVE, Phase.ENDED, Phase.DETACHED}),
    Phase.ACTIVE: frozenset({Phase.CANCELLING, Phase.ENDING, Phase.FAULTED, Phase.DETACHED}),
    Phase.CANCELLING: frozenset({Phase.ENDED, Phase.FAULTED, Phase.DETACHED}),
    Phase.ENDING: frozenset({Phase.ENDED, Phase.FAULTED, Phase.DETACHED}),
    Phase.ENDED: frozenset(),
    Phase.FAULTED: frozenset(),
    Phase.DETACHED: frozenset(),
}


class PhaseError(RuntimeError):
    """A move the lifecycle does not allow: a bug in the engine, never the user's."""


def check_move(current: Phase, target: Phase, run_id: str) -> None:
    if target not in TRANSITIONS[current]:
        raise PhaseError(f"run {run_id}: cannot move from {current.value} to {target.value}")
