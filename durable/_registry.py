"""The ``@workflow`` and ``@step`` decorators and the registry of workflows by name."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ._context import current_run, current_step

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_RETRIES = 3

_workflows: dict[str, WorkflowFunction[Any, Any]] = {}


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
        return self.fn(*args, **kwargs)

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
        _workflows[wf.name] = wf
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


def lookup_workflow(name: str) -> WorkflowFunction[Any, Any] | None:
    return _workflows.get(name)
