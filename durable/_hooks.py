"""Hooks in a workflow body: ``create_hook``, the ``Hook`` it returns, and its receives.

Creating a hook is a durable operation (kind ``hook``): it takes a sequence
number and registers the token. Each receive (``await hook``, ``hook.wait()``,
one step of ``async for``) is one too (kind ``receive``), taken when called.
The journal says which payload each receive got: the payload's row holds the
receive's sequence number and when it took it (its completion time, by which a
replay orders it among the run's other results). A receive gets a payload only
once that is committed, so whatever the body did with a payload, a replay gives
it the same one. A receive the body cancels before it got its payload gives the
payload back: the next receive takes it, nothing is lost.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import secrets
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._context import current_run, current_step
from ._errors import HookConflict, HookTimeout
from ._futures import settle_error
from ._hook_registry import ActiveHook, Payload
from ._replay import Recorded, receive_name
from ._serde import Duration, parse_duration
from ._values import decode, encode

if TYPE_CHECKING:
    from ._runtime import RunContext

T = TypeVar("T")

TOKEN_BYTES = 24  # default tokens carry 192 random bits: a webhook's token is its only credential
MAX_TOKEN_LENGTH = 256

Convert = Callable[[Any], Any]


def body_run(what: str) -> RunContext:
    """The run whose workflow body is executing; RuntimeError elsewhere."""
    run = current_run.get()
    if run is None or current_step.get() is not None:
        raise RuntimeError(f"{what} must be called in a workflow body, not in a step or outside a workflow")
    return run


def _check_token(token: object) -> str:
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_LENGTH:
        raise ValueError(f"a hook token must be a string of 1 to {MAX_TOKEN_LENGTH} characters, got {token!r:.80}")
    return token


class _State(enum.Enum):
    """Where one receive is."""

    PENDING = "pending"  # waiting for a payload
    BINDING = "binding"  # a payload is being committed as this receive's
    BOUND = "bound"  # its payload is committed (or recorded): being handed to the body
    TIMING_OUT = "timing out"  # the deadline passed: the timeout is being recorded
    WITHDRAWN = "withdrawn"  # the body cancelled it while binding: the payload goes back
    DONE = "done"


class _Receive:
    """One receive operation: what the body awaits, and its way to a payload."""

    __slots__ = ("armed", "deadline", "future", "hook", "iterating", "payload", "seq", "state", "timeout", "wake")

    def __init__(self, hook: Hook[Any], seq: int, iterating: bool, timeout: str | None, deadline: float | None) -> None:
        self.hook = hook
        self.seq = seq
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.iterating = iterating
        self.timeout = timeout
        self.deadline = deadline
        self.state = _State.PENDING
        self.payload: Payload | None = None
        self.wake: asyncio.Future[None] | None = None  # a durable wait of the run: cancel, and the deadline
        self.armed = False
        self.future.add_done_callback(self._future_done)

    # -- the registry's side: a payload committed for this receive -----------------

    def bound(self, payload: Payload, taken_at: float | None = None) -> None:
        if self.state is _State.WITHDRAWN:
            self.state = _State.DONE
            self.hook.give_back(self, payload)
            return
        self.state = _State.BOUND
        self.payload = payload
        self._end_wake()
        moment = payload.received_at if taken_at is None else taken_at
        self.hook.hand_over_at(self, moment)

    def unbound(self) -> None:
        self.hook.flight_over(self)
        if self.state is _State.WITHDRAWN:
            self.state = _State.DONE
        elif self.state is _State.BINDING:
            self.state = _State.PENDING
            self.hook.wait_again(self)

    def hand_over(self) -> None:
        """Give the bound payload (or the timeout) to the body, unless it cancelled the receive meanwhile."""
        if self.future.done():
            return
        if self.payload is None:
            self.state = _State.DONE
            self.future.set_exception(HookTimeout(self.hook.token, self.timeout or "its timeout"))
            return
        self.state = _State.DONE
        try:
            value = self.hook.convert(decode(self.payload.data), self.payload.index)
        except Exception as exc:  # a typed hook's payload that does not fit: raised where it is awaited
            self.future.set_exception(exc)
        else:
            self.future.set_result(value)
        self.hook.flight_over(self)

    # -- the run's side: cancellation, the deadline, the body giving up ---------------

    def woken(self, wake: asyncio.Future[None]) -> None:
        if self.state is not _State.PENDING or wake.cancelled():
            return
        self.hook.leave(self)
        error = wake.exception()
        if error is not None:  # the run was cancelled
            self.state = _State.DONE
            settle_error(self.future, error)
            return
        self.state = _State.TIMING_OUT
        self.hook.record_timeout(self)

    def timed_out(self) -> None:
        self.state = _State.BOUND  # bound to its timeout
        assert self.deadline is not None
        self.hook.hand_over_at(self, self.deadline)

    def end(self, error: BaseException) -> None:
        self.state = _State.DONE
        self._end_wake()
        settle_error(self.future, error)

    def _future_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            return
        state = self.state
        if state is _State.PENDING:
            self.state = _State.DONE
            self.hook.leave(self)
            self._end_wake()
        elif state is _State.BINDING:
            self.state = _State.WITHDRAWN
        elif state is _State.BOUND and self.payload is not None:
            self.state = _State.DONE
            self.hook.give_back(self, self.payload)

    def _end_wake(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            if self.armed:
                wake.cancel()  # it sits in the timer queue: the queue learns it ended early
            else:
                wake.set_result(None)


class Hook(Generic[T]):
    """A hook of a workflow run: ``await hook`` for the first payload, ``async for`` for all of them.

    ``hook.wait(timeout=...)`` receives the next payload or raises ``HookTimeout``
    when the durable timer fires first; ``hook.dispose()`` releases the token.
    Receive in the workflow body that created it.
    """

    kind = "hook"

    def __init__(
        self, run: RunContext, seq: int, token: str, entry: ActiveHook | None, convert: Convert | None, config: Any = None
    ) -> None:
        self.run = run
        self.config = config  # a webhook's respond_with
        self.seq = seq
        self.token = token
        self._entry = entry  # None once released: disposed, or found released on replay
        self._convert = convert
        self._label = receive_name(seq)
        self._waiting: deque[_Receive] = deque()
        # The one payload on its way to the body (being committed or handed over). Others
        # wait until it arrived: one the body gives back then still comes first.
        self._in_flight: _Receive | None = None
        self._awaited = False
        if entry is not None:
            entry.channel = self
            entry.validate = convert

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.token!r} of run {self.run.run_id}>"

    # -- receiving ------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, T]:
        if self._awaited:
            raise RuntimeError(f"{self!r} was awaited already: use hook.wait() or 'async for' for the next payloads")
        self._awaited = True
        return self._receive(None, iterating=False).__await__()

    def wait(self, timeout: Duration | None = None) -> asyncio.Future[T]:
        """The next payload; with ``timeout``, ``HookTimeout`` if none arrives in time (a durable timer)."""
        return self._receive(timeout, iterating=False)

    def __aiter__(self) -> Hook[T]:
        return self

    def __anext__(self) -> asyncio.Future[T]:
        return self._receive(None, iterating=True)

    def _receive(self, timeout: Duration | None, iterating: bool) -> asyncio.Future[Any]:
        run = self.run
        if current_run.get() is not run or current_step.get() is not None:
            raise RuntimeError(f"{self!r} can only be received from in the workflow body that created it")
        seconds = None if timeout is None else parse_duration(timeout)
        seq, rec = run._claim("receive", self._label)
        if rec is not None and rec.state in ("completed", "timeout"):
            return self._replayed(seq, rec, timeout)
        run.check_not_cancelled()
        deadline = rec.wake_at if rec is not None else None
        if deadline is None and seconds is not None:
            deadline = time.time() + seconds
        receive = _Receive(self, seq, iterating, None if timeout is None else str(timeout), deadline)
        self._start(receive, durable_deadline=rec is not None)
        return receive.future

    def _replayed(self, seq: int, rec: Recorded, timeout: Duration | None) -> asyncio.Future[Any]:
        receive = _Receive(self, seq, False, None if timeout is None else str(timeout), rec.wake_at)
        if rec.state == "timeout":
            receive.state = _State.DONE
            error = HookTimeout(self.token, receive.timeout or "its timeout")
            self.run._deliver_recorded(seq, rec, lambda: settle_error(receive.future, error))
        else:
            receive.state = _State.BOUND
            receive.payload = Payload(self.run.received.get(seq, -1), rec.result or b"null", rec.completed_at or 0.0)
            self.run._deliver_recorded(seq, rec, receive.hand_over)
        return receive.future

    def _start(self, receive: _Receive, durable_deadline: bool) -> None:
        entry = self._entry
        if entry is None:
            self._end(receive)
        elif entry.buffer and self._in_flight is None:
            self._take_buffered(receive, entry)
        else:
            self._wait_for_payload(receive, durable_deadline)

    def _wait_for_payload(self, receive: _Receive, durable_deadline: bool) -> None:
        run = self.run
        wake = run._new_wait()
        receive.wake = wake
        wake.add_done_callback(receive.woken)
        self._waiting.append(receive)
        deadline = receive.deadline
        if deadline is None:
            return
        if durable_deadline:  # recorded by an earlier execution
            receive.armed = True
            run._arm(wake, deadline)
            return
        journal = run.host.journal

        def committed() -> None:  # the timer counts once its deadline is journaled
            receive.armed = True
            run._arm(wake, deadline)

        statement = journal.receive_started(run.run_id, receive.seq, self._label, time.time(), deadline)
        journal.commit_then([statement], committed, run._commit_failed, run)

    def _take_buffered(self, receive: _Receive, entry: ActiveHook) -> None:
        payload = entry.buffer.pop(0)
        receive.state = _State.BINDING
        self._in_flight = receive
        run = self.run
        taken_at = time.time()
        journal = run.host.journal

        def failed(exc: BaseException) -> None:
            run._commit_failed(exc)
            bisect.insort(entry.buffer, payload, key=lambda p: p.index)  # still stored, still free

        statement = journal.payload_consumed(run.run_id, self.seq, payload.index, receive.seq, taken_at)
        journal.commit_then([statement], lambda: receive.bound(payload, taken_at), failed, run)

    # -- the registry's Channel -----------------------------------------------------

    def receiver_for(self, payload: Payload) -> _Receive | None:
        if self._in_flight is not None or self.run.phase.stopped or not self._waiting:
            return None
        receive = self._waiting.popleft()
        receive.state = _State.BINDING
        self._in_flight = receive
        return receive

    def offer(self) -> None:
        entry = self._entry
        if self._in_flight is None and entry is not None and entry.buffer and self._waiting and not self.run.phase.stopped:
            self._take_buffered(self._waiting.popleft(), entry)

    def flight_over(self, receive: _Receive) -> None:
        """``receive`` no longer carries a payload to the body: the next one may go."""
        if self._in_flight is receive:
            self._in_flight = None
            self.offer()

    # -- helpers of the receives ------------------------------------------------------

    def convert(self, value: Any, index: int) -> Any:
        """A stored payload as the body receives it."""
        return value if self._convert is None else self._convert(value)

    def leave(self, receive: _Receive) -> None:
        if receive in self._waiting:
            self._waiting.remove(receive)

    def wait_again(self, receive: _Receive) -> None:
        if self._entry is None:
            self._end(receive)
        else:
            self._waiting.appendleft(receive)
            self.offer()

    def _end(self, receive: _Receive) -> None:
        """No payload can come any more: ``async for`` ends, an await raises."""
        receive.end(
            StopAsyncIteration() if receive.iterating else RuntimeError(f"{self!r} was released: it receives nothing more")
        )
        if not receive.future.cancelled():
            receive.future.exception()  # raised where it is awaited; a run that ended awaits nothing: no log

    def give_back(self, receive: _Receive, payload: Payload) -> None:
        """A receive the body cancelled had taken ``payload``: free it for the next one, first."""
        run = self.run
        journal = run.host.journal
        returned = journal.payload_returned(run.run_id, self.seq, payload.index, receive.seq)
        journal.commit_then([returned], _nothing, run._commit_failed, run)
        if self._in_flight is receive:
            self._in_flight = None
        if self._entry is not None:
            self._entry.put_back(payload)  # and offers it

    def hand_over_at(self, receive: _Receive, moment: float) -> None:
        """Hand over what completed at ``moment`` (its record committed), in turn if a replay is going on."""
        self.run.deliver_live(moment, receive.hand_over)

    def record_timeout(self, receive: _Receive) -> None:
        run = self.run
        journal = run.host.journal
        assert receive.deadline is not None
        statement = journal.receive_timed_out(run.run_id, receive.seq, receive.deadline)
        journal.commit_then([statement], receive.timed_out, run._commit_failed, run)

    # -- releasing ------------------------------------------------------------------------

    def dispose(self) -> None:
        """Release the token now (it is released anyway when the run ends); receiving ends."""
        entry = self._entry
        if entry is None:
            return
        run = self.run
        run.host.hooks.release(entry)  # calls released()
        journal = run.host.journal
        journal.commit_then([journal.hook_released(run.run_id, self.seq, time.time())], _nothing, run._commit_failed, run)

    def released(self) -> None:
        """The registry released the token (dispose, or the run ended): pending receives end."""
        self._entry = None
        while self._waiting:
            self._end(self._waiting.popleft())


def _nothing() -> None:
    pass


def new_hook(cls: type[Hook[Any]], token: str | None, metadata: Any, respond_with: Any, convert: Convert | None) -> Hook[Any]:
    """Create (or on replay, recreate) a hook of the current workflow body."""
    run = body_run(f"create_{cls.kind}()")
    meta = encode(metadata, where="metadata")  # a TypeError here, before anything is written
    config = None if respond_with is None else encode(respond_with, where="respond_with")
    label = cls.kind if token is None else f"{cls.kind}:{_check_token(token)}"
    seq, rec = run._claim("hook", label)
    if rec is not None:
        return _recreated(cls, run, seq, rec, convert)
    run.check_not_cancelled()
    token = token if token is not None else secrets.token_urlsafe(TOKEN_BYTES)
    registry, journal = run.host.hooks, run.host.journal
    now = time.time()
    holder = registry.holder(token)
    if holder is not None:
        conflict = journal.hook_conflict(run.run_id, seq, label, encode({"token": token, "owner": holder.run_id}), now)
        journal.commit_then([conflict], _nothing, run._commit_failed, run)
        raise HookConflict(token, holder.run_id)
    entry = ActiveHook(token, run.run_id, seq, cls.kind, decode(meta), respond_with, now)
    registry.reserve(entry)
    hook = cls(run, seq, token, entry, convert, respond_with)

    def failed(exc: BaseException) -> None:
        registry.release(entry)
        run._commit_failed(exc)

    result = encode({"token": token} if respond_with is None else {"token": token, "respond_with": respond_with})
    created = journal.hook_created(run.run_id, seq, label, result, token, cls.kind, meta, config, now)
    journal.commit_then(created, _nothing, failed, run)
    return hook


def _recreated(cls: type[Hook[Any]], run: RunContext, seq: int, rec: Recorded, convert: Convert | None) -> Hook[Any]:
    info = decode(rec.result or b"{}")
    if rec.state == "conflict":
        raise HookConflict(info["token"], info["owner"])
    return cls(run, seq, info["token"], run.host.hooks.of_run(run.run_id, seq), convert, info.get("respond_with"))


def create_hook(token: str | None = None, metadata: Any = None) -> Hook[Any]:
    """A hook of this workflow run, resumed by ``engine.resume_hook(token, payload)``.

    ``token`` defaults to 192 random bits; a token held by another active hook
    raises ``HookConflict`` naming the run that holds it.
    """
    return new_hook(Hook, token, metadata, None, None)
