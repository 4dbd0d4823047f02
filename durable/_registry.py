"""The ``@workflow`` and ``@step`` decorators and catalogs of workflows by name.

A catalog maps names to workflow functions. Each engine resolves the names in
its journal through its own catalog: the one built from ``Engine(workflows=...)``,
or else ``DECORATED``, which every ``@workflow`` adds to once, when its module is
imported. A name taken by a different function is refused at registration.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._children import child_result
from ._context import current_run, current_step
from ._errors import DuplicateWorkflow
from ._options import WorkflowWithOptions, make_options
from ._serde import Duration

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_RETRIES = 3


def _default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _require_coroutine(fn: Callable[..., Any], what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@{what} needs an async def function, got {fn!r}")


class WorkflowFunction(Generic[P, R]):
    """A registered workflow; ``Engine.start(wf, ...)`` runs it durably."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], name: str) -> None:
        _require_coroutine(fn, "workflow")
        self.fn = fn
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """In a workflow body: start this workflow as a child run and await its result. Elsewhere: the plain function."""
        run = current_run.get()
        if run is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        # The child's sequence number is taken now, at call time.
        return child_result(run.host.start_child(run, self, args, kwargs))

    def with_options(
        self,
        run_id: str | None = None,
        timeout: Duration | None = None,
        queue: str | None = None,
        queue_key: str | None = None,
        priority: int | None = None,
    ) -> WorkflowWithOptions[P, R]:
        """This workflow with start options, for ``engine.start`` and ``start_child``.

        ``run_id``: starting an id that exists returns that run. ``timeout``: a durable
        deadline from start, at which the run is cancelled. ``queue``: wait for a slot
        of a queue declared with ``engine.queue``, ordered by ``priority`` (smaller
        first; none before any) then start order, limited per ``queue_key``.
        """
        return WorkflowWithOptions(self, make_options(run_id, timeout, queue, queue_key, priority))

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


class StepFunction(Generic[P, R]):
    """A step: journaled and retried inside a workflow body, a plain call elsewhere."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], name: str, max_retries: int) -> None:
        _require_coroutine(fn, "step")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.fn = fn
        self.name = name
        self.max_retries = max_retries
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        run = current_run.get()
        if run is None or current_step.get() is not None:
            return self.fn(*args, **kwargs)
        # Inside a workflow body: the sequence number is taken now, at call time.
        future: asyncio.Future[R] = run.call_step(self, args, kwargs)
        return future

    def __repr__(self) -> str:
        return f"<step {self.name}>"


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], WorkflowFunction[P, R]]: ...
def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Register an async function as a durable workflow (default name ``module.qualname``)."""

    def register(f: Callable[P, Coroutine[Any, Any, R]]) -> WorkflowFunction[P, R]:
        wf = WorkflowFunction(f, name or _default_name(f))
        DECORATED.add(wf)
        return wf

    return register(fn) if fn is not None else register


@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepFunction[P, R]: ...
@overload
def step(
    *, name: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], StepFunction[P, R]]: ...
def step(fn: Any = None, /, *, name: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES) -> Any:
    """Make an async function a durable step (``max_retries`` retries after the first attempt)."""

    def wrap(f: Callable[P, Coroutine[Any, Any, R]]) -> StepFunction[P, R]:
        return StepFunction(f, name or _default_name(f), max_retries)

    return wrap(fn) if fn is not None else wrap


class WorkflowCatalog:
    """Workflow functions by name; a name taken by another function is refused."""

    def __init__(self, workflows: Iterable[WorkflowFunction[Any, Any]] = ()) -> None:
        self._by_name: dict[str, WorkflowFunction[Any, Any]] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: WorkflowFunction[Any, Any]) -> None:
        """Register ``wf``; the same function defined again (same module and qualname) replaces itself."""
        if not isinstance(wf, WorkflowFunction):
            raise TypeError(f"workflows must be functions decorated with @workflow, got {wf!r}")
        known = self._by_name.get(wf.name)
        if known is not None and known is not wf and _default_name(known.fn) != _default_name(wf.fn):
            raise DuplicateWorkflow(wf.name, _default_name(known.fn), _default_name(wf.fn))
        self._by_name[wf.name] = wf

    def get(self, name: str) -> WorkflowFunction[Any, Any] | None:
        return self._by_name.get(name)

    def __contains__(self, wf: object) -> bool:
        return isinstance(wf, WorkflowFunction) and self._by_name.get(wf.name) is wf


#: Every decorated workflow, added once at import: what an engine runs without ``workflows=``.
DECORATED = WorkflowCatalog()
