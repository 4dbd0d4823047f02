"""Operating stored runs: resume a failed or cancelled run, fork a run from a step.

Both change the journal first (one transaction each, statements named in
``_journal.py``), then hand the run to the supervisor exactly as recovery at
open does, so a resumed or forked run replays its kept journal and executes
what comes after it.
"""

from __future__ import annotations

import asyncio
import time

from ._errors import CannotResume
from ._ids import new_run_id
from ._models import RunStatus
from ._supervisor import RunSupervisor

_RESUMABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


class RunOperator:
    """Resume and fork for one engine; one operation at a time, so two resumes never interleave."""

    def __init__(self, runs: RunSupervisor) -> None:
        self._runs = runs
        self._lock = asyncio.Lock()

    async def resume(self, run_id: str) -> RunStatus:
        """Continue the run after its last completed step; the status it had (failed or cancelled).

        The descendants its cancellation cancelled continue with it, each after its own
        last completed step, so a cancel and a resume leave the family as it was. Once
        called, it goes to its end even if its caller is cancelled (the commit and the
        run's return to memory go together).
        """
        return await self._runs.to_the_end(self._resume(run_id), f"durable-resume-{run_id}")

    async def fork(self, run_id: str, from_seq: int) -> str:
        """A new run with the input of ``run_id`` and its journal before ``from_seq``; the new id.

        Once called, it goes to its end even if its caller is cancelled, as ``resume``.
        """
        if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0:
            raise ValueError(f"from_seq must be an integer >= 0, got {from_seq!r}")
        return await self._runs.to_the_end(self._fork(run_id, from_seq), f"durable-fork-{run_id}")

    async def _resume(self, run_id: str) -> RunStatus:
        async with self._lock:
            previous = await self._stopped_status(run_id)
            if previous not in _RESUMABLE:
                raise CannotResume(run_id, f"its status is {previous.value}; only failed or cancelled runs can be resumed")
            journal = self._runs.journal
            family = [(run_id, str((await self._runs.run_row(run_id))[1])), *await journal.cancelled_with(run_id)]
            for member, name in family:
                self._require_workflow(member, name)
                await self._require_tokens(member)
            await journal.commit([statement for member, _ in family for statement in journal.run_resumed(member)])
            for member, _ in family:
                self._runs.forget_cancel(member)
                await self._runs.hooks.load(member)  # before the replay, which finds its hooks there
            await self._runs.resume([member for member, _ in family])
        return previous

    async def _fork(self, run_id: str, from_seq: int) -> str:
        async with self._lock:
            row = await self._runs.run_row(run_id)
            self._require_workflow(run_id, str(row[1]))
            journal = self._runs.journal
            queue = await journal.queue_of(run_id)
            if queue is not None:
                self._runs.queues.check_declared(queue)  # the fork waits in the source's queue
            fork_id = new_run_id()
            queue_seq = None if queue is None else self._runs.queues.next_seq()
            await journal.commit(journal.run_forked(run_id, fork_id, from_seq, time.time(), queue_seq))
            await self._runs.resume([fork_id])
        return fork_id

    async def _stopped_status(self, run_id: str) -> RunStatus:
        """The run's status once no execution of it is in memory (a cancel may still unwind)."""
        while (run := self._runs.active.get(run_id)) is not None and run.status in _RESUMABLE:
            await run.wait_stopped()
        return await self._runs.status(run_id)

    async def _require_tokens(self, run_id: str) -> None:
        taken = await self._runs.journal.tokens_taken(run_id)
        if taken:
            token, holder = taken[0]
            raise CannotResume(run_id, f"its hook token {token!r} is now held by run {holder}: let that run release it first")

    def _require_workflow(self, run_id: str, name: str) -> None:
        if self._runs.catalog.get(name) is None:
            raise CannotResume(
                run_id,
                f"its workflow {name!r} is not registered in this engine: continue it in a process that "
                "registers it (Engine(path, workflows=[...]), or the server that runs it)",
            )
