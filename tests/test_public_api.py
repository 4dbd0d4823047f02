from __future__ import annotations

import durable
from durable import (
    CannotCancel,
    ChildCancelled,
    DurableError,
    EngineClosed,
    FatalError,
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
    assert durable.__all__ == sorted(durable.__all__)
    assert durable.__all__ == [
        "AttemptInfo",
        "CannotCancel",
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
        "StreamWriter",
        "WorkflowFunction",
        "WorkflowMetadata",
        "WorkflowWithOptions",
        "get_resources",
        "get_step_metadata",
        "get_workflow_metadata",
        "get_writable",
        "parse_duration",
        "sleep",
        "start_child",
        "step",
        "tune_gc",
        "workflow",
    ]
    for name in durable.__all__:
        assert getattr(durable, name) is not None


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
    assert str(RunConflict("r1", "a.first", "a.second")) == (
        "Workflow run r1 already exists as a run of 'a.first', so it cannot be started as 'a.second': "
        "use another run_id for this workflow."
    )
    assert str(RunCancelled("wrun_X")) == "Workflow run wrun_X was cancelled"
    assert str(RunCancelled("wrun_X", "deadline of 2h passed at 2026-01-01T02:00:00.000Z")) == (
        "Workflow run wrun_X was cancelled: deadline of 2h passed at 2026-01-01T02:00:00.000Z"
    )
    assert str(ChildCancelled("wrun_X.3", None)) == "Child workflow run wrun_X.3 was cancelled"
    err = NonDeterminismError("wrun_X", 3, "step 'a'", "step 'b'")
    assert "operation 3" in str(err) and "step 'a'" in str(err) and "step 'b'" in str(err)
    assert "deterministic" in str(err)
    failed = StepFailed("mod.charge", "ValueError", "bad card")
    assert (failed.step_name, failed.error_type, failed.message) == ("mod.charge", "ValueError", "bad card")
    assert str(failed) == "Step mod.charge failed: ValueError: bad card"
