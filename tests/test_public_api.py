from __future__ import annotations

import durable
from durable import (
    CannotCancel,
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
    RunStatus,
    StepFailed,
)


def test_public_surface_is_pinned() -> None:
    assert durable.__all__ == sorted(durable.__all__)
    assert durable.__all__ == [
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
    for name in durable.__all__:
        assert getattr(durable, name) is not None


def test_error_tree() -> None:
    errors = (FatalError, RetryableError, StepFailed, RunFailed, RunNotFound, CannotCancel, NonDeterminismError, EngineClosed)
    for cls in (*errors, HookConflict, HookNotFound, HookTimeout):
        assert issubclass(cls, DurableError)
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
    err = NonDeterminismError("wrun_X", 3, "step 'a'", "step 'b'")
    assert "operation 3" in str(err) and "step 'a'" in str(err) and "step 'b'" in str(err)
    assert "deterministic" in str(err)
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
