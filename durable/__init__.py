"""Durable workflows on SQLite: steps, sleeps and streams that survive crashes and restarts."""

from ._children import ChildRun, start_child
from ._context import StepMetadata, WorkflowMetadata, get_step_metadata, get_workflow_metadata
from ._engine import Engine, Run
from ._errors import (
    CannotCancel,
    CannotResume,
    ChildCancelled,
    DatabaseLocked,
    DuplicateWorkflow,
    DurableError,
    EngineClosed,
    FatalError,
    NonDeterminismError,
    RetryableError,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotFound,
    StepFailed,
)
from ._gc import tune_gc
from ._models import AttemptInfo, OperationInfo, RunInfo, RunStatus
from ._operations import StreamWriter, get_resources, get_writable, now, sleep
from ._options import WorkflowWithOptions
from ._passing import StreamReader
from ._queues import Queue
from ._registry import StepFunction, WorkflowFunction, step, workflow
from ._serde import parse_duration
from ._streams import StreamChunk
from ._values import register_type, serializable

__all__ = [
    "AttemptInfo",
    "CannotCancel",
    "CannotResume",
    "ChildCancelled",
    "ChildRun",
    "DatabaseLocked",
    "DuplicateWorkflow",
    "DurableError",
    "Engine",
    "EngineClosed",
    "FatalError",
    "NonDeterminismError",
    "OperationInfo",
    "Queue",
    "RetryableError",
    "Run",
    "RunCancelled",
    "RunConflict",
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
    "WorkflowWithOptions",
    "get_resources",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "now",
    "parse_duration",
    "register_type",
    "serializable",
    "sleep",
    "start_child",
    "step",
    "tune_gc",
    "workflow",
]
