"""Typed values through the engine: what a workflow passes and sees is what it gets back, also on replay."""

from __future__ import annotations

import enum
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from harness import make_unfinished, sql_rows

from durable import (
    Engine,
    StepFailed,
    StreamReader,
    StreamWriter,
    get_writable,
    register_type,
    serializable,
    step,
    workflow,
)


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal


@dataclass
class Order:
    number: int
    lines: list[Line]
    placed: datetime
    tags: set[str] = field(default_factory=set)


@serializable
class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.cents, other.currency) == (self.cents, self.currency)

    def to_value(self) -> list[Any]:
        return [self.cents, self.currency]

    @classmethod
    def from_value(cls, value: list[Any]) -> Money:
        return cls(value[0], value[1])


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


register_type(Point, lambda p: [p.x, p.y], lambda v: Point(v[0], v[1]))

SAMPLES: dict[str, Any] = {
    "aware": datetime(2026, 11, 30, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=-5))),
    "naive": datetime(2026, 11, 30, 23, 59, 59, 123456),
    "utc": datetime(2026, 1, 1, tzinfo=UTC),
    "date": date(2026, 2, 28),
    "time": time(10, 0, 0, 10000),
    "delta": timedelta(days=2, seconds=5, microseconds=7),
    "decimal": Decimal("1234.5600"),
    "bytes": b"\x00\xffinvoice",
    "tuple": (1, "two", (3.0,)),
    "set": {3, 1, 2},
    "frozenset": frozenset({"a"}),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "enum": Tier.GOLD,
    "int_keys": {1: "one", (2, 3): "pair", Tier.SILVER: "tier"},
    "order": Order(7, [Line("A-1", 2, Decimal("9.99"))], datetime(2026, 5, 1, tzinfo=UTC), {"rush"}),
    "money": Money(1250, "EUR"),
    "point": Point(3, -4),
    "big": 2**70,
    "nan_free": [-0.0, 1e308],
}


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected), (got, expected)
    assert got == expected
    if isinstance(expected, dict):
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        for a, b in zip(got, expected, strict=True):
            assert_same(a, b)
    if isinstance(expected, datetime):
        assert got.utcoffset() == expected.utcoffset()


@step
async def echo_value(value: Any) -> Any:
    return value


@step
async def describe(order: Order, point: Point) -> dict[str, Any]:
    return {"total": sum(line.price * line.quantity for line in order.lines), "norm": point.norm1()}


@workflow(name="typed.echo")
async def echo_wf(samples: dict[str, Any]) -> dict[str, Any]:
    echoed = {name: await echo_value(value) for name, value in samples.items()}
    echoed["described"] = await describe(samples["order"], samples["point"])
    await get_writable().write(samples["aware"])
    await get_writable().write(b"raw \x00 bytes")
    return echoed


async def test_typed_values_round_trip_live_and_on_replay(tmp_path: Path) -> None:
    db = tmp_path / "typed.db"
    expected = {**SAMPLES, "described": {"total": Decimal("19.98"), "norm": 7}}
    async with Engine(db, workflows=[echo_wf]) as engine:
        run = await engine.start(echo_wf, SAMPLES)
        assert_same(await run.result(timeout=10), expected)
        assert_same([value async for value in run.readable()], [SAMPLES["aware"], b"raw \x00 bytes"])
        info = await run.describe()
    assert_same(info.args, [SAMPLES])
    make_unfinished(db, run.run_id)
    async with Engine(db, workflows=[echo_wf]) as engine:
        assert_same(await engine.get_run(run.run_id).result(timeout=10), expected)
        assert_same([value async for value in engine.get_run(run.run_id).readable()], [SAMPLES["aware"], b"raw \x00 bytes"])


