from __future__ import annotations

import inspect

import durable
import durable.web
from durable import (
    CannotCancel,
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
    RunStatus,
    StepFailed,
)


def test_public_surface_is_pinned() -> None:
    assert durable.__all__ == sorted(
        [
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
    )
    # The package namespace holds exactly these names: none missing, no other public one
    # (subpackages such as durable.web appear once imported: they are not names of the API).
    public = [name for name in dir(durable) if not name.startswith("_") and not inspect.ismodule(getattr(durable, name))]
    assert public == durable.__all__


def test_web_surface_is_pinned() -> None:
    assert durable.web.__all__ == [
        "DEFAULT_MAX_BODY_BYTES",
        "DEFAULT_RESPONSE_TIMEOUT",
        "WEBHOOK_PREFIX",
        "add_inspector",
        "hook_json",
        "make_app",
        "make_webhook_app",
    ]
    assert durable.web.WEBHOOK_PREFIX == "/.well-known/workflow/v1/webhook"


def test_error_tree() -> None:
    for cls in (
        FatalError,
        RetryableError,
        StepFailed,
        RunFailed,
        ChildCancelled,
        RunNotFound,
        RunConflict,
        CannotCancel,
        NonDeterminismError,
        EngineClosed,
        DatabaseLocked,
        DuplicateWorkflow,
        HookConflict,
        HookNotFound,
        HookTimeout,
    ):
        assert issubclass(cls, DurableError)
    assert not issubclass(ChildCancelled, RunCancelled)  # a child's cancellation is not the parent's
    assert issubclass(DurableError, Exception)
    assert issubclass(RunCancelled, BaseException)
    assert not issubclass(RunCancelled, Exception)


def test_run_status_values() -> None:
    assert [s.value for s in RunStatus] == ["pending", "running", "completed", "failed", "cancelled"]
    assert [s.is_terminal for s in RunStatus] == [False, False, True, True, True]
    assert RunStatus("completed") == "completed"


def test_error_messages_name_ids_and_remedy() -> None:
    assert str(RunNotFound("wrun_X")) == "Workflow run wrun_X not found"
    assert str(CannotCancel("wrun_X", "completed")) == "Cannot cancel workflow run wrun_X with status completed"
    assert str(NonDeterminismError("wrun_X", 3, "step 'a'", "step 'b'")) == (
        "Workflow run wrun_X: operation 3 was recorded as step 'a' but the workflow now calls step 'b'."
        " Check that your workflow is deterministic: the same input must call the same steps, sleeps and writes"
        " in the same order."
    )
    assert str(RunConflict("r1", "a.first", "a.second")) == (
        "Workflow run r1 already exists as a run of 'a.first', so it cannot be started as 'a.second': "
        "use another run_id for this workflow."
    )
    assert str(RunCancelled("wrun_X")) == "Workflow run wrun_X was cancelled"
    assert str(RunCancelled("wrun_X", "deadline of 2h passed at 2026-01-01T02:00:00.000Z")) == (
        "Workflow run wrun_X was cancelled: deadline of 2h passed at 2026-01-01T02:00:00.000Z"
    )
    assert str(ChildCancelled("wrun_X.3", None)) == "Child workflow run wrun_X.3 was cancelled"
    failed = StepFailed("mod.charge", "ValueError", "bad card")
    assert (failed.step_name, failed.error_type, failed.message) == ("mod.charge", "ValueError", "bad card")
    assert str(failed) == "Step mod.charge failed: ValueError: bad card"


def test_hook_error_messages() -> None:
    conflict = HookConflict("review:d1", "wrun_X")
    assert (conflict.token, conflict.run_id) == ("review:d1", "wrun_X")
    assert str(conflict) == (
        "Hook token 'review:d1' is held by an active hook of workflow run wrun_X: "
        "wait until that run ends or disposes its hook, or use another token."
    )
    assert str(HookNotFound("t")) == (
        "No active hook has the token 't': it was never created, was disposed, or its run has ended."
    )
    assert str(HookNotFound("x" * 300, "webhook")).startswith("No active webhook has the token '" + "x" * 100 + "...'")
    assert str(HookTimeout("t", "7 days")) == "Hook 't' received no payload within 7 days"
