"""How a run is started: the options a caller gives, and the plan the journal keeps.

``wf.with_options(run_id=..., timeout=..., queue=..., queue_key=..., priority=...)``
gives a ``WorkflowWithOptions``, which ``Engine.start`` and ``start_child`` take
in place of the workflow. The engine turns its options into a ``StartPlan``: the
parent, the deadline (with the timeout it came from, for the error that says it
passed) and the place in a queue, journaled with the run so a restart finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._children import CHILD_MARK, child_result
from ._context import current_run, current_step
from ._serde import Duration, parse_duration

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from ._registry import WorkflowFunction

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class StartOptions:
    """Validated options of one start; ``timeout`` in seconds, ``timeout_text`` as the caller wrote it."""

    run_id: str | None = None
    timeout: float | None = None
    timeout_text: str | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int | None = None


NO_OPTIONS = StartOptions()


def _timeout(value: Duration | None) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    seconds = parse_duration(value)  # ValueError naming the value
    if isinstance(value, str):
        return seconds, value.strip()
    return seconds, f"{seconds:g}s"


def _optional_text(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def make_options(
    run_id: str | None, timeout: Duration | None, queue: str | None, queue_key: str | None, priority: int | None
) -> StartOptions:
    """Check options where they are given: a ``ValueError`` names the option and the rule."""
    if _optional_text("run_id", run_id) is not None and CHILD_MARK in str(run_id):
        raise ValueError(f"run_id must not contain {CHILD_MARK!r}, which marks the ids of child runs, got {run_id!r}")
    _optional_text("queue", queue)
    _optional_text("queue_key", queue_key)
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ValueError(f"priority must be an integer or None (smaller starts first), got {priority!r}")
    if queue is None and (queue_key is not None or priority is not None):
        raise ValueError("queue_key and priority order runs in a queue: give queue=... as well")
    seconds, text = _timeout(timeout)
    return StartOptions(run_id, seconds, text, queue, queue_key, priority)


class WorkflowWithOptions(Generic[P, R]):
    """A workflow with start options, for ``Engine.start`` and ``start_child`` (or a call in a workflow body)."""

    def __init__(self, workflow: WorkflowFunction[P, R], options: StartOptions) -> None:
        self.workflow = workflow
        self.options = options

    @property
    def name(self) -> str:
        return self.workflow.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """In a workflow body: start this workflow as a child with these options and await its result."""
        run = current_run.get()
        if run is None or current_step.get() is not None:
            raise RuntimeError(
                f"{self.workflow!r} with options can only be called in a workflow body (it starts a child run): "
                "use engine.start(wf.with_options(...), ...) elsewhere"
            )
        return child_result(run.host.start_child(run, self, args, kwargs))

    def __repr__(self) -> str:
        return f"<workflow {self.name} with {self.options}>"


@dataclass(frozen=True, slots=True)
class StartPlan:
    """How a run was started, as journaled: its parent, its deadline, its place in a queue."""

    parent_run_id: str | None = None
    deadline: float | None = None
    timeout: str | None = None  # what the deadline came from, for the error that says it passed
    queue: str | None = None
    queue_key: str | None = None
    priority: int | None = None
    queue_seq: int | None = None


PLAIN = StartPlan()
