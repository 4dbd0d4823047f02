"""What a run's journal holds, loaded to resume it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._options import PLAIN, StartPlan


@dataclass(slots=True)
class Recorded:
    """What the journal holds at one sequence number of a run."""

    kind: str
    name: str
    state: str = "retrying"
    result: bytes | None = None
    wake_at: float | None = None
    failed_attempts: int = 0
    retry_at: float | None = None


@dataclass(slots=True)
class Replay:
    """A run's journal: recorded operations, stream positions, closed streams."""

    ops: dict[int, Recorded] = field(default_factory=dict)
    chunk_next: dict[str, int] = field(default_factory=dict)
    step_parts: dict[int, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run's row: what starting or resuming it needs."""

    run_id: str
    workflow_name: str
    input_data: bytes
    status: str
    error: str | None = None
    plan: StartPlan = PLAIN
