"""What code running inside a workflow or a step can ask about where it runs."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import RunContext


@dataclass(frozen=True, slots=True)
class StepMetadata:
    """Where a step runs: ``step_id`` is stable across retries and restarts."""

    step_id: str
    attempt: int
    step_name: str
    started_at: datetime  # when this attempt started


@dataclass(frozen=True, slots=True)
class WorkflowMetadata:
    """The run a workflow body or step belongs to."""

    run_id: str
    workflow_name: str
    started_at: datetime | None  # when the run first started (the same on every replay)


@dataclass(slots=True)
class StepScope:
    """The step execution in progress: counts its stream writes."""

    run: RunContext
    seq: int
    step_name: str
    attempt: int
    started: float  # epoch seconds
    writes: int = field(default=0)

    @property
    def metadata(self) -> StepMetadata:
        # Built when asked for: most steps never ask, and a datetime per step is not free.
        started_at = datetime.fromtimestamp(self.started, UTC)
        return StepMetadata(f"{self.run.run_id}:{self.seq}", self.attempt, self.step_name, started_at)


current_run: ContextVar[RunContext | None] = ContextVar("durable_run", default=None)
current_step: ContextVar[StepScope | None] = ContextVar("durable_step", default=None)


def get_step_metadata() -> StepMetadata:
    """The metadata of the step being executed; RuntimeError outside a step."""
    scope = current_step.get()
    if scope is None:
        raise RuntimeError("get_step_metadata() must be called inside a @step function run by a workflow")
    return scope.metadata


def get_workflow_metadata() -> WorkflowMetadata:
    """The metadata of the current run; RuntimeError outside a workflow."""
    run = current_run.get()
    if run is None:
        raise RuntimeError("get_workflow_metadata() must be called inside a workflow or one of its steps")
    return WorkflowMetadata(run.run_id, run.workflow.name, run.started_at)
