"""One step call of a run: its attempts, their journal records, its retries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ._context import StepScope, current_step
from ._errors import FatalError, RetryableError, RunCancelled, StepFailed
from ._failures import ErrorInfo
from ._passing import is_async_iterator, store_items
from ._replay import Recorded
from ._serde import parse_duration
from ._values import decode, decode_call, encode

if TYPE_CHECKING:
    from ._registry import StepFunction
    from ._runtime import RunContext

BACKOFF_BASE_S = 1.0


@dataclass(slots=True)
class _Attempt:
    """What one execution of the step function gave."""

    number: int
    started: float
    ended: float
    result: bytes | None  # the stored value, when it succeeded
    failure: BaseException | None
    value: Any = None  # ``result`` read back: what the body gets, live as on replay


def retry_delay(failure: BaseException, attempt: int) -> float:
    """Seconds before the next attempt: ``retry_after`` when the step gave one, else exponential."""
    if isinstance(failure, RetryableError) and failure.retry_after is not None:
        try:
            return parse_duration(failure.retry_after)
        except ValueError:
            pass
    return float(BACKOFF_BASE_S * 2 ** (attempt - 1))


class StepCall:
    """Executes one step of a run until it succeeds, fails for good, or the run is cancelled.

    The outcome goes to ``future`` (what the workflow awaits) only after the journal
    holds it, so a result the body sees is never lost by a crash.
    """

    def __init__(
        self,
        run: RunContext,
        step: StepFunction[Any, Any],
        seq: int,
        payload: bytes,
        future: asyncio.Future[Any],
        recorded: Recorded | None,
    ) -> None:
        self.run = run
        self.step = step
        self.seq = seq
        self.payload = payload
        self.future = future
        self.next_attempt = (recorded.failed_attempts if recorded else 0) + 1
        self.retry_at = recorded.retry_at if recorded else None
        self._succeeded: _Attempt | None = None  # the attempt whose result is being journaled

    async def execute(self) -> None:
        try:
            while True:  # one attempt per turn, after its retry wait
                if self.retry_at is not None:
                    await self.run.wait_until(self.retry_at)
                self.run.check_not_cancelled()
                attempt = await self._attempt()
                if attempt.failure is None:
                    self._record_success(attempt)
                    return
                if await self._record_failure(attempt, attempt.failure):
                    return
        except RunCancelled as exc:
            self._settle_error(exc)
        except asyncio.CancelledError:
            self._abandoned()
            raise
        except Exception as exc:  # the journal could not be written: the run is faulted
            self._settle_error(exc)
        finally:
            # Here rather than in a done callback: one loop callback fewer per step. Not
            # kept on self: a cancelled task keeps its error, whose traceback holds this
            # frame and so this object, which would make a cycle with the task.
            self.run.steps.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    async def _attempt(self) -> _Attempt:
        args, kwargs = decode_call(self.payload)
        number = self.next_attempt
        started = time.time()
        token = current_step.set(StepScope(self.run, self.seq, self.step.name, number, started))
        try:
            value = await self.step.fn(*args, **kwargs)
            if is_async_iterator(value):  # its items become a stream of the run
                value = await store_items(self.run, self.seq, value)
        except Exception as exc:
            return _Attempt(number, started, time.time(), None, exc)
        finally:
            current_step.reset(token)
        try:
            data = encode(value, where="result")
        except TypeError as exc:
            failure = FatalError(f"step {self.step.name} returned a value that cannot be stored: {exc}")
            return _Attempt(number, started, time.time(), None, failure)
        try:
            # Read back here, in the step's task (a stream reader binds to this run's engine),
            # and before anything is journaled: a value that the body could not get on replay
            # either fails the step, journaled like any failure, rather than surfacing raw.
            stored = decode(data)
        except Exception as exc:
            failure = FatalError(f"step {self.step.name} returned a value that cannot be read back: {exc!r}")
            return _Attempt(number, started, time.time(), None, failure)
        return _Attempt(number, started, time.time(), data, None, stored)

    def _record_success(self, attempt: _Attempt) -> None:
        """Journal the result; the body gets it once committed.

        The step's task ends here, without waiting for the commit: the commit's
        callback hands the result over, which saves a task wake-up per step. The
        step has finished executing, which is what a cancel waits for; its result
        commits before anything the run writes later (the writer keeps order).
        """
        run, data = self.run, attempt.result
        assert data is not None
        abandoned = self.future.cancelled()  # the body stopped waiting (asyncio.wait_for timed out)
        number, started, ended = attempt.number, attempt.started, attempt.ended
        completed = run.host.journal.step_completed(run.run_id, self.seq, self.step.name, data, number, started, ended, abandoned)
        self._succeeded = attempt
        run.commit_then([completed], self._committed, self._settle_error)

    def _committed(self) -> None:
        """The result is journaled: the body may have it."""
        assert self._succeeded is not None
        self.run.step_parts.pop(self.seq, None)
        self.run.deliver_live(self._succeeded.ended, self._hand_over)

    def _hand_over(self) -> None:
        assert self._succeeded is not None
        if not self.future.done():
            self.future.set_result(self._succeeded.value)

    async def _record_failure(self, attempt: _Attempt, failure: BaseException) -> bool:
        """Journal a failed attempt (and the step's failure when it was the last); whether it was."""
        run, name = self.run, self.step.name
        journal = run.host.journal
        error = ErrorInfo.of(failure)
        final = isinstance(failure, FatalError) or attempt.number > self.step.max_retries
        self.retry_at = None if final else attempt.ended + retry_delay(failure, attempt.number)
        number, started, ended = attempt.number, attempt.started, attempt.ended
        statements = [journal.attempt_failed(run.run_id, self.seq, name, number, started, ended, error, self.retry_at)]
        if final:
            info = orjson.dumps({"step": name, "type": error.error_type, "message": error.message, "stack": error.stack})
            abandoned = self.future.cancelled()
            statements.append(journal.step_failed(run.run_id, self.seq, name, info, number, started, ended, abandoned))
        await run.commit(statements)
        if final:
            failed = StepFailed(name, error.error_type, error.message, error.stack)
            run.deliver_live(ended, lambda: self._settle_error(failed))
        self.next_attempt = number + 1
        return final

    def _settle_error(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def _abandoned(self) -> None:
        """The task was cancelled: by cancel() out of patience, by a fault, or by close()."""
        if self.future.done():
            return
        if self.run.is_cancelling:
            self.future.set_exception(RunCancelled(self.run.run_id, self.run.cancel_reason))
        else:
            self.future.cancel()
