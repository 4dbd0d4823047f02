"""Runs, timelines, chunks and hooks as JSON objects: what ``--json`` prints and the inspector serves.

Times are ISO 8601 UTC with milliseconds (``2026-12-01T20:00:00.123Z``), ``null`` when unset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from ._journal_read import ChunkRecord, RunDetail, RunSummary, StreamInfo
from ._models import OperationInfo

__all__ = ["decode", "iso", "operation_json", "run_json", "summary_json"]


def iso(moment: float | datetime | None) -> str | None:
    """``2026-12-01T20:00:00.123Z`` for an epoch or an aware datetime, ``None`` for ``None``."""
    if moment is None:
        return None
    value = moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, tz=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def decode(data: bytes | None) -> Any:
    """A stored JSON value; text that is not JSON stays as text."""
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


def summary_json(run: RunSummary) -> dict[str, Any]:
    """The fields of ``inspect runs --json``."""
    return {
        "run_id": run.run_id,
        "workflow_name": run.workflow_name,
        "status": run.status,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "error": run.error,
    }


def listed_json(run: RunSummary) -> dict[str, Any]:
    """A row of the inspector's run list: the summary, where a fork came from, the parent of a child."""
    return {
        **summary_json(run),
        "forked_from": run.forked_from,
        "forked_at_seq": run.forked_at_seq,
        "parent_run_id": run.parent_run_id,
    }


def operation_json(op: OperationInfo) -> dict[str, Any]:
    return {
        "seq": op.seq,
        "kind": op.kind,
        "name": op.name,
        "status": op.status,
        "started_at": iso(op.started_at),
        "completed_at": iso(op.completed_at),
        "wake_at": iso(op.wake_at),
        "attempts": [
            {
                "attempt": a.attempt,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "error": a.error,
                "stack": a.stack or None,
            }
            for a in op.attempts
        ],
    }


def stream_json(stream: StreamInfo) -> dict[str, Any]:
    return {"namespace": stream.namespace, "length": stream.length, "closed": stream.closed}


def chunk_json(chunk: ChunkRecord, namespace: str) -> dict[str, Any]:
    return {"namespace": namespace, "index": chunk.index, "written_at": iso(chunk.written_at), "value": decode(chunk.data)}


def hook_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the hooks table: JSON columns decoded, ``*_at`` epochs as ISO times."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, bytes):
            value = decode(value)
        elif key.endswith("_at") and isinstance(value, int | float):
            value = iso(value)
        out[key] = value
    return out


def run_json(
    detail: RunDetail, timeline: list[OperationInfo], streams: list[StreamInfo], hooks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything ``inspect run`` shows, as one object."""
    args, kwargs = _input(detail.input)
    return {
        **listed_json(detail.summary),
        "args": args,
        "kwargs": kwargs,
        "output": decode(detail.output),
        "error_stack": detail.error.stack or None if detail.error is not None else None,
        "timeline": [operation_json(op) for op in timeline],
        "streams": [stream_json(stream) for stream in streams],
        "hooks": [hook_json(row) for row in hooks],
    }


def _input(data: bytes) -> tuple[Any, Any]:
    value = decode(data)
    if isinstance(value, list) and len(value) == 2:
        return value[0], value[1]
    return value, {}
