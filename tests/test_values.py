"""durable._values: exact round trips, plain JSON byte for byte, tags, errors that name the path."""

from __future__ import annotations

import ast
import dataclasses
import enum
import os
import pickle
import socket
import subprocess
import sys
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable import _values
from durable._values import decode, decode_call, encode, encode_call, is_plain_json, register_type, serializable

PARIS = ZoneInfo("Europe/Paris")
UNKNOWN = "not a JSON type, dataclass, Enum or registered class (register it with durable.register_type)"


# ---- types used by the tests (module level, so that decode can find them) -----------------


class Color(enum.Enum):
    RED = 1
    GREEN = (2, "g")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Status(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclass
class Point:
    x: int
    y: int = 0


@dataclass(frozen=True, slots=True)
class Line:
    start: Point
    end: Point
    label: str | None = None


@dataclass
class Invoice:
    number: str
    lines: list[Line]
    total: Decimal
    issued: datetime
    tags: frozenset[str] = frozenset()
    cache: dict[str, Any] = field(init=False, default_factory=dict)
    derived: int = field(init=False, default=0)


@dataclass
class Later:
    a: int
    added: list[int] = field(default_factory=list)


class Outer:
    @dataclass
    class Inner:
        v: tuple[int, ...]


@serializable
class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))

    def to_value(self) -> Any:
        return [self.cents, self.currency]

    @classmethod
    def from_value(cls, value: Any) -> Money:
        return cls(*value)


class Sku:
    def __init__(self, code: str) -> None:
        self.code = code

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sku) and self.code == other.code

    def __hash__(self) -> int:
        return hash(self.code)


register_type(Sku, lambda sku: sku.code, Sku)


class Span:
    def __init__(self, first: date, last: date) -> None:
        self.first, self.last = first, last

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Span) and (self.first, self.last) == (other.first, other.last)

    __hash__ = None  # type: ignore[assignment]


serializable(to_value=lambda s: (s.first, s.last), from_value=lambda v: Span(*v))(Span)


class Euros(Money):
    """A subclass of a registered class, not registered itself."""


class Broken:
    def __init__(self) -> None:
        self.n = 1


register_type(Broken, lambda b: b.n, lambda n: n)  # from_value forgets to build a Broken


