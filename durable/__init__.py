"""Durable workflows on SQLite: steps, sleeps, streams and hooks that survive crashes and restarts."""

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
    HookConflict,
    HookNotFound,
    HookTimeout,
    NonDeterminismError,
    RetryableError,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotFound,
    StepFailed,
    UnreadableJournal,
)
from ._fetch import FetchResponse, fetch
from ._gc import tune_gc
from ._hook_registry import HookInfo
from ._hooks import Hook, create_hook
from ._models import AttemptInfo, OperationInfo, RunInfo, RunStatus
from ._operations import StreamWriter, get_resources, get_writable, now, sleep
from ._options import WorkflowWithOptions
from ._passing import StreamReader
from ._queues import Queue
from ._registry import StepFunction, WorkflowFunction, step, workflow
from ._serde import parse_duration
from ._streams import StreamChunk
from ._typed_hooks import HookDefinition, define_hook
from ._values import register_type, serializable
from ._webhooks import Webhook, WebhookRequest, WebhookResponse, create_webhook

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
    "FetchResponse",
    "Hook",
    "HookConflict",
    "HookDefinition",
    "HookInfo",
    "HookNotFound",
    "HookTimeout",
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
    "UnreadableJournal",
    "Webhook",
    "WebhookRequest",
    "WebhookResponse",
    "WorkflowFunction",
    "WorkflowMetadata",
    "WorkflowWithOptions",
    "create_hook",
    "create_webhook",
    "define_hook",
    "fetch",
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
