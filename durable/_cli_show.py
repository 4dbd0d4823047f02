"""What the CLI prints for people: aligned tables, humanized durations, local (or UTC) times."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ._inspect_view import decode
from ._journal_read import ChunkRecord, RunDetail, RunSummary, StreamInfo
from ._models import AttemptInfo, OperationInfo

__all__ = ["Clock", "humanize", "table"]

NONE = "-"
ERROR_WIDTH = 60


def humanize(seconds: float) -> str:
    """``350 ms``, ``1.2 s``, ``5 m 3 s``, ``2 h 5 m``, ``3 d 4 h``."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms} ms"
    if ms < 59_950:
        return f"{ms / 1000:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    return f"{minutes} m {secs} s"


@dataclass(frozen=True, slots=True)
class Clock:
    """How times are shown: local by default, UTC with ``--utc``."""

    utc: bool = False

    def time(self, moment: float | datetime | None) -> str:
        if moment is None:
            return NONE
        seconds, micros = _split(moment)
        # time.localtime and strftime are C calls: a 10,000-step timeline shows 20,000 times.
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds) if self.utc else time.localtime(seconds))
        text = f"{stamp}.{micros // 1000:03d}"
        return text + "Z" if self.utc else text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _split(moment: float | datetime) -> tuple[int, int]:
    """Whole seconds and microseconds, rounded as ``datetime.fromtimestamp`` rounds."""
    if isinstance(moment, datetime):
        return divmod((moment - _EPOCH) // _MICROSECOND, 1_000_000)
    fraction, whole = math.modf(moment)
    seconds, micros = int(whole), round(fraction * 1_000_000)
    if micros < 0:
        seconds, micros = seconds - 1, micros + 1_000_000
    return (seconds + 1, 0) if micros == 1_000_000 else (seconds, micros)


def span(start: float | datetime | None, end: float | datetime | None) -> str:
    if start is None or end is None:
        return NONE
    return humanize(_epoch(end) - _epoch(start))


def _epoch(moment: float | datetime) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else moment


def first_line(text: str | None, width: int = ERROR_WIDTH) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; no trailing blanks."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]


def compact(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- inspect runs -----------------------------------------------------------------------


def runs_table(runs: list[RunSummary], clock: Clock) -> list[str]:
    rows = [
        [
            run.run_id,
            run.workflow_name,
            run.status,
            clock.time(run.created_at),
            span(run.started_at, run.completed_at),
            first_line(run.error),
        ]
        for run in runs
    ]
    return table(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION", "ERROR"], rows)


# -- inspect run --------------------------------------------------------------------------


def run_facts(detail: RunDetail, clock: Clock) -> list[str]:
    run = detail.summary
    facts = [
        ("Run", run.run_id),
        ("Workflow", run.workflow_name),
        ("Status", run.status),
        ("Input", compact(decode(detail.input))),
        ("Created", clock.time(run.created_at)),
        ("Started", clock.time(run.started_at)),
        ("Completed", clock.time(run.completed_at)),
        ("Duration", span(run.started_at, run.completed_at)),
    ]
    if run.parent_run_id is not None:
        facts.append(("Parent", run.parent_run_id))
    if run.forked_from is not None:
        facts.append(("Forked from", f"{run.forked_from} at step {run.forked_at_seq}"))
    if detail.output is not None:
        facts.append(("Output", compact(decode(detail.output))))
    if run.error:
        facts.append(("Error", run.error))
    lines = table(["", ""], [[f"{label}:", value] for label, value in facts])[1:]
    stack = detail.error.stack.rstrip("\n").splitlines() if detail.error is not None else []
    return lines + [f"    {line}".rstrip() for line in stack]  # the traceback, when the journal kept one


def _attempt_row(attempt: AttemptInfo, clock: Clock) -> list[str]:
    return [str(attempt.attempt), clock.time(attempt.started_at), span(attempt.started_at, attempt.ended_at), attempt.error or ""]


def _operation_rows(op: OperationInfo, clock: Clock) -> list[list[str]]:
    head = [str(op.seq), op.kind, op.name, op.status]
    if op.kind == "sleep":
        until = f"until {clock.time(op.wake_at)}"
        return [[*head, NONE, clock.time(op.started_at), span(op.started_at, op.wake_at), until]]
    rows = [[*(head if i == 0 else [""] * 4), *_attempt_row(a, clock)] for i, a in enumerate(op.attempts)]
    if op.status == "retrying":
        rows.append(["" if rows else s for s in head] + [NONE, NONE, NONE, f"next try at {clock.time(op.wake_at)}"])
    return rows or [[*head, NONE, clock.time(op.started_at), span(op.started_at, op.completed_at), ""]]


def timeline_table(timeline: list[OperationInfo], clock: Clock) -> list[str]:
    rows = [row for op in timeline for row in _operation_rows(op, clock)]
    return table(["SEQ", "KIND", "NAME", "STATUS", "ATTEMPT", "STARTED", "DURATION", "ERROR"], rows)


def streams_lines(streams: list[StreamInfo]) -> list[str]:
    rows = [[stream.namespace or "(default)", str(stream.length), "closed" if stream.closed else ""] for stream in streams]
    return table(["NAMESPACE", "CHUNKS", ""], rows)


def run_lines(detail: RunDetail, timeline: list[OperationInfo], streams: list[StreamInfo], clock: Clock) -> list[str]:
    lines = run_facts(detail, clock)
    lines += ["", f"Timeline ({len(timeline)} operations)", *timeline_table(timeline, clock)]
    if streams:
        lines += ["", "Streams", *streams_lines(streams)]
    return lines


# -- inspect streams, inspect hooks ----------------------------------------------------------


def chunk_line(chunk: ChunkRecord, clock: Clock) -> str:
    return f"{chunk.index}  {clock.time(chunk.written_at)}  {compact(decode(chunk.data))}"


def hooks_table(hooks: list[dict[str, Any]], clock: Clock) -> list[str]:
    rows = [
        [
            str(hook.get("token", "")),
            str(hook.get("run_id", "")),
            str(hook.get("kind", "hook")),
            clock.time(hook.get("created_at")),
            compact(decode(hook["metadata"])) if isinstance(hook.get("metadata"), bytes) else str(hook.get("metadata", "")),
        ]
        for hook in hooks
    ]
    return table(["TOKEN", "RUN", "KIND", "CREATED", "METADATA"], rows)
