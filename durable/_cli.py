"""``python -m durable --db PATH ...``: inspect runs, cancel, resume and fork them.

Reading never needs the engine: it opens the file read-only, also while a
server holds it. Changing a run goes through the server that holds the file
(``--url``), or through an engine of this process when none does. Exit status:
0 done, 1 not found or refused, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from . import _cli_show as show
from ._cli_act import Change, Outcome, held_message, run_change
from ._errors import UnreadableJournal
from ._inspect_view import chunk_json, hook_json, run_json, summary_json
from ._journal_read import MAX_PAGE, JournalReader
from ._models import RunStatus

__all__ = ["build_parser", "main"]

FOLLOW_INTERVAL_S = 0.25  # --follow polls: the engine that writes is in another process
CHUNK_PAGE = 500

Command = Callable[[argparse.Namespace], int]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_PAGE}, got {text!r}")
    return value


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help="the journal's SQLite file")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    common.add_argument("--utc", action="store_true", help="show times in UTC (default: local time)")
    return common


def _changes() -> argparse.ArgumentParser:
    changes = argparse.ArgumentParser(add_help=False)
    changes.add_argument("--url", help="the inspector of the server holding the file, e.g. http://127.0.0.1:3000/workflows")
    changes.add_argument("--token", help="the server's token: sent as 'Authorization: Bearer <token>'")
    changes.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="without a server: import MODULE so its @workflow functions can run here (repeat for several)",
    )
    return changes


def _add_inspect(sub: Any, common: argparse.ArgumentParser) -> None:
    inspect = sub.add_parser("inspect", help="read runs, timelines, streams and hooks (works while a server runs)")
    what = inspect.add_subparsers(dest="what", required=True, metavar="{runs,run,streams,hooks}")
    runs = what.add_parser("runs", parents=[common], help="the newest runs")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--workflow", metavar="NAME")
    runs.add_argument("--limit", type=_positive, default=50)
    runs.add_argument("--after", metavar="CURSOR", help="the page after CURSOR (printed at the end of a full page)")
    run = what.add_parser("run", parents=[common], help="one run: input, outcome, timeline")
    run.add_argument("run_id", metavar="ID")
    streams = what.add_parser("streams", parents=[common], help="a run's stream chunks")
    streams.add_argument("run_id", metavar="ID")
    streams.add_argument("--namespace", default="", metavar="N", help="the stream's namespace (default: the default stream)")
    streams.add_argument("--from", dest="start", type=_index, default=0, metavar="I", help="the first index to print")
    streams.add_argument("--follow", action="store_true", help="keep printing new chunks until the stream ends")
    hooks = what.add_parser("hooks", parents=[common], help="hooks waiting for a payload")
    hooks.add_argument("--run", metavar="ID")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m durable", description="Inspect and operate the runs of a durable journal.")
    parser.add_argument("--db", help="the journal's SQLite file (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{inspect,cancel,resume,fork}")
    common, changes = _common(), _changes()
    _add_inspect(sub, common)
    cancel = sub.add_parser("cancel", parents=[common, changes], help="cancel runs")
    cancel.add_argument("run_ids", nargs="+", metavar="ID")
    resume = sub.add_parser("resume", parents=[common, changes], help="continue a failed or cancelled run")
    resume.add_argument("run_id", metavar="ID")
    fork = sub.add_parser("fork", parents=[common, changes], help="a new run from a run's journal before a step")
    fork.add_argument("run_id", metavar="ID")
    fork.add_argument("--from-step", dest="from_seq", type=_index, required=True, metavar="SEQ")
    return parser


# -- output ------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_lines(lines: Iterable[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))


def _fail(message: str) -> int:
    sys.stderr.write(f"durable: {message}\n")
    return 1


# -- inspect ---------------------------------------------------------------------------------------


def _inspect_runs(args: argparse.Namespace, reader: JournalReader) -> int:
    try:
        page = reader.list_runs(args.status, args.workflow, args.limit, args.after)
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        _print_json([summary_json(run) for run in page.runs])
    else:
        _print_lines(show.runs_table(page.runs, show.Clock(args.utc)))
    if page.next is not None:
        sys.stderr.write(f"more runs: add --after {page.next}\n")
    return 0


def _inspect_run(args: argparse.Namespace, reader: JournalReader) -> int:
    detail = reader.run(args.run_id)
    if detail is None:
        return _fail(f"Workflow run {args.run_id} not found")
    timeline, streams = reader.timeline(args.run_id), reader.streams(args.run_id)
    if args.json:
        _print_json(run_json(detail, timeline, streams, reader.hooks(args.run_id)))
    else:
        _print_lines(show.run_lines(detail, timeline, streams, show.Clock(args.utc)))
    return 0


def _inspect_streams(args: argparse.Namespace, reader: JournalReader) -> int:
    if reader.run(args.run_id) is None:
        return _fail(f"Workflow run {args.run_id} not found")
    clock, start = show.Clock(args.utc), args.start
    while True:
        ended = not args.follow or reader.stream_ended(args.run_id, args.namespace)
        page = reader.chunks(args.run_id, args.namespace, start, CHUNK_PAGE)
        for chunk in page:
            line = orjson.dumps(chunk_json(chunk, args.namespace)).decode() if args.json else show.chunk_line(chunk, clock)
            sys.stdout.write(line + "\n")
            start = chunk.index + 1
        sys.stdout.flush()
        if len(page) == CHUNK_PAGE:
            continue
        if ended:
            return 0
        time.sleep(FOLLOW_INTERVAL_S)


def _inspect_hooks(args: argparse.Namespace, reader: JournalReader) -> int:
    if args.run is not None and reader.run(args.run) is None:
        return _fail(f"Workflow run {args.run} not found")
    hooks = reader.hooks(args.run)
    if args.json:
        _print_json([hook_json(row) for row in hooks])
    elif hooks:
        _print_lines(show.hooks_table(hooks, show.Clock(args.utc)))
    else:
        _print_lines(["No hooks."])
    return 0


_INSPECT: dict[str, Callable[[argparse.Namespace, JournalReader], int]] = {
    "runs": _inspect_runs,
    "run": _inspect_run,
    "streams": _inspect_streams,
    "hooks": _inspect_hooks,
}


def _inspect(args: argparse.Namespace) -> int:
    with JournalReader(args.db) as reader:
        return _INSPECT[args.what](args, reader)


# -- changes -----------------------------------------------------------------------------------------


def _requested(args: argparse.Namespace) -> list[Change]:
    if args.command == "cancel":
        return [Change("cancel", run_id) for run_id in args.run_ids]
    return [Change(args.command, args.run_id, getattr(args, "from_seq", None))]


def _change(args: argparse.Namespace) -> int:
    db = Path(args.db)
    if args.url is None:
        held = held_message(db)
        if held is not None:
            return _fail(held)
        JournalReader(db).open().close()  # refuses a missing or foreign file before an engine would create one
    outcomes = run_change(db, _requested(args), args.url, args.token, args.imports)
    _report(args, outcomes)
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def _report(args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    if args.json:
        objects = [outcome.data for outcome in outcomes]
        _print_json(objects if args.command == "cancel" else objects[0])
        return
    for outcome in outcomes:
        (sys.stdout if outcome.ok else sys.stderr).write(outcome.line + "\n")


_COMMANDS: dict[str, Command] = {"inspect": _inspect, "cancel": _change, "resume": _change, "fork": _change}


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.db is None:
        parser.error("--db PATH is required")
    try:
        return _COMMANDS[args.command](args)
    except UnreadableJournal as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of our output went away (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
