"""The active hooks of one engine, and how a payload reaches the run that waits for it.

The journal is the truth: a unique index on the tokens of active hooks, payloads
numbered per hook in arrival order. Because an engine owns its file alone, this
registry mirrors the active hooks in memory and takes every decision at once,
when a statement is submitted: a token is reserved before its insert is queued,
a payload takes its index and, if a receive of the run waits, that receive.
The writer commits statements in submission order, so the journal records the
decisions in the order they were taken. Two triggers back this up: a run's
hooks are released in the transaction of its final status, and a payload for a
hook released meanwhile is refused (``HookNotFound``, nothing stored).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ._errors import EngineClosed, HookNotFound
from ._journal import Journal, is_hook_released
from ._serde import to_datetime
from ._values import decode, encode


@dataclass(frozen=True, slots=True)
class HookInfo:
    """An active hook: its token, the run that created it, its metadata and kind ("hook" or "webhook")."""

    token: str
    run_id: str
    metadata: Any
    created_at: datetime
    kind: str


@dataclass(frozen=True, slots=True)
class Payload:
    """A stored payload of a hook: its index in arrival order and its JSON bytes."""

    index: int
    data: bytes
    received_at: float


class Receiver(Protocol):
    """A receive of the workflow that took a payload before its insert committed."""

    seq: int

    def bound(self, payload: Payload) -> None:
        """The payload's insert committed: hand it over."""

    def unbound(self) -> None:
        """The insert failed: wait again."""


class Channel(Protocol):
    """The hook as its run holds it in memory."""

    def receiver_for(self, payload: Payload) -> Receiver | None:
        """The oldest waiting receive, which takes ``payload``; ``None`` to buffer it."""

    def offer(self) -> None:
        """Payloads were buffered: give them to waiting receives."""

    def released(self) -> None:
        """The hook was released: nothing more will arrive."""


class ActiveHook:
    """One active hook in memory: identity, next payload index, keys, buffered payloads."""

    __slots__ = (
        "buffer",
        "channel",
        "created_at",
        "keys",
        "kind",
        "metadata",
        "next_index",
        "respond_with",
        "run_id",
        "seq",
        "token",
        "validate",
    )

    def __init__(self, token: str, run_id: str, seq: int, kind: str, metadata: Any, respond_with: Any, created_at: float) -> None:
        self.token = token
        self.run_id = run_id
        self.seq = seq
        self.kind = kind
        self.metadata = metadata
        self.respond_with = respond_with  # webhooks: None, "manual" or the static response
        self.created_at = created_at
        self.next_index = 0
        # Idempotency keys: the commit of the payload that brought one (None once committed).
        self.keys: dict[str, asyncio.Future[None] | None] = {}
        self.buffer: list[Payload] = []  # stored, taken by no receive yet; by index
        self.channel: Channel | None = None
        self.validate: Callable[[Any], Any] | None = None  # a typed hook's converter, known while its run runs

    def info(self) -> HookInfo:
        created = to_datetime(self.created_at)
        assert created is not None
        return HookInfo(self.token, self.run_id, self.metadata, created, self.kind)

    def put_back(self, payload: Payload) -> None:
        """Buffer a payload again (stored, or given back by a receive cancelled before the body got it)."""
        bisect.insort(self.buffer, payload, key=lambda p: p.index)
        if self.channel is not None:
            self.channel.offer()


def _hook_from_row(row: tuple[Any, ...]) -> ActiveHook:
    token, run_id, seq, kind, metadata, respond_with, created_at = row
    config = None if respond_with is None else decode(respond_with)
    return ActiveHook(token, run_id, int(seq), kind, decode(metadata), config, created_at)


def hook_info(row: tuple[Any, ...]) -> HookInfo:
    """A ``HookInfo`` from the journal's hook columns."""
    return _hook_from_row(row).info()


