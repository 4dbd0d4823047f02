"""The exceptions of ``durable``.

Tree::

    DurableError
    ├── FatalError              raised by a step: fail now, no retry
    ├── RetryableError          raised by a step: retry, optionally after ``retry_after``
    ├── StepFailed              a step failed for good (raised in the workflow)
    ├── RunFailed               ``Run.result()`` of a failed run (and a failed child, in its parent)
    ├── ChildCancelled          a child run was cancelled (raised in its parent, which goes on)
    ├── RunNotFound             no run with that id
    ├── RunConflict             a run id taken by a run of another workflow
    ├── CannotCancel            cancel of a completed or failed run
    ├── CannotResume            resume or fork refused (status, or workflow not registered)
    ├── NonDeterminismError     replay met another operation than the journal holds
    ├── DatabaseLocked          another engine holds the database file
    ├── UnreadableJournal       a file the inspector cannot read (missing, not a journal, other version)
    ├── DuplicateWorkflow       two different workflows registered under one name
    ├── EngineClosed            use of an engine that is not open
    ├── HookConflict            a hook's token is held by another active hook (raised in the workflow)
    ├── HookNotFound            no active hook has that token (resume_hook, resume_webhook, get_hook_by_token)
    └── HookTimeout             ``hook.wait(timeout=...)`` ended without a payload
    RunCancelled (BaseException) the run was cancelled
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path


class DurableError(Exception):
    """Root of the engine's exceptions."""


class FatalError(DurableError):
    """Raised by a step to fail at once, without retrying."""


class RetryableError(DurableError):
    """Raised by a step to be retried, after ``retry_after`` when given."""

    def __init__(self, message: str, retry_after: str | int | float | timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepFailed(DurableError):
    """A step failed for good; raised where the workflow awaited it.

    ``error_type`` and ``message`` describe the step's last error, ``stack`` is its
    original traceback text: the same live and after a restart.
    """

    def __init__(self, step_name: str, error_type: str, message: str, stack: str = "") -> None:
        super().__init__(f"Step {step_name} failed: {error_type}: {message}")
        self.step_name = step_name
        self.error_type = error_type
        self.message = message
        self.stack = stack

    def __reduce__(self) -> tuple[type[StepFailed], tuple[str, str, str, str]]:
        return (StepFailed, (self.step_name, self.error_type, self.message, self.stack))


class RunFailed(DurableError):
    """The run ended in ``failed``; raised by ``Run.result()`` with the stored error."""

    def __init__(self, run_id: str, error: str, error_type: str = "", message: str = "", stack: str = "") -> None:
        super().__init__(f"Workflow run {run_id} failed: {error}")
        self.run_id = run_id
        self.error = error
        self.error_type = error_type
        self.message = message
        self.stack = stack


class ChildCancelled(DurableError):
    """A child run was cancelled; raised in its parent where the parent awaits the child's result.

    An ``Exception``, unlike ``RunCancelled``: the parent was not cancelled and may go on.
    """

    def __init__(self, run_id: str, reason: str | None = None) -> None:
        super().__init__(f"Child workflow run {run_id} was cancelled" + (f": {reason}" if reason else ""))
        self.run_id = run_id
        self.reason = reason


class RunNotFound(DurableError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Workflow run {run_id} not found")
        self.run_id = run_id


class RunConflict(DurableError):
    """A run id is taken by a run of another workflow."""

    def __init__(self, run_id: str, existing: str, attempted: str) -> None:
        super().__init__(
            f"Workflow run {run_id} already exists as a run of {existing!r}, so it cannot be started as {attempted!r}: "
            "use another run_id for this workflow."
        )
        self.run_id = run_id
        self.existing = existing
        self.attempted = attempted


class CannotCancel(DurableError):
    """The run already completed or failed, so it cannot be cancelled."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"Cannot cancel workflow run {run_id} with status {status}")
        self.run_id = run_id
        self.status = status


class CannotResume(DurableError):
    """The run cannot be resumed or forked: its status does not allow it, or its workflow is unknown here."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"Cannot continue workflow run {run_id}: {reason}")
        self.run_id = run_id
        self.reason = reason


class NonDeterminismError(DurableError):
    """On replay the workflow called another operation than the journal recorded."""

    def __init__(self, run_id: str, seq: int, recorded: str, attempted: str) -> None:
        super().__init__(
            f"Workflow run {run_id}: operation {seq} was recorded as {recorded} but the workflow "
            f"now calls {attempted}. Check that your workflow is deterministic: the same input "
            f"must call the same steps, sleeps and writes in the same order."
        )
        self.run_id = run_id
        self.seq = seq
        self.recorded = recorded
        self.attempted = attempted


class DatabaseLocked(DurableError):
    """Another engine, in this process or another one, holds the database file."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        holder = f"process {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"{path} is in use by {holder}: one engine owns a database file at a time. Stop that process, or open another file."
        )
        self.path = path
        self.holder_pid = holder_pid


class UnreadableJournal(DurableError):
    """The file is missing, is not a journal, or has a schema version this code cannot read."""


class DuplicateWorkflow(DurableError):
    """Two different workflow functions were registered under one name."""

    def __init__(self, name: str, registered: str, attempted: str) -> None:
        super().__init__(
            f"Workflow name {name!r} is taken by {registered}; {attempted} cannot use it too. "
            "Give one of them another name with @workflow(name=...)."
        )
        self.name = name


class EngineClosed(DurableError):
    """The engine is not open: open it first, and do not use it after close()."""


def _shown(token: str) -> str:
    return repr(token if len(token) <= 100 else token[:100] + "...")


class HookConflict(DurableError):
    """The token is held by an active hook (of ``run_id``): tokens are unique among active hooks."""

    def __init__(self, token: str, run_id: str) -> None:
        super().__init__(
            f"Hook token {_shown(token)} is held by an active hook of workflow run {run_id}: "
            "wait until that run ends or disposes its hook, or use another token."
        )
        self.token = token
        self.run_id = run_id


class HookNotFound(DurableError):
    """No active hook has this token: never created, disposed, or its run has ended."""

    def __init__(self, token: str, kind: str = "hook") -> None:
        super().__init__(
            f"No active {kind} has the token {_shown(token)}: it was never created, was disposed, or its run has ended."
        )
        self.token = token
        self.kind = kind


class HookTimeout(DurableError):
    """``hook.wait(timeout=...)``: the durable timer fired before a payload arrived."""

    def __init__(self, token: str, timeout: str) -> None:
        super().__init__(f"Hook {_shown(token)} received no payload within {timeout}")
        self.token = token
        self.timeout = timeout


class RunCancelled(BaseException):
    """The run was cancelled; a ``BaseException`` so ``except Exception`` cannot swallow it.

    ``reason`` says why when it was not a plain ``cancel()``: a deadline that passed, a cancelled parent.
    """

    def __init__(self, run_id: str, reason: str | None = None) -> None:
        super().__init__(f"Workflow run {run_id} was cancelled" + (f": {reason}" if reason else ""))
        self.run_id = run_id
        self.reason = reason
