from __future__ import annotations

import durable
from durable import (
    CannotCancel,
    DurableError,
    EngineClosed,
    FatalError,
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
    for name in durable.__all__:
        assert getattr(durable, name) is not None


def test_error_tree() -> None:
    for cls in (FatalError, RetryableError, StepFailed, RunFailed, RunNotFound, CannotCancel, NonDeterminismError, EngineClosed):
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