class Shift(tzinfo):
    """A tzinfo of its own: neither timezone nor ZoneInfo."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=3)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class Label(str):
    pass


Pair = namedtuple("Pair", "a b")


# ---- exact comparison ------------------------------------------------------------------


def assert_same(got: Any, want: Any, path: str = "value") -> None:
    """``got`` is ``want``: same type all the way down, same value, -0.0 and nan and tz included."""
    assert type(got) is type(want), f"{path}: {type(got).__qualname__} is not {type(want).__qualname__}"
    check = next((check for kind, check in SAME_BY_TYPE if isinstance(want, kind)), None)
    if check is None:
        check = assert_same_fields if dataclasses.is_dataclass(want) else assert_equal
    check(got, want, path)


def assert_equal(got: Any, want: Any, path: str) -> None:
    assert got == want, path


def assert_same_float(got: float, want: float, path: str) -> None:
    assert repr(got) == repr(want), path  # nan is nan, -0.0 is not 0.0, every digit kept


def assert_same_decimal(got: Decimal, want: Decimal, path: str) -> None:
    assert str(got) == str(want), path  # exponent, sign and NaN payload


def assert_same_items(got: list[Any] | tuple[Any, ...], want: list[Any] | tuple[Any, ...], path: str) -> None:
    assert len(got) == len(want), path
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_same(g, w, f"{path}[{index}]")


def assert_same_dict(got: dict[Any, Any], want: dict[Any, Any], path: str) -> None:
    assert len(got) == len(want), path
    for (gk, gv), (wk, wv) in zip(got.items(), want.items(), strict=True):  # in the same order
        assert_same(gk, wk, f"{path}.keys()")
        assert_same(gv, wv, f"{path}[{wk!r}]")


def assert_same_set(got: set[Any] | frozenset[Any], want: set[Any] | frozenset[Any], path: str) -> None:
    assert got == want, path
    by_value = {g: g for g in got}
    for w in want:
        assert_same(by_value[w], w, f"{path}{{...}}")


def assert_same_fields(got: Any, want: Any, path: str) -> None:
    for f in dataclasses.fields(want):
        assert_same(getattr(got, f.name), getattr(want, f.name), f"{path}.{f.name}")


def assert_same_member(got: enum.Enum, want: enum.Enum, path: str) -> None:
    assert got is want, path


def assert_same_moment(got: datetime | time, want: datetime | time, path: str) -> None:
    assert got.replace(tzinfo=None) == want.replace(tzinfo=None), path
    assert got.fold == want.fold, f"{path}: fold"
    assert type(got.tzinfo) is type(want.tzinfo), f"{path}: tzinfo type"
    assert got.utcoffset() == want.utcoffset(), f"{path}: utcoffset"
    assert got.tzname() == want.tzname(), f"{path}: tzname"
    if isinstance(want.tzinfo, ZoneInfo):
        assert isinstance(got.tzinfo, ZoneInfo) and got.tzinfo.key == want.tzinfo.key, path


SAME_BY_TYPE: list[tuple[type | tuple[type, ...], Callable[[Any, Any, str], None]]] = [
    (enum.Enum, assert_same_member),
    (float, assert_same_float),
    (Decimal, assert_same_decimal),
    ((datetime, time), assert_same_moment),
    ((list, tuple), assert_same_items),
    (dict, assert_same_dict),
    ((set, frozenset), assert_same_set),
]


def round_trip(value: Any) -> Any:
    stored = encode(value)
    assert isinstance(stored, bytes)
    got = decode(stored)
    assert_same(got, value)
    assert_same(decode(stored.decode()), value)  # the same from str
    return got


# ---- round trips -------------------------------------------------------------------------

EXAMPLES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**5000,  # beyond int's decimal-digit limit: stored in hex
    -0.0,
    0.1,
    1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "$durable",
    '{"$durable": "tuple", "v": [1]}',
    [],
    {},
    (),
    (1,),
    (1, (2, (3,)), [4, (5,)]),
    {1, 2, 3},
    frozenset({"a", "b"}),
    set(),
    frozenset(),
    b"",
    b"\x00\xff binary",
    bytearray(b"ab"),
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("NaN"),
    Decimal("-sNaN123"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    UUID("12345678-1234-5678-1234-567812345678"),
    date(2026, 1, 2),
    date.min,
    datetime(2026, 1, 2, 3, 4, 5, 6),
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime.min,
    datetime.max.replace(tzinfo=UTC),
    datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 1, 2, tzinfo=timezone(-timedelta(hours=3, seconds=15, microseconds=7))),
    datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=1), "CET")),
    datetime(2026, 7, 1, 12, tzinfo=PARIS),
    datetime(2026, 10, 25, 2, 30, tzinfo=PARIS),  # ambiguous: the first 02:30
    datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1),  # ... and the second
    datetime(2026, 3, 29, 2, 30, tzinfo=PARIS, fold=1),  # skipped by the clocks
    datetime(1900, 1, 1, tzinfo=PARIS),  # local mean time: an offset of 9 min 21 s
    datetime(2026, 1, 2, fold=1),
    datetime(2026, 7, 1, tzinfo=PARIS, fold=1),  # fold that changes nothing
    time(0),
    time(0, 0, 0, 10000),  # orjson 3.13 would write ".10000"
    time(23, 59, 59, 999999),
    time(3, 4, tzinfo=UTC),
    time(3, 4, tzinfo=timezone(timedelta(hours=-8))),
    time(3, 4, tzinfo=PARIS),
    time(3, 4, fold=1),
    timedelta(0),
    timedelta(days=-1, microseconds=5),
    timedelta.max,
    UTC,
    timezone(timedelta(hours=2), "EET"),
    PARIS,
    Color.RED,
    Color.GREEN,
    Level.HIGH,
    Status.DONE,
    Perm.R | Perm.X,
    Perm(0),
    {1: "int key", 2.5: "float key", None: "none", (1, "t"): "tuple", Color.RED: "enum"},
    {True: "bool key", "s": "str key"},
    {Status.OPEN: 1, Level.LOW: 2},  # str and int subclasses as keys: orjson would write them as "open" and "1"
    {frozenset({1}): {date(2026, 1, 1): [Status.OPEN]}},
    {"$durable": "tuple", "v": [1, 2]},  # a plain dict that looks like a tag
    {"$durable": 1, "other": {"$durable": {"$durable": None}}},
    {"k": [{"$durable": "x"}]},
    Point(1, 2),
    Outer.Inner((1, 2)),
    Line(Point(0), Point(3, 4), "diagonal"),
    Invoice(
        "INV-1",
        [Line(Point(0), Point(1))],
        Decimal("12.30"),
        datetime(2026, 1, 2, tzinfo=PARIS),
        frozenset({"paid"}),
    ),
    Money(1234, "EUR"),
    Sku("A-1"),
    Span(date(2026, 1, 1), date(2026, 1, 31)),
    {"money": [Money(1, "EUR"), {Sku("x"): (Money(2, "USD"),)}]},
    [("acct_1", 42), {"kw": ("acct_1", 42)}],
]


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__qualname__)
def test_round_trip_is_exact(value: Any) -> None:
    round_trip(value)


def test_init_false_fields_and_state_come_back_without_calling_init() -> None:
    invoice = Invoice("INV-2", [], Decimal("0"), datetime(2026, 1, 1, tzinfo=UTC))
    invoice.cache["seen"] = (1, 2)
    invoice.derived = 7
    got = round_trip(invoice)
    assert got.cache == {"seen": (1, 2)} and got.derived == 7


def test_frozen_slots_dataclass_stays_frozen() -> None:
    got = round_trip(Line(Point(1), Point(2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.label = "x"


def test_zoneinfo_fold_comes_back_from_the_offset() -> None:
    first = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS)
    second = first.replace(fold=1)
    assert encode(first) == b'{"$durable":"datetime","v":"2026-10-25T02:30:00+02:00[Europe/Paris]"}'
    assert encode(second) == b'{"$durable":"datetime","v":"2026-10-25T02:30:00+01:00[Europe/Paris]"}'
    assert decode(encode(second)).fold == 1
    assert decode(encode(second)).tzinfo is PARIS


def test_fold_the_offset_cannot_show_is_stored_apart() -> None:
    assert encode(datetime(2026, 1, 2, fold=1)) == b'{"$durable":"datetime","v":["2026-01-02T00:00:00",1,null]}'
    assert encode(datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=1), "CET"))) == (
        b'{"$durable":"datetime","v":["2026-01-02T00:00:00",0,{"$durable":"timezone","v":[3600000000,"CET"]}]}'
    )


def test_wire_format_examples() -> None:
    assert encode((1, 2)) == b'{"$durable":"tuple","v":[1,2]}'
    assert encode({"b", "a"}) == b'{"$durable":"set","v":["a","b"]}'  # sorted: the same bytes in every process
    assert encode(b"hi") == b'{"$durable":"bytes","v":"aGk="}'
    assert encode(2**64) == b'{"$durable":"int","v":"0x10000000000000000"}'
    assert encode([float("nan"), -0.0]) == b'[{"$durable":"float","v":"nan"},-0.0]'
    assert encode(Decimal("1.10")) == b'{"$durable":"decimal","v":"1.10"}'
    assert encode(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == b'{"$durable":"datetime","v":"2026-01-02T03:04:05+00:00"}'
    assert encode(timedelta(days=1, seconds=2)) == b'{"$durable":"timedelta","v":[1,2,0]}'
    assert encode({1: "a"}) == b'{"$durable":"dict","v":[[1,"a"]]}'
    assert encode({"$durable": 1}) == b'{"$durable":"dict","v":[["$durable",1]]}'
    assert encode(Color.RED) == b'{"$durable":"test_values:Color","v":1}'
    assert encode(Point(1, 2)) == b'{"$durable":"test_values:Point","v":{"x":1,"y":2}}'
    assert encode(Outer.Inner((1,))) == b'{"$durable":"test_values:Outer.Inner","v":{"v":{"$durable":"tuple","v":[1]}}}'
    assert encode(Money(5, "EUR")) == b'{"$durable":"test_values:Money","v":[5,"EUR"]}'
    assert encode({"at": date(2026, 1, 2)}) == b'{"at":{"$durable":"date","v":"2026-01-02"}}'


# ---- property: plain JSON is orjson's bytes, typed values come back exactly ----------------

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TEXT = st.text() | st.sampled_from(["$durable", '"$durable"', "v", '{"$durable":"tuple","v":[]}'])
PLAIN = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(TEXT.filter(lambda key: key != "$durable"), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(PLAIN)
def test_plain_json_is_stored_as_orjson_bytes(value: Any) -> None:
    stored = encode(value)
    assert stored == orjson.dumps(value)
    assert is_plain_json(value)
    assert_same(decode(stored), value)
    assert_same(decode(stored), orjson.loads(stored))


@settings(max_examples=200, deadline=None)
@given(st.lists(PLAIN, max_size=4), st.dictionaries(st.text(), PLAIN, max_size=3))
def test_a_plain_call_is_stored_as_before(args: list[Any], kwargs: dict[str, Any]) -> None:
    stored = encode_call(tuple(args), kwargs)
    assert stored == orjson.dumps([args, kwargs])
    got_args, got_kwargs = decode_call(stored)
    assert_same(got_args, args)
    assert_same(got_kwargs, kwargs)


ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=-4)), timezone(timedelta(minutes=90), "X")]) | st.timezones()
DATETIMES = st.builds(lambda d, fold: d.replace(fold=fold), st.datetimes(timezones=ZONES), st.sampled_from([0, 1]))
TIMES = st.builds(lambda t, fold: t.replace(fold=fold), st.times(timezones=st.none() | ZONES), st.sampled_from([0, 1]))
HASHABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)  # nan in a set or as a key never equals itself
    | TEXT
    | st.binary(max_size=20)
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.dates()
    | DATETIMES
    | TIMES
    | st.timedeltas()
    | st.sampled_from([Color.RED, Color.GREEN, Level.LOW, Status.OPEN, Perm.R | Perm.W, Sku("s")]),
    lambda children: st.lists(children, max_size=3).map(tuple) | st.frozensets(children, max_size=3),
    max_leaves=6,
)
TYPED = st.recursive(
    HASHABLE | st.floats() | st.decimals() | st.binary().map(bytearray),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(HASHABLE, children, max_size=4)
        | st.dictionaries(TEXT, children, max_size=4)
        | st.sets(HASHABLE, max_size=4)
        | st.builds(Point, children, children)
        | st.builds(Money, st.integers(), st.text())
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(TYPED)
def test_typed_values_round_trip_exactly(value: Any) -> None:
    round_trip(value)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.replace(fold=0))
    | st.times().map(lambda t: t.replace(fold=0))
    | st.dates()
    | st.uuids()
)
def test_payloads_orjson_writes_are_what_isoformat_and_str_give(value: Any) -> None:
    text = str(value) if isinstance(value, UUID) else value.isoformat()
    assert orjson.loads(encode(value))["v"] == text


# ---- escaping, legacy data, bytes chunks ---------------------------------------------------


def test_a_durable_key_is_escaped_at_any_depth() -> None:
    fake = {"$durable": "os:system", "v": "echo no"}
    stored = encode({"a": [fake]})
    assert stored == b'{"a":[{"$durable":"dict","v":[["$durable","os:system"],["v","echo no"]]}]}'
    assert decode(stored) == {"a": [fake]}
    assert not is_plain_json(fake)


def test_legacy_plain_journal_bytes_decode_as_orjson_loads() -> None:
    legacy = orjson.dumps([["acct_1", 3], {"when": "2026-01-02T00:00:00Z", "price": "$durable prices"}])
    assert decode(legacy) == orjson.loads(legacy)
    assert decode_call(legacy) == (["acct_1", 3], {"when": "2026-01-02T00:00:00Z", "price": "$durable prices"})


def test_bytes_chunk_takes_the_short_path_both_ways() -> None:
    chunk = os.urandom(70_000)
    stored = encode(chunk, where="chunk")
    assert stored.startswith(b'{"$durable":"bytes","v":"') and len(stored) < len(chunk) * 4 // 3 + 40
    assert stored == orjson.dumps({"$durable": "bytes", "v": _values._b64(chunk)})  # the same JSON as the walk writes
    assert decode(stored) == chunk and type(decode(stored)) is bytes
    assert decode(memoryview(stored)) == chunk
    assert decode(bytearray(stored)) == chunk


def test_is_plain_json() -> None:
    assert is_plain_json({"a": [1, "b", None, 1.5, True]})
    for value in [(1,), [2**64], {"x": float("nan")}, {1: 2}, {"$durable": 0}, Status.OPEN, Label("x"), b""]:
        assert not is_plain_json(value), value


# ---- errors name the type and the path ---------------------------------------------------


def message(value: Any, where: str = "value") -> str:
    with pytest.raises(TypeError) as info:
        encode(value, where=where)
    return str(info.value)


def test_an_unstorable_value_is_named_with_its_path() -> None:
    with socket.socket() as sock:
        with pytest.raises(TypeError) as info:
            encode_call(({"items": [1, 2, 3, sock]},), {})
        assert str(info.value) == f'cannot store socket at args[0]["items"][3]: {UNKNOWN}'
        with pytest.raises(TypeError) as info:
            encode_call((), {"conn": (1, sock)})
        assert str(info.value) == f'cannot store socket at kwargs["conn"][1]: {UNKNOWN}'
        assert message([{"a": sock}], where="result") == f'cannot store socket at result[0]["a"]: {UNKNOWN}'


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        (object(), "value", "object"),
        ({"p": Point(1, object())}, 'value["p"].y', "object"),  # type: ignore[arg-type]
        ({(1, 2): object()}, "value[(1, 2)]", "object"),
        ({Color.RED: [object()]}, "value[<Color.RED: 1>][0]", "object"),
        ({object(): 1}, "value.keys()", "object"),
        ({"s": {(1, object())}}, 'value["s"]{...}[1]', "object"),
        (frozenset({object()}), "value{...}", "object"),
        (Money(1, object()), "value.to_value()[1]", "object"),  # type: ignore[arg-type]
        (datetime(2026, 1, 1, tzinfo=Shift()), "value.tzinfo", "Shift"),  # type: ignore[abstract]
        ([range(3)], "value[0]", "range"),
        ({"x": iter([])}, 'value["x"]', "list_iterator"),
    ],
)
def test_the_path_reaches_the_part_that_cannot_be_stored(value: Any, path: str, kind: str) -> None:
    assert message(value) == f"cannot store {kind} at {path}: {UNKNOWN}"


@pytest.mark.parametrize(
    ("value", "base"),
    [(Label("x"), "str"), (OrderedDict(a=1), "dict"), (Pair(1, 2), "tuple"), ([True, Euros(1, "EUR")], None)],
)
def test_subclasses_are_refused_rather_than_changed(value: Any, base: str | None) -> None:
    text = message(value)
    if base is None:  # a subclass of a registered class is not registered by it
        assert text == f"cannot store Euros at value[1]: {UNKNOWN}"
    else:
        kind = type(value).__qualname__
        assert text == (
            f"cannot store {kind} at value: a subclass of {base} would come back as {base}; "
            f"pass {base}(...) or register {kind} with durable.register_type"
        )


def test_a_dataclass_defined_in_a_function_is_refused_at_encode() -> None:
    @dataclass
    class Local:
        n: int

    assert message({"p": [Local(1)]}, where="result") == (
        'cannot store Local at result["p"][0]: it is defined inside a function '
        "(test_a_dataclass_defined_in_a_function_is_refused_at_encode.<locals>.Local), "
        "so it could not be found again to decode it; define it at module level"
    )


def test_a_class_its_name_does_not_lead_back_to_is_refused_at_encode() -> None:
    made = dataclasses.make_dataclass("Made", [("n", int)])
    made.__module__ = __name__
    assert message(made(1)) == (
        "cannot store Made at value: test_values:Made does not lead back to it, "
        "so it could not be found again to decode it; define it at module level"
    )


def test_too_deep_or_circular_values_are_a_type_error() -> None:
    too_deep = "cannot store list at {}: it is nested too deeply (orjson stops at 255 levels) or contains itself"
    loop: list[Any] = []
    loop.append(loop)
    assert message(loop) == too_deep.format("value")
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    assert message(deep, where="result") == too_deep.format("result")
    deep_typed: Any = (1,)
    for _ in range(300):
        deep_typed = [deep_typed]
    assert message(deep_typed) == too_deep.format("value")
    with pytest.raises(TypeError, match=r"^cannot store tuple at args: it is nested too deeply \("):
        encode_call((deep,), {})


def test_a_zoneinfo_without_key_is_refused() -> None:
    with open(f"/usr/share/zoneinfo/{PARIS.key}", "rb") as file:
        keyless = ZoneInfo.from_file(file)
    assert message(datetime(2026, 1, 1, tzinfo=keyless)) == (
        "cannot store ZoneInfo at value.tzinfo: it has no key (made by ZoneInfo.from_file?), so it could not be made again"
    )


# ---- registration ------------------------------------------------------------------------


def test_the_codec_lives_on_the_class() -> None:
    assert isinstance(vars(Money)["__durable_type__"], _values._Codec)
    assert "__durable_type__" not in vars(Euros)
    assert not any(isinstance(v, dict) and Money in v for v in vars(_values).values())  # no registry of classes


@pytest.mark.parametrize("cls", [int, datetime, Decimal, UUID, bytes, object, ZoneInfo])
def test_built_in_types_cannot_be_registered(cls: type) -> None:
    with pytest.raises(TypeError, match=f"cannot register {cls.__qualname__}: "):
        register_type(cls, str, str)


def test_registration_is_checked() -> None:
    with pytest.raises(TypeError, match="register_type takes a class, got int"):
        register_type(3, str, str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="to_value and from_value must be callables"):
        register_type(Sku, "code", Sku)  # type: ignore[arg-type]

    class Local:
        pass

    with pytest.raises(TypeError, match="it is defined inside a function"):
        register_type(Local, str, str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"needs a to_value\(self\) method and a from_value\(cls, value\) classmethod"):
        serializable(Local)


def test_from_value_must_build_the_class() -> None:
    with pytest.raises(TypeError, match=r"Broken\.from_value returned int, not Broken"):
        decode(encode(Broken()))


# ---- decoding refuses what it was not asked to build ---------------------------------------


def test_decode_refuses_a_tag_naming_a_function(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(TypeError) as info:
        decode(b'{"$durable":"os:system","v":"echo hi"}')
    assert str(info.value) == (
        "refusing to decode a stored os:system: it is not a dataclass, an Enum or a class registered with durable.register_type"
    )
    assert calls == []


@pytest.mark.parametrize("tag", ["subprocess:Popen", "builtins:eval", "builtins:type", "test_values:Label", "os:path.__class__"])
def test_decode_refuses_classes_and_callables_that_are_not_registered(tag: str) -> None:
    with pytest.raises(TypeError, match=f"refusing to decode a stored {tag}: it is not a dataclass"):
        decode(orjson.dumps({"$durable": tag, "v": ["ls"]}))


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (
            b'{"$durable":"no_such_module_xyz:Thing","v":1}',
            TypeError,
            "cannot decode a stored no_such_module_xyz:Thing: No module",
        ),
        (b'{"$durable":"os; rm:x","v":1}', ValueError, "malformed stored class name 'os; rm:x'"),
        (b'{"$durable":"tuplet","v":[1]}', ValueError, "unknown stored type tag 'tuplet'"),
        (b'{"$durable":"tuple","v":[1],"x":2}', ValueError, "malformed stored value"),
        (b'{"$durable":7,"v":1}', ValueError, "malformed stored value"),
        (b'{"$durable":"test_values:Point","v":{"x":1,"z":2}}', ValueError, "stored Point does not match its fields"),
        (b'{"$durable":"test_values:Point","v":{"y":1}}', ValueError, "stored Point has no value for field 'x'"),
    ],
)
def test_malformed_data_is_refused_with_a_reason(data: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=f"^{text}"):
        decode(data)


def test_a_field_added_since_takes_its_default() -> None:
    got = decode(b'{"$durable":"test_values:Later","v":{"a":1}}')
    assert got == Later(1, [])


# ---- no pickle ---------------------------------------------------------------------------


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_no_pickle_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Path(_values.__file__)
    assert not {"pickle", "_pickle", "copyreg", "marshal", "shelve", "dill"} & set(imported_modules(source))
    assert "__reduce" not in source.read_text()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    for name in ("dumps", "loads", "dump", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    for value in EXAMPLES:
        assert_same(decode(encode(value)), value)


def test_the_module_alone_does_not_load_pickle() -> None:
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('values_alone', {str(Path(_values.__file__))!r})\n"
        "module = sys.modules['values_alone'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.decode(module.encode({'a': (1, 2)}))\n"
        "print(sorted(m for m in sys.modules if 'pickle' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_public_names_are_pinned() -> None:
    assert _values.__all__ == sorted(_values.__all__)
    assert _values.__all__ == ["decode", "decode_call", "encode", "encode_call", "is_plain_json", "register_type", "serializable"]