async def test_plain_json_is_stored_as_plain_json(engine: Engine, db_path: Path) -> None:
    @workflow(name="typed.plain")
    async def plain_wf(payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await echo_value(payload)
        return result

    run = await engine.start(plain_wf, {"invoiceId": "INV-1", "cents": 125, "items": [1, 2.5, None, True]})
    await run.result(timeout=10)
    ((data,),) = sql_rows(db_path, "SELECT input FROM runs WHERE run_id = ?", (run.run_id,))
    assert bytes(data) == b'[[{"invoiceId":"INV-1","cents":125,"items":[1,2.5,null,true]}],{}]'
    ((result,),) = sql_rows(db_path, "SELECT result FROM ops WHERE run_id = ?", (run.run_id,))
    assert bytes(result) == b'{"invoiceId":"INV-1","cents":125,"items":[1,2.5,null,true]}'


@workflow(name="typed.bad_argument")
async def bad_argument_wf() -> str:
    sock = socket.socket()
    try:
        await echo_value({"items": [1, 2, 3, sock]})
    except TypeError as exc:
        return str(exc)
    finally:
        sock.close()
    return "stored"


async def test_an_unstorable_argument_is_a_type_error_naming_type_and_path(engine: Engine, db_path: Path) -> None:
    run = await engine.start(bad_argument_wf)
    assert await run.result(timeout=10) == (
        'cannot store socket at args[0]["items"][3]: not a JSON type, dataclass, Enum or registered class'
        " (register it with durable.register_type)"
    )
    assert sql_rows(db_path, "SELECT COUNT(*) FROM ops WHERE run_id = ?", (run.run_id,)) == [(0,)]


async def test_an_unstorable_workflow_input_names_the_path_and_writes_nothing(engine: Engine, db_path: Path) -> None:
    with pytest.raises(TypeError, match=r'^cannot store object at kwargs\["samples"\]\["x"\]: '):
        await engine.start(echo_wf, samples={"x": object()})
    assert sql_rows(db_path, "SELECT COUNT(*) FROM runs") == [(0,)]


class Brittle:
    """Stored fine, but its ``from_value`` refuses what ``to_value`` gave: a codec bug a user can write."""

    def __init__(self, n: int) -> None:
        self.n = n


def _no_brittle(value: Any) -> Brittle:
    raise ValueError(f"no Brittle from {value!r}")


register_type(Brittle, lambda b: b.n, _no_brittle)
brittle_calls: list[int] = []


@step
async def make_brittle(n: int) -> Brittle:
    brittle_calls.append(n)
    return Brittle(n)


@workflow(name="typed.brittle")
async def brittle_wf(n: int) -> list[str]:
    try:
        await make_brittle(n)
    except StepFailed as exc:
        return [exc.error_type, exc.message]
    return ["no failure"]


async def test_a_result_that_cannot_be_read_back_fails_the_step_once_and_replays_so(db_path: Path) -> None:
    expected = [
        "FatalError",
        "step test_typed_values.make_brittle returned a value that cannot be read back: ValueError('no Brittle from 3')",
    ]
    brittle_calls.clear()
    async with Engine(db_path, workflows=[brittle_wf]) as engine:
        run = await engine.start(brittle_wf, 3)
        assert await run.result(timeout=10) == expected
        [op] = await run.timeline()
        assert (op.status, [a.attempt for a in op.attempts]) == ("failed", [1])  # fatal: no retry
    assert brittle_calls == [3]
    make_unfinished(db_path, run.run_id)
    async with Engine(db_path, workflows=[brittle_wf]) as engine:
        assert await engine.get_run(run.run_id).result(timeout=10) == expected
    assert brittle_calls == [3]  # the failure was journaled: replay does not execute the step again


# -- streams and steps as values ---------------------------------------------------------------


@step
async def write_through(writer: StreamWriter, count: int) -> int:
    for i in range(count):
        await writer.write({"from_step": i})
    return count


@workflow(name="typed.writer_to_step")
async def writer_to_step_wf() -> int:
    writer = get_writable("progress")
    await writer.write({"from_body": 0})
    written: int = await write_through(writer, 3)
    return written


async def test_a_writer_passed_to_a_step_writes_the_runs_stream(engine: Engine) -> None:
    run = await engine.start(writer_to_step_wf)
    assert await run.result(timeout=10) == 3
    assert [v async for v in run.readable(namespace="progress")] == [
        {"from_body": 0},
        {"from_step": 0},
        {"from_step": 1},
        {"from_step": 2},
    ]


@step
async def countdown(start: int) -> AsyncIterator[dict[str, int]]:
    async def items() -> AsyncIterator[dict[str, int]]:
        for n in range(start, 0, -1):
            yield {"n": n}

    return items()


@workflow(name="typed.iterator_step")
async def iterator_wf() -> dict[str, Any]:
    reader = await countdown(3)
    seen = [item["n"] async for item in reader]
    return {"seen": seen, "reader": reader}


async def test_a_step_returning_an_async_iterator_gives_a_durable_reader(tmp_path: Path) -> None:
    db = tmp_path / "iter.db"
    async with Engine(db, workflows=[iterator_wf]) as engine:
        run = await engine.start(iterator_wf)
        out = await run.result(timeout=10)
        assert out["seen"] == [3, 2, 1]
        assert isinstance(out["reader"], StreamReader)
        assert [item async for item in out["reader"]] == [{"n": 3}, {"n": 2}, {"n": 1}]
    make_unfinished(db, run.run_id)
    async with Engine(db, workflows=[iterator_wf]) as engine:  # replayed: the reader reads the journal
        out = await engine.get_run(run.run_id).result(timeout=10)
        assert out["seen"] == [3, 2, 1]
        assert [item async for item in out["reader"]] == [{"n": 3}, {"n": 2}, {"n": 1}]


@step
async def shout(text: str) -> str:
    return text.upper()


@step
async def apply_twice(fn: Any, text: str) -> str:
    once: str = await fn(text)
    twice: str = await fn(once + "!")
    return twice


@workflow(name="typed.step_as_value")
async def step_as_value_wf() -> list[str]:
    @step
    async def local_reverse(text: str) -> str:
        return text[::-1]

    return [await apply_twice(shout, "hi"), await apply_twice(local_reverse, "ab")]


async def test_a_step_passed_to_a_step_arrives_as_that_step(engine: Engine) -> None:
    run = await engine.start(step_as_value_wf)
    assert await run.result(timeout=10) == ["HI!", "!ab"]
    # The passed steps ran as plain calls inside the outer steps: only the outer steps are journaled.
    assert [(op.kind, op.name) for op in await run.timeline()] == [
        ("step", "test_typed_values.apply_twice"),
        ("step", "test_typed_values.apply_twice"),
    ]
