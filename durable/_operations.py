"""The functions workflow and step code calls: sleep, streams, the engine's resources."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._context import current_run, current_step
from ._serde import Duration, wake_time
from ._streams import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from ._runtime import RunContext

T = TypeVar("T")


def sleep(until: Duration | datetime) -> Awaitable[None]:
    """Sleep durably: "500ms", "1s", "5m", "2h", "7 days", a timedelta, seconds, or until a datetime."""
    run = current_run.get()
    if run is None or current_step.get() is not None:
        return asyncio.sleep(max(0.0, wake_time(until, time.time()) - time.time()))
    return run.sleep(until)


class StreamWriter:
    """Writes values to one stream of the current run."""

    def __init__(self, run: RunContext, namespace: str) -> None:
        self._run = run
        self.namespace = namespace

    @property
    def run_id(self) -> str:
        return self._run.run_id

    def write(self, value: Any) -> Awaitable[None]:
        """Store ``value`` as the stream's next chunk; resolves once committed."""
        return self._run.write(self.namespace, value)

    def close(self) -> Awaitable[None]:
        """Close the stream: its readers end."""
        return self._run.close_stream(self.namespace)


def get_writable(namespace: str | None = None) -> StreamWriter:
    """The writer of the current run's stream ``namespace`` (in a workflow body or a step)."""
    run = current_run.get()
    if run is None:
        raise RuntimeError("get_writable() must be called inside a workflow or one of its steps")
    return StreamWriter(run, DEFAULT_NAMESPACE if namespace is None else namespace)


def now() -> datetime:
    """The current time, deterministic in a workflow body.

    In a body it is the run's clock: its start time, then the completion time of
    each result the body received, so a replay sees the same values. In a step or
    outside a workflow it is the wall clock (UTC).
    """
    run = current_run.get()
    if run is None or current_step.get() is not None:
        return datetime.now(UTC)
    return run.now()


@overload
def get_resources() -> Any: ...
@overload
def get_resources(expected: type[T]) -> T: ...
def get_resources(expected: type[T] | None = None) -> Any:
    """The ``resources`` of the engine running the current workflow or step.

    Steps reach the application's objects (a database store, a client) this way
    instead of through module globals, so two engines in one process stay apart.
    With ``expected``, a ``TypeError`` says so when the resources are of another type.
    """
    run = current_run.get()
    if run is None:
        raise RuntimeError("get_resources() must be called inside a workflow or one of its steps")
    resources = run.host.resources
    if expected is not None and not isinstance(resources, expected):
        raise TypeError(
            f"the engine's resources are {type(resources).__name__}, not {expected.__name__}: "
            "pass them with Engine(path, resources=...)"
        )
    return resources
