"""Durable workflows on SQLite: steps, sleeps and streams that survive crashes and restarts."""

from ._context import StepMetadata, WorkflowMetadata, get_step_metadata, get_workflow_metadata
from ._engine import Engine, Run
from ._errors import (
    CannotCancel,
    CannotResume,
    DatabaseLocked,
    DuplicateWorkflow,
    DurableError,
    EngineClosed,
    FatalError,
    NonDeterminismError,
    RetryableError,
    RunCancelled,
    RunFailed,
    RunNotFound,
    StepFailed,
)
from ._gc import tune_gc
from ._models import AttemptInfo, OperationInfo, RunInfo, RunStatus
from ._operations import StreamWriter, get_resources, get_writable, sleep
from ._registry import StepFunction, WorkflowFunction, step, workflow
from ._serde import parse_duration
from ._streams import StreamChunk

__all__ = [
    "AttemptInfo",
    "CannotCancel",
    "CannotResume",
    "DatabaseLocked",
    "DuplicateWorkflow",
    "DurableError",
    "Engine",
    "EngineClosed",
    "FatalError",
    "NonDeterminismError",
    "OperationInfo",
    "RetryableError",
    "Run",
    "RunCancelled",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "StepFailed",
    "StepFunction",
    "StepMetadata",
    "StreamChunk",
    "StreamWriter",
    "WorkflowFunction",
    "WorkflowMetadata",
    "get_resources",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "parse_duration",
    "sleep",
    "step",
    "tune_gc",
    "workflow",
]
