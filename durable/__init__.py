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
from ._operations import StreamWriter, get_resources, get_writable, now, sleep
from ._passing import StreamReader
from ._registry import StepFunction, WorkflowFunction, step, workflow
from ._serde import parse_duration
from ._streams import StreamChunk
from ._values import register_type, serializable

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
    "StreamReader",
    "StreamWriter",
    "WorkflowFunction",
    "WorkflowMetadata",
    "get_resources",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "now",
    "parse_duration",
    "register_type",
    "serializable",
    "sleep",
    "step",
    "tune_gc",
    "workflow",
]
