"""Durable workflows on SQLite: steps, sleeps, streams and hooks that survive crashes and restarts."""

from ._context import StepMetadata, WorkflowMetadata, get_step_metadata, get_workflow_metadata
from ._engine import Engine, Run
from ._errors import (
    CannotCancel,
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
    RunFailed,
    RunNotFound,
    StepFailed,
)
from ._fetch import FetchResponse, fetch
from ._gc import tune_gc
from ._hook_registry import HookInfo
from ._hooks import Hook, create_hook
from ._models import AttemptInfo, OperationInfo, RunInfo, RunStatus
from ._operations import StreamWriter, get_resources, get_writable, now, sleep
from ._registry import StepFunction, WorkflowFunction, step, workflow
from ._serde import parse_duration
from ._streams import StreamChunk
from ._typed_hooks import HookDefinition, define_hook
from ._webhooks import Webhook, WebhookRequest, WebhookResponse, create_webhook

__all__ = [
    "AttemptInfo",
    "CannotCancel",
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
    "Webhook",
    "WebhookRequest",
    "WebhookResponse",
    "WorkflowFunction",
    "WorkflowMetadata",
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
    "sleep",
    "step",
    "tune_gc",
    "workflow",
]
