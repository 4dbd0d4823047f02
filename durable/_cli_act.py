"""The CLI's commands that change runs: cancel, resume, fork.

A database held by a running server is changed only through that server
(``--url``, the inspector's HTTP endpoints): two engines on one file would run
the same workflows twice. Without a holder, the command opens an ``Engine`` on
the file itself; it runs only the workflows of the modules given with
``--import``, so resume and fork need them (and, while the command runs, that
engine also resumes the unfinished runs of those workflows, as any engine does).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._engine import Engine
from ._errors import CannotCancel, CannotResume, RunCancelled, RunFailed, RunNotFound
from ._lock import is_locked, read_holder_pid

__all__ = ["Change", "Outcome", "held_message", "run_change"]

HTTP_TIMEOUT_S = 120.0  # a cancel waits for in-flight steps to finish


@dataclass(frozen=True, slots=True)
class Change:
    """One change a command asks for: ``action`` on ``run_id`` (``from_seq`` for a fork)."""

    action: str  # "cancel" | "resume" | "fork"
    run_id: str
    from_seq: int | None = None


@dataclass(slots=True)
class Outcome:
    """What became of one change: the JSON object printed with ``--json`` and its human line."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        data = self.data
        if not self.ok:
            return f"{data['run_id']}: {data['error']}"
        if "forked_from" in data:
            return f"{data['run_id']}: forked from {data['forked_from']} at step {data['forked_at_seq']} ({data['status']})"
        verb = "cancelled" if data.get("action") == "cancel" else "resumed"
        text = f"{data['run_id']}: {verb} (was {data['previous_status']})"
        return text + (f", then ended {data['ended']}" if "ended" in data else "")


def held_message(db: Path) -> str | None:
    """The refusal for a database that a running server holds, ``None`` when nothing holds it."""
    if not is_locked(db):
        return None
    pid = read_holder_pid(db)
    holder = f"process {pid}" if pid is not None else "another process"
    return f"{db} is held by {holder} (a running server): pass --url http://host:port/workflows to send the command to it"


# -- through a server ---------------------------------------------------------------------


def _endpoint(base: str, change: Change) -> tuple[str, dict[str, Any]]:
    path = f"{base.rstrip('/')}/runs/{urllib.parse.quote(change.run_id, safe='')}/{change.action}"
    return path, ({"from_seq": change.from_seq} if change.action == "fork" else {})


def send(base: str, token: str | None, change: Change) -> Outcome:
    """POST the change to the inspector at ``base``; its JSON answer."""
    url, body = _endpoint(base, change)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return Outcome(True, {"action": change.action, **orjson.loads(response.read())})
    except urllib.error.HTTPError as exc:
        return Outcome(False, {"run_id": change.run_id, "error": _http_error(exc)})
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Outcome(False, {"run_id": change.run_id, "error": f"cannot reach {base}: {reason}"})


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        message = orjson.loads(exc.read()).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return str(message) if message else f"the server answered {exc.code} {exc.reason}"


# -- in this process ----------------------------------------------------------------------------


def import_workflows(modules: list[str]) -> None:
    """Import the modules whose ``@workflow`` functions the local engine may run."""
    for name in modules:
        importlib.import_module(name)


async def _apply(engine: Engine, change: Change, wait: bool) -> Outcome:
    data: dict[str, Any] = {"action": change.action, "run_id": change.run_id}
    try:
        if change.action == "cancel":
            data["previous_status"] = (await engine.get_run(change.run_id).cancel()).value
            data["status"] = "cancelled"
        elif change.action == "resume":
            data["previous_status"] = (await engine.resume_run(change.run_id)).value
            data["status"] = (await engine.get_run(change.run_id).status()).value
        else:
            assert change.from_seq is not None
            fork = await engine.fork(change.run_id, change.from_seq)
            data = {"action": "fork", "run_id": fork.run_id, "forked_from": change.run_id, "forked_at_seq": change.from_seq}
            data["status"] = (await fork.status()).value
    except (RunNotFound, CannotCancel, CannotResume, ValueError) as exc:
        return Outcome(False, {"run_id": change.run_id, "error": str(exc)})
    if wait and change.action != "cancel":
        data["ended"] = await _ended(engine, data["run_id"])
    return Outcome(True, data)


async def _ended(engine: Engine, run_id: str) -> str:
    """Run the resumed or forked run here until it stops; its final status."""
    run = engine.get_run(run_id)
    with contextlib.suppress(RunFailed, RunCancelled):
        await run.result()
    return (await run.status()).value


async def _apply_all(db: Path, changes: list[Change], wait: bool) -> list[Outcome]:
    async with Engine(db) as engine:
        return [await _apply(engine, change, wait) for change in changes]


def apply_locally(db: Path, changes: list[Change], imports: list[str], wait: bool = True) -> list[Outcome]:
    # Opening the engine warns about every unfinished run whose workflow was not
    # imported: noise for one command on one run. Errors still show.
    logging.getLogger("durable").setLevel(logging.ERROR)
    import_workflows(imports)
    return asyncio.run(_apply_all(db, changes, wait))


def run_change(db: Path, changes: list[Change], url: str | None, token: str | None, imports: list[str]) -> list[Outcome]:
    """Apply the changes through the server at ``url``, or here when no server holds ``db``."""
    if url is not None:
        return [send(url, token, change) for change in changes]
    return apply_locally(db, changes, imports)
