"""A run's timeline for people: each operation with its attempts and times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._models import AttemptInfo, OperationInfo
from ._serde import to_datetime


def _utc(epoch: float) -> datetime:
    moment = to_datetime(epoch)
    assert moment is not None
    return moment


def _attempts_by_seq(rows: list[tuple[Any, ...]]) -> tuple[dict[int, list[AttemptInfo]], dict[int, tuple[str, float | None]]]:
    attempts: dict[int, list[AttemptInfo]] = {}
    last: dict[int, tuple[str, float | None]] = {}
    for seq, name, attempt, started, ended, error, retry_at, stack in rows:
        attempts.setdefault(seq, []).append(AttemptInfo(attempt, _utc(started), _utc(ended), error, stack))
        last[seq] = (name, retry_at)
    return attempts, last


def _operation(row: tuple[Any, ...], tries: list[AttemptInfo], now: float) -> OperationInfo:
    seq, kind, name, state, attempt, started, completed, wake_at = row
    status = state
    if kind == "step" and state == "completed":
        tries = [*tries, AttemptInfo(attempt, _utc(started), _utc(completed), None)]
    elif kind == "sleep":
        status = "completed" if wake_at <= now else "waiting"
        completed = wake_at if wake_at <= now else None
    first = tries[0].started_at if tries else to_datetime(started)
    return OperationInfo(seq, kind, name, status, first, to_datetime(completed), to_datetime(wake_at), tries)


def build_timeline(op_rows: list[tuple[Any, ...]], attempt_rows: list[tuple[Any, ...]], now: float) -> list[OperationInfo]:
    """Operations by seq; a step between two attempts (no outcome yet) shows as ``retrying``."""
    attempts, last = _attempts_by_seq(attempt_rows)
    out = [_operation(row, attempts.get(row[0], []), now) for row in op_rows]
    seen = {op.seq for op in out}
    for seq, tries in attempts.items():
        if seq not in seen:
            name, retry_at = last[seq]
            out.append(OperationInfo(seq, "step", name, "retrying", tries[0].started_at, None, to_datetime(retry_at), tries))
    out.sort(key=lambda op: op.seq)
    return out
