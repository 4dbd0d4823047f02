"""Engine objects passed by value: stream writers, stream readers and step functions.

A workflow can hand a step its ``StreamWriter`` (the step then writes to the
run's stream, with a step's at-most-once rule), a step can return an async
iterator (its items become a stream of the run and the workflow gets a
``StreamReader`` of them), and a ``@step`` can be passed to another step. Each
is stored as a small tagged value (``_values.register_type``) and rebuilt where
it is decoded: in the same run, or, for a reader, wherever the run's result is read.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._context import current_run
from ._operations import StreamWriter
from ._registry import StepFunction
from ._values import decode, register_type

if TYPE_CHECKING:
    from ._runtime import RunContext
    from ._supervisor import RunSupervisor

#: The engine whose ``Run.result()`` is decoding: a reader in the result reads from it.
reading_engine: ContextVar[RunSupervisor | None] = ContextVar("durable_reading_engine", default=None)


def _this_run(what: str) -> RunContext:
    run = current_run.get()
    if run is None:
        raise RuntimeError(f"a {what} can only be used inside the workflow run it belongs to")
    return run


# -- stream writers ------------------------------------------------------------------------


def _writer_to_value(writer: StreamWriter) -> Any:
    return {"run": writer.run_id, "namespace": writer.namespace}


def _writer_from_value(value: Any) -> StreamWriter:
    run = _this_run("stream writer")
    if run.run_id != value["run"]:
        raise RuntimeError(f"the stream writer of run {value['run']} was passed to run {run.run_id}: pass values, not writers")
    return StreamWriter(run, value["namespace"])


register_type(StreamWriter, _writer_to_value, _writer_from_value)


# -- stream readers ------------------------------------------------------------------------


class StreamReader:
    """The items of a stream of a run, from the first: what a workflow gets from a step
    that returned an async iterator. Iterating reads the journal, so it survives restarts."""

    def __init__(self, run_id: str, namespace: str, engine: RunSupervisor | None = None) -> None:
        self.run_id = run_id
        self.namespace = namespace
        self._engine = engine

    def __repr__(self) -> str:
        return f"<StreamReader {self.run_id} {self.namespace!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamReader) and (other.run_id, other.namespace) == (self.run_id, self.namespace)

    def __hash__(self) -> int:
        return hash((self.run_id, self.namespace))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncGenerator[Any, None]:
        engine = self._engine
        if engine is None:
            raise RuntimeError("this stream reader is not bound to an engine: read it from run.result() or a workflow")
        reader = engine.read(self.run_id, 0, self.namespace)
        try:
            async for chunk in reader:
                yield decode(chunk.data)
        finally:
            await reader.aclose()


def _reader_to_value(reader: StreamReader) -> Any:
    return {"run": reader.run_id, "namespace": reader.namespace}


def decode_result(data: bytes, engine: RunSupervisor) -> Any:
    """A run's stored result, with the stream readers in it bound to ``engine``."""
    token = reading_engine.set(engine)
    try:
        return decode(data)
    finally:
        reading_engine.reset(token)


def _reader_from_value(value: Any) -> StreamReader:
    run = current_run.get()
    engine = reading_engine.get() or (None if run is None else run.host)
    return StreamReader(value["run"], value["namespace"], engine)  # type: ignore[arg-type]


register_type(StreamReader, _reader_to_value, _reader_from_value)


async def store_items(run: RunContext, seq: int, items: AsyncIterator[Any]) -> StreamReader:
    """Write a step's async iterator to a stream of its own (at most once per item), then close it."""
    namespace = f"step:{seq}"
    async for item in items:
        await run.write(namespace, item)
    await run.close_stream(namespace)
    return StreamReader(run.run_id, namespace)


def is_async_iterator(value: Any) -> bool:
    return hasattr(value, "__anext__") and hasattr(value, "__aiter__")


# -- step functions ------------------------------------------------------------------------


def _step_to_value(fn: StepFunction[Any, Any]) -> Any:
    run = current_run.get()
    if run is not None:
        run.passed_steps[fn.name] = fn  # a step defined in the body is found again by its name
    return {"name": fn.name, "origin": f"{fn.fn.__module__}:{fn.fn.__qualname__}"}


def _step_from_value(value: Any) -> StepFunction[Any, Any]:
    run = current_run.get()
    known = None if run is None else run.passed_steps.get(value["name"])
    if known is not None:
        return known
    module_name, _, qualname = value["origin"].partition(":")
    if "<locals>" in qualname:
        raise RuntimeError(f"step {value['name']} was defined inside a function: it can only be passed within its run")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not isinstance(target, StepFunction):
        raise RuntimeError(f"{value['origin']} is not a @step function")
    return target


register_type(StepFunction, _step_to_value, _step_from_value)
