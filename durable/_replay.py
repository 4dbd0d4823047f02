"""What a run's journal holds, loaded to resume it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._options import PLAIN, StartPlan


def receive_name(hook_seq: int) -> str:
    """The journal's name of an operation receiving a payload of the hook created at ``hook_seq``."""
    return f"hook {hook_seq}"


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
    completed_at: float | None = None
    abandoned: bool = False  # the body had cancelled its future: replay never delivers it

    def completion_time(self, now: float) -> float | None:
        """When the result reached the body live; ``None`` when it has none to replay."""
        if self.kind == "step" and self.state in ("completed", "failed") and not self.abandoned:
            return self.completed_at
        if self.kind == "sleep" and self.wake_at is not None and self.wake_at <= now:
            return self.wake_at
        if self.kind == "receive" and self.state in ("completed", "timeout"):
            return self.completed_at  # a hook payload the body got, or its wait's timeout
        return None


@dataclass(slots=True)
class Replay:
    """A run's journal: recorded operations, stream positions, closed streams."""

    ops: dict[int, Recorded] = field(default_factory=dict)
    chunk_next: dict[str, int] = field(default_factory=dict)
    step_parts: dict[int, int] = field(default_factory=dict)
    closed: dict[str, None] = field(default_factory=dict)  # namespaces, as an ordered set
    received: dict[int, int] = field(default_factory=dict)  # receive seq -> index of the hook payload it got

    def delivery_order(self, now: float) -> list[int]:
        """Sequence numbers of the recorded results, in the order they completed live."""
        timed = [(t, seq) for seq, rec in self.ops.items() if (t := rec.completion_time(now)) is not None]
        return [seq for _, seq in sorted(timed)]


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run's row: what starting or resuming it needs."""

    run_id: str
    workflow_name: str
    input_data: bytes
    status: str
    started_at: float | None = None
    error: str | None = None
    plan: StartPlan = PLAIN
