"""Value types of the public API: run status and what describes a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._failures import ErrorInfo
from ._serde import to_datetime
from ._values import decode_call


class RunStatus(StrEnum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as stored: identity, status, times, error, input; how it was started.

    ``queue_position`` counts from 1 (the next run of its queue to start) while the
    run waits in its queue, and is ``None`` otherwise.
    """

    run_id: str
    workflow_name: str
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    parent_run_id: str | None = None
    queue: str | None = None
    queue_position: int | None = None
    deadline: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_stack: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One execution attempt of a step."""

    attempt: int
    started_at: datetime
    ended_at: datetime
    error: str | None
    stack: str | None = None


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """One step or sleep of a run's timeline, with its attempts."""

    seq: int
    kind: str
    name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    wake_at: datetime | None
    attempts: list[AttemptInfo]


def run_info(row: Sequence[Any], queue_position: int | None = None) -> RunInfo:
    """A ``RunInfo`` from the journal's run columns (and the run's place in its queue, known in memory)."""
    run_id, name, status, created, started, completed, error, input_data, error_data, parent, queue, deadline = row
    args, kwargs = decode_call(input_data)
    created_at = to_datetime(created)
    assert created_at is not None
    # A cancelled run's error is the reason it was cancelled (a deadline, its parent), not "Type: message".
    info = ErrorInfo.reason(error) if status == RunStatus.CANCELLED else ErrorInfo.stored(error, error_data)
    return RunInfo(
        run_id,
        name,
        RunStatus(status),
        created_at,
        to_datetime(started),
        to_datetime(completed),
        error,
        args,
        kwargs,
        parent_run_id=parent,
        queue=queue,
        queue_position=queue_position,
        deadline=to_datetime(deadline),
        error_type=None if info is None else info.error_type or None,
        error_message=None if info is None else info.message,
        error_stack=None if info is None else info.stack,
    )