class HookRegistry:
    """The active hooks of one engine by token and by (run, seq)."""

    def __init__(self, journal: Journal, run_is_over: Callable[[str], bool]) -> None:
        self.journal = journal
        # Whether a run in memory has taken its final status (its commit may be in flight):
        # its hooks count as released from then on.
        self._run_is_over = run_is_over
        self._by_token: dict[str, ActiveHook] = {}
        self._by_run: dict[str, dict[int, ActiveHook]] = {}
        # Manual webhook responses awaited by resume_webhook, per run, by request id.
        self._responses: dict[str, dict[str, asyncio.Future[Any]]] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    async def load(self, run_id: str | None = None) -> None:
        """Mirror the journal's active hooks and their buffered payloads: all (at open), or one run's (resumed)."""
        if run_id is None:
            self._by_token.clear()
            self._by_run.clear()
        for row in await self.journal.active_hooks(run_id):
            self._add(_hook_from_row(row))
        for owner, seq, idx, data, key, received_at in await self.journal.active_hook_payloads(run_id):
            entry = self._by_run[owner][seq]
            entry.next_index = max(entry.next_index, idx + 1)
            if key is not None:
                entry.keys[key] = None
            if data is not None:
                entry.buffer.append(Payload(idx, bytes(data), received_at))

    def close(self) -> None:
        self._by_token.clear()
        self._by_run.clear()
        for futures in self._responses.values():
            for future in futures.values():
                if not future.done():
                    future.set_exception(EngineClosed("The engine closed while a webhook waited for its response."))
        self._responses.clear()

    # -- tokens -----------------------------------------------------------------

    def holder(self, token: str) -> ActiveHook | None:
        """The active hook holding ``token``, if any."""
        entry = self._by_token.get(token)
        if entry is not None and self._run_is_over(entry.run_id):
            self.release_run(entry.run_id)
            return None
        return entry

    def of_run(self, run_id: str, seq: int) -> ActiveHook | None:
        """The active hook a run created at ``seq`` (a replay finds its hooks here)."""
        return self._by_run.get(run_id, {}).get(seq)

    def reserve(self, entry: ActiveHook) -> None:
        """Register a new hook; the caller checked that its token is free."""
        self._add(entry)

    def _add(self, entry: ActiveHook) -> None:
        self._by_token[entry.token] = entry
        self._by_run.setdefault(entry.run_id, {})[entry.seq] = entry

    def release(self, entry: ActiveHook) -> None:
        """The hook is released (disposed, or its run ended): its token is free."""
        if self._by_token.get(entry.token) is entry:
            del self._by_token[entry.token]
        hooks = self._by_run.get(entry.run_id)
        if hooks is not None and hooks.get(entry.seq) is entry:
            del hooks[entry.seq]
            if not hooks:
                del self._by_run[entry.run_id]
        channel, entry.channel = entry.channel, None
        entry.buffer.clear()
        if channel is not None:
            channel.released()

    def release_run(self, run_id: str) -> None:
        """The run took its final status: release its hooks, end its awaited manual responses."""
        for entry in list(self._by_run.get(run_id, {}).values()):
            self.release(entry)
        for future in self._responses.pop(run_id, {}).values():
            if not future.done():
                future.set_result(None)  # no response will come

    # -- payloads -----------------------------------------------------------------

    def active(self, token: str, kind: str) -> ActiveHook:
        entry = self.holder(token)
        if entry is None or entry.kind != kind:
            raise HookNotFound(token, kind)
        return entry

    async def resume(
        self, token: str, kind: str, value: Any, key: str | None, on_index: Callable[[int], None] | None = None
    ) -> ActiveHook:
        """Store a payload for the active hook (of ``kind``) holding ``token``: committed on return.

        A repeated ``key`` stores nothing. ``on_index`` learns the payload's index
        before the payload can reach the run.
        """
        data = encode(value, where="payload")  # pass by value, and a TypeError before anything is written
        entry = self.active(token, kind)
        if entry.validate is not None:
            entry.validate(decode(data))  # a typed hook: ValueError naming the field, nothing stored
        if key is not None and key in entry.keys:
            first = entry.keys[key]
            if first is not None:  # the first payload with this key is committing: its outcome is ours
                await asyncio.shield(first)
            return entry
        index = entry.next_index
        entry.next_index += 1
        if on_index is not None:
            on_index(index)
        await self._committed(entry, Payload(index, data, time.time()), key)
        return entry

    async def _committed(self, entry: ActiveHook, payload: Payload, key: str | None) -> None:
        commit = self._store(entry, payload, key)
        if key is not None:
            entry.keys[key] = commit
        try:
            await commit
        except Exception as exc:
            if is_hook_released(exc):
                raise HookNotFound(entry.token, entry.kind) from None
            raise
        if key is not None and entry.keys.get(key) is commit:
            entry.keys[key] = None

    def _store(self, entry: ActiveHook, payload: Payload, key: str | None) -> asyncio.Future[None]:
        channel = entry.channel
        receiver = channel.receiver_for(payload) if channel is not None else None
        consumed = None if receiver is None else receiver.seq
        statement = self.journal.hook_payload(
            entry.run_id, entry.seq, payload.index, payload.data, key, payload.received_at, consumed
        )

        def committed() -> None:
            if receiver is not None:
                receiver.bound(payload)
            else:
                entry.put_back(payload)

        def failed(exc: BaseException) -> None:
            if receiver is not None:
                receiver.unbound()
            if key is not None:
                entry.keys.pop(key, None)
            if is_hook_released(exc):
                self.release(entry)

        return self.journal.commit([statement], committed, failed)

    # -- manual webhook responses -----------------------------------------------------

    def expect_response(self, run_id: str, request_id: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._responses.setdefault(run_id, {})[request_id] = future
        return future

    def forget_response(self, run_id: str, request_id: str) -> None:
        futures = self._responses.get(run_id)
        if futures is not None:
            futures.pop(request_id, None)
            if not futures:
                del self._responses[run_id]

    def respond(self, run_id: str, request_id: str, response: Any) -> bool:
        """Give the response a resume_webhook call waits for; whether one was waiting."""
        future = self._responses.get(run_id, {}).get(request_id)
        if future is None or future.done():
            return False
        future.set_result(response)
        return True
