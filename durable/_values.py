"""Values as the journal stores them: plain JSON exactly as orjson writes it, other types tagged.

A value made only of ``dict`` (``str`` keys), ``list``, ``str``, ``int`` (64-bit), finite
``float``, ``bool`` and ``None`` is stored as ``orjson.dumps(value)``, byte for byte, so
journals written before typed values existed decode unchanged. Anything else becomes a
tagged object ``{"$durable": TAG, "v": PAYLOAD}`` whose payload is itself stored this way::

    (1, 2)                          {"$durable":"tuple","v":[1,2]}
    {1, 2} / frozenset({1})         {"$durable":"set","v":[1,2]} / {"$durable":"frozenset","v":[1]}
    b"hi" / bytearray(b"hi")        {"$durable":"bytes","v":"aGk="} / {"$durable":"bytearray","v":"aGk="}
    2**64                           {"$durable":"int","v":"0x10000000000000000"}
    float("nan"), inf, -inf         {"$durable":"float","v":"nan"}  ("inf", "-inf")
    Decimal("1.10")                 {"$durable":"decimal","v":"1.10"}
    UUID(...)                       {"$durable":"uuid","v":"12345678-1234-5678-1234-567812345678"}
    date(2026, 1, 2)                {"$durable":"date","v":"2026-01-02"}
    datetime(..., tzinfo=UTC)       {"$durable":"datetime","v":"2026-01-02T03:04:05+00:00"}
    datetime(..., ZoneInfo(key))    {"$durable":"datetime","v":"2026-10-25T02:30:00+01:00[Europe/Paris]"}
    time(3, 4)                      {"$durable":"time","v":"03:04:00"}
    timedelta(days=1, seconds=2)    {"$durable":"timedelta","v":[1,2,0]}
    {1: "a"}, {"$durable": 1}       {"$durable":"dict","v":[[1,"a"]]}  (non-str keys, or a "$durable" key)
    Color.RED (any Enum)            {"$durable":"shop.models:Color","v":1}  (the member's value)
    Point(1, 2) (a dataclass)       {"$durable":"shop.models:Point","v":{"x":1,"y":2}}
    Money(...) (registered)         {"$durable":"shop.models:Money","v":<to_value(money), stored>}

A datetime or time whose offset string cannot say everything (``fold=1`` that its offset does
not show, a named ``timezone``, another tzinfo) is ``[naive_iso, fold, tzinfo]`` instead, the
tzinfo stored as a value (``{"$durable":"timezone","v":[offset_us,name]}``,
``{"$durable":"zoneinfo","v":key}``, or a registered class). Sets are written sorted when
their elements sort, so equal sets give equal bytes.

Exact types only: a subclass of a built-in type (``str``, ``dict``, ``OrderedDict``, a
namedtuple...) raises ``TypeError`` rather than come back as its base, unless it is an Enum,
a dataclass or registered. Classes are named by ``module:qualname``; the codec of a
registered class lives on the class (``__durable_type__``), so there is no registry, and a
subclass of a registered class is registered only if it is registered itself. Decoding
imports the module and builds only Enums, dataclasses (state restored field by field,
``__init__`` and ``__post_init__`` not called; missing fields take their defaults) and
registered classes. Nothing is pickled.

Only the journal's own bytes should be decoded: a tag names a module to import. A plain dict
with a ``"$durable"`` key, stored before this module, now reads as a (malformed) tag.

A bytes stream chunk is the tagged bytes value; ``encode`` and ``decode`` take a short path
for it so that a large chunk is not copied through a JSON string.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import partial
from types import NoneType
from typing import Any, Final, TypeVar, cast, overload
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson

__all__ = ["decode", "decode_call", "encode", "encode_call", "is_plain_json", "register_type", "serializable"]

T = TypeVar("T")

MARK: Final = "$durable"
_MARK_BYTES: Final = b'"$durable"'
_CODEC: Final = "__durable_type__"
_BYTES_HEAD: Final = b'{"$durable":"bytes","v":"'
_BYTES_TAIL: Final = b'"}'
_INT_MIN: Final = -(2**63)  # orjson writes integers in [i64 min, u64 max]
_INT_MAX: Final = 2**64 - 1
_LEAVES: Final = frozenset({str, int, bool, NoneType})  # int: orjson refuses those beyond 64 bits
_UNKNOWN: Final = "not a JSON type, dataclass, Enum or registered class (register it with durable.register_type)"

_dumps: Final = orjson.dumps
_loads: Final = orjson.loads


@dataclasses.dataclass(frozen=True, slots=True)
class _Codec:
    """How a registered class becomes a storable value and back."""

    to_value: Callable[[Any], Any]
    from_value: Callable[[Any], Any]


class _Unstorable(Exception):
    """Raised inside the walk; collects the path while it unwinds."""

    def __init__(self, cls: type, reason: str) -> None:
        super().__init__(reason)
        self.cls = cls
        self.reason = reason
        self.segments: list[str] = []

    def message(self, where: str) -> str:
        path = where + "".join(reversed(self.segments))
        name = self.cls.__qualname__.rpartition("<locals>.")[2]
        return f"cannot store {name} at {path}: {self.reason}"


# ---- public API --------------------------------------------------------------------------


def encode(value: Any, where: str = "value") -> bytes:
    """The stored bytes of ``value``: ``orjson.dumps(value)`` when it is plain JSON, else tagged JSON.

    ``where`` names the value in errors: ``encode(x, where="args")`` raises
    ``TypeError: cannot store socket at args[0]["items"][3]: ...``.
    """
    kind = type(value)
    if kind is dict:
        if MARK in value:
            return _encode_tagged(value, where)
        items: Iterable[Any] = value.values()
    elif kind is list:
        items = value
    elif value is None:
        return b"null"  # what most steps return; orjson's buffer is a cost here
    else:
        items = (value,)
    try:
        # most values are one level of scalars: seen here, without the call into the walk
        for item in items:
            if type(item) not in _LEAVES:
                plain = _plain_items(items)  # nested values or floats: the walk, from the start
                break
        else:
            plain = True
        if plain:
            return _dumps(value)
    except (orjson.JSONEncodeError, RecursionError):
        pass  # an int beyond 64 bits, or too deep for orjson: the walk tags it or says why
    return _encode_tagged(value, where)


def _encode_tagged(value: Any, where: str) -> bytes:
    if type(value) is bytes:
        return _BYTES_HEAD + base64.b64encode(value) + _BYTES_TAIL
    try:
        return _dumps(_tree(value))
    except _Unstorable as exc:
        raise TypeError(exc.message(where)) from None
    except (RecursionError, orjson.JSONEncodeError):  # the tree holds only JSON types: it is too deep
        raise TypeError(_too_deep(value, where)) from None


def decode(data: bytes | bytearray | memoryview | str) -> Any:
    """The value that ``encode`` stored as ``data``; data without a type tag is ``orjson.loads(data)``."""
    if type(data) is bytes:
        if data.find(_MARK_BYTES) < 0:
            return _loads(data)
        if data.startswith(_BYTES_HEAD) and data.endswith(_BYTES_TAIL):
            return base64.b64decode(data[len(_BYTES_HEAD) : -len(_BYTES_TAIL)], validate=True)
    elif isinstance(data, str):
        if MARK not in data:
            return _loads(data)
    else:
        return decode(bytes(data))  # a bytearray or memoryview from a driver
    loaded = _loads(data)
    return _untag(loaded) if type(loaded) is dict or type(loaded) is list else loaded


def encode_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """A call's ``[args, kwargs]``, byte for byte what ``orjson.dumps([list(args), kwargs])`` gives for plain JSON.

    Errors name ``args[i]...`` or ``kwargs["name"]...``; ``decode_call`` reads it back.
    """
    try:
        if _plain_call(args, kwargs):
            return _dumps((args, kwargs))  # orjson writes the tuple as a list, as the journal always had it
    except (orjson.JSONEncodeError, RecursionError):
        pass
    tree = [_root(list(args), "args"), _root(kwargs, "kwargs")]
    try:
        return _dumps(tree)
    except orjson.JSONEncodeError:
        raise TypeError(_too_deep(args, "args")) from None


def _plain_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    for arg in args:  # a loop rather than all(...): no generator per call of a step
        if type(arg) not in _LEAVES and not _plain_items((arg,)):
            return False
    return not kwargs or (type(kwargs) is dict and MARK not in kwargs and _plain_items(kwargs.values()))


def decode_call(data: bytes | bytearray | memoryview | str) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` that ``encode_call`` stored."""
    call = _loads(data) if type(data) is bytes and data.find(_MARK_BYTES) < 0 else decode(data)
    if type(call) is not list or len(call) != 2:
        raise ValueError(f"stored call is not [args, kwargs] but {type(call).__qualname__}")
    args, kwargs = call
    return args, kwargs


def is_plain_json(value: Any) -> bool:
    """Whether ``value`` is stored as plain JSON (``encode(value) == orjson.dumps(value)``, no tag)."""
    try:
        return _is_plain(value) and bool(_dumps(value))
    except (orjson.JSONEncodeError, RecursionError):
        return False


def register_type(cls: type[T], to_value: Callable[[T], Any], from_value: Callable[[Any], T]) -> type[T]:
    """Store instances of ``cls`` as ``to_value(obj)`` (any storable value); decode with ``from_value(value)``.

    The codec is kept on the class itself. Returns ``cls``.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type takes a class, got {type(cls).__qualname__}")
    if not callable(to_value) or not callable(from_value):
        raise TypeError(f"cannot register {cls.__qualname__}: to_value and from_value must be callables")
    if cls in _ENCODERS or cls in _LEAVES:
        raise TypeError(f"cannot register {cls.__qualname__}: it is stored already, as itself")
    if "<locals>" in cls.__qualname__:
        raise TypeError(
            f"cannot register {cls.__qualname__}: it is defined inside a function, "
            "so it could not be found again to decode it; define it at module level"
        )
    try:
        type.__setattr__(cls, _CODEC, _Codec(to_value, from_value))
    except (TypeError, AttributeError):
        raise TypeError(
            f"cannot register {cls.__qualname__}: it is a built-in type that cannot carry a codec; "
            "wrap it in a class or dataclass of your own"
        ) from None
    return cls


@overload
def serializable(cls: type[T], /) -> type[T]: ...
@overload
def serializable(
    *, to_value: Callable[[Any], Any] | None = None, from_value: Callable[[Any], Any] | None = None
) -> Callable[[type[T]], type[T]]: ...
def serializable(
    cls: type[T] | None = None,
    /,
    *,
    to_value: Callable[[Any], Any] | None = None,
    from_value: Callable[[Any], Any] | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Class decorator: store instances by the class's ``to_value(self)`` and ``from_value(cls, value)``.

    ``@serializable(to_value=f, from_value=g)`` passes the functions instead of methods.
    """

    def apply(klass: type[T]) -> type[T]:
        encoder = to_value or getattr(klass, "to_value", None)
        decoder = from_value or getattr(klass, "from_value", None)
        if not callable(encoder) or not callable(decoder):
            raise TypeError(
                f"@serializable {klass.__qualname__} needs a to_value(self) method and a from_value(cls, value) "
                "classmethod, or serializable(to_value=..., from_value=...)"
            )
        return register_type(klass, encoder, decoder)

    return apply if cls is None else apply(cls)


# ---- encoding: is it plain? ------------------------------------------------------------


def _plain_items(items: Iterable[Any]) -> bool:
    """Whether orjson would write every item as the JSON it is (ints beyond 64 bits aside: orjson refuses them)."""
    for item in items:
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is dict:
            if MARK in item or not _plain_items(item.values()):
                return False
        elif kind is list:
            if not _plain_items(item):
                return False
        elif kind is not float or item - item != 0.0:  # nan and inf give nan
            return False
    return True


def _is_plain(value: Any) -> bool:
    return _plain_items((value,))


# ---- encoding: the tagged walk ----------------------------------------------------------


def _root(value: Any, where: str) -> Any:
    """The JSON tree of ``value``, or ``TypeError`` naming what cannot be stored and where."""
    try:
        return _tree(value)
    except _Unstorable as exc:
        raise TypeError(exc.message(where)) from None
    except RecursionError:
        raise TypeError(_too_deep(value, where)) from None


def _too_deep(value: Any, where: str) -> str:
    reason = "it is nested too deeply (orjson stops at 255 levels) or contains itself"
    return f"cannot store {type(value).__qualname__} at {where}: {reason}"


def _tagged(tag: str, payload: Any) -> dict[str, Any]:
    return {MARK: tag, "v": payload}


def _within(segment: str, convert: Callable[[Any], Any], value: Any) -> Any:
    try:
        return convert(value)
    except _Unstorable as exc:
        exc.segments.append(segment)
        raise


def _tree(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    encoder = _ENCODERS.get(kind)
    return _object_tree(value) if encoder is None else encoder(value)


def _int_tree(value: int) -> Any:
    return value if _INT_MIN <= value <= _INT_MAX else _tagged("int", format(value, "#x"))  # hex: no digit limit


def _float_tree(value: float) -> Any:
    return value if value - value == 0.0 else _tagged("float", repr(value))


def _list_tree(value: Sequence[Any]) -> list[Any]:
    out = []
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str or kind is bool or item is None or (kind is int and _INT_MIN <= item <= _INT_MAX):
            out.append(item)
            continue
        try:
            out.append(_tree(item))
        except _Unstorable as exc:
            exc.segments.append(f"[{index}]")
            raise
    return out


def _key_label(key: Any) -> str:
    return f"[{_dumps(key).decode()}]" if type(key) is str else f"[{key!r}]"


def _dict_tree(value: dict[Any, Any]) -> Any:
    if MARK in value:
        return _pairs_tree(value)
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            return _pairs_tree(value)
        kind = type(item)
        if kind is str or kind is bool or item is None or (kind is int and _INT_MIN <= item <= _INT_MAX):
            out[key] = item
            continue
        try:
            out[key] = _tree(item)
        except _Unstorable as exc:
            exc.segments.append(_key_label(key))
            raise
    return out


def _pairs_tree(value: dict[Any, Any]) -> Any:
    """A dict that JSON cannot key as it is (keys not all str, or a "$durable" key) as ``[[key, value], ...]``."""
    return _tagged(
        "dict", [[_within(".keys()", _tree, key), _within(_key_label(key), _tree, item)] for key, item in value.items()]
    )


def _elements(value: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        ordered = sorted(value)  # equal sets, equal bytes: string hashes differ between processes
    except TypeError:
        ordered = list(value)
    return [_within("{...}", _tree, item) for item in ordered]


def _moment_tree(tag: str, value: datetime | time) -> Any:
    """An ISO string when it says everything about ``value``, else ``[naive_iso, fold, tzinfo]``."""
    zone = value.tzinfo
    if value.fold == 0 or value.utcoffset() != value.replace(fold=0).utcoffset():
        if zone is None or zone is UTC or (type(zone) is timezone and _unnamed(zone)):
            return {MARK: tag, "v": value.isoformat()}
        if type(zone) is ZoneInfo and zone.key:
            return {MARK: tag, "v": f"{value.isoformat()}[{zone.key}]"}
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return _tagged(tag, [naive, value.fold, _within(".tzinfo", _tree, zone)])


def _unnamed(zone: timezone) -> bool:
    """Whether ``zone`` has the name its offset gives it, the one an ISO offset string comes back with."""
    return zone.tzname(None) == timezone(zone.utcoffset(None)).tzname(None)


def _timezone_tree(value: timezone) -> Any:
    offset = value.utcoffset(None) // timedelta(microseconds=1)
    return _tagged("timezone", [offset, None if _unnamed(value) else value.tzname(None)])


def _zoneinfo_tree(value: ZoneInfo) -> Any:
    if not value.key:
        raise _Unstorable(ZoneInfo, "it has no key (made by ZoneInfo.from_file?), so it could not be made again")
    return _tagged("zoneinfo", value.key)


def _b64(value: bytes | bytearray) -> str:
    return base64.b64encode(value).decode("ascii")


# orjson writes a naive or UTC datetime, a date and a UUID exactly as their isoformat() and
# str() would (a test holds it to that), several times faster: such payloads stay objects in
# the tree for the final orjson.dumps to write.


def _datetime_tree(value: datetime) -> Any:
    if value.fold == 0 and (value.tzinfo is None or value.tzinfo is UTC):
        return {MARK: "datetime", "v": value}
    return _moment_tree("datetime", value)


def _time_tree(value: time) -> Any:
    if value.fold == 0 and value.tzinfo is None:
        return {MARK: "time", "v": value.isoformat()}  # not orjson: 3.13 writes 10000 us as ".10000"
    return _moment_tree("time", value)


_ENCODERS: Final[dict[type, Callable[[Any], Any]]] = {
    int: _int_tree,
    float: _float_tree,
    dict: _dict_tree,
    list: _list_tree,
    tuple: lambda v: {MARK: "tuple", "v": _list_tree(v)},
    set: lambda v: _tagged("set", _elements(v)),
    frozenset: lambda v: _tagged("frozenset", _elements(v)),
    bytes: lambda v: _tagged("bytes", _b64(v)),
    bytearray: lambda v: _tagged("bytearray", _b64(v)),
    datetime: _datetime_tree,
    time: _time_tree,
    date: lambda v: {MARK: "date", "v": v},
    timedelta: lambda v: _tagged("timedelta", [v.days, v.seconds, v.microseconds]),
    Decimal: lambda v: {MARK: "decimal", "v": str(v)},
    UUID: lambda v: {MARK: "uuid", "v": v},
    timezone: _timezone_tree,
    ZoneInfo: _zoneinfo_tree,
}


def _object_tree(value: Any) -> Any:
    """An Enum member, a dataclass instance or a registered class's instance; else why not."""
    cls = type(value)
    codec = cls.__dict__.get(_CODEC)
    if isinstance(codec, _Codec):
        return _tagged(_class_tag(cls), _within(".to_value()", lambda v: _tree(codec.to_value(v)), value))
    if isinstance(value, enum.Enum):
        return _tagged(_class_tag(cls), _within(".value", _tree, value.value))
    if dataclasses.is_dataclass(cls):
        tag = _class_tag(cls)
        return _tagged(tag, {f.name: _within(f".{f.name}", _tree, getattr(value, f.name)) for f in dataclasses.fields(cls)})
    base = next((b for b in cls.__mro__ if b in _ENCODERS or b in _LEAVES), None)
    if base is not None:
        raise _Unstorable(
            cls,
            f"a subclass of {base.__qualname__} would come back as {base.__qualname__}; "
            f"pass {base.__qualname__}(...) or register {cls.__qualname__} with durable.register_type",
        )
    raise _Unstorable(cls, _UNKNOWN)


def _class_tag(cls: type) -> str:
    """``module:qualname``, once it is sure to find ``cls`` again when decoding."""
    tag = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise _Unstorable(
            cls,
            f"it is defined inside a function ({cls.__qualname__}), so it could not be found again "
            "to decode it; define it at module level",
        )
    if _lookup(sys.modules.get(cls.__module__), cls.__qualname__) is not cls:
        raise _Unstorable(
            cls, f"{tag} does not lead back to it, so it could not be found again to decode it; define it at module level"
        )
    return tag


def _lookup(module: Any, qualname: str) -> Any:
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


# ---- decoding ----------------------------------------------------------------------------


def _untag(node: Any) -> Any:
    """``node`` (a freshly loaded dict or list) with its tagged objects replaced, in place."""
    if type(node) is list:
        return _untag_list(node)
    return _from_tag(node) if MARK in node else _untag_dict(node)


def _untag_list(node: list[Any]) -> list[Any]:
    for index, item in enumerate(node):
        kind = type(item)
        if kind is dict:
            node[index] = _from_tag(item) if MARK in item else _untag_dict(item)
        elif kind is list:
            node[index] = _untag_list(item)
    return node


def _untag_dict(node: dict[str, Any]) -> Any:
    """``node``'s values untagged; ``node`` itself is not a tag (its caller looked)."""
    for key, item in node.items():
        kind = type(item)
        if kind is dict:
            node[key] = _from_tag(item) if MARK in item else _untag_dict(item)
        elif kind is list:
            node[key] = _untag_list(item)
    return node


def _from_tag(node: dict[str, Any]) -> Any:
    tag = node[MARK]
    if len(node) != 2 or "v" not in node or type(tag) is not str:
        raise ValueError(f"malformed stored value: {_dumps(node)[:200]!r}")
    payload = node["v"]
    if type(payload) is dict or type(payload) is list:
        payload = _untag(payload)
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(payload)
    if ":" in tag:
        return _from_class(tag, payload)
    raise ValueError(f"unknown stored type tag {tag!r}")


def _moment_from(cls: type[datetime] | type[time], payload: Any) -> Any:
    if type(payload) is list:
        naive, fold, zone = payload
        return cls.fromisoformat(naive).replace(tzinfo=zone, fold=fold)
    text, _, key = payload.partition("[")
    value = cls.fromisoformat(text)
    if not key:
        return value
    local = value.replace(tzinfo=ZoneInfo(key.removesuffix("]")))
    # the stored offset says which of an ambiguous (or skipped) wall time it was
    return local if local.utcoffset() == value.utcoffset() else local.replace(fold=1)


def _timezone_from(payload: list[Any]) -> timezone:
    offset = timedelta(microseconds=payload[0])
    return timezone(offset) if payload[1] is None else timezone(offset, payload[1])


def _unb64(payload: str) -> bytes:
    return base64.b64decode(payload, validate=True)


_DECODERS: Final[dict[str, Callable[[Any], Any]]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "dict": dict,
    "bytes": _unb64,
    "bytearray": lambda v: bytearray(_unb64(v)),
    "int": lambda v: int(v, 16),
    "float": float,
    "decimal": Decimal,
    "uuid": UUID,
    "date": date.fromisoformat,
    "datetime": partial(_moment_from, datetime),
    "time": partial(_moment_from, time),
    "timedelta": lambda v: timedelta(*v),
    "timezone": _timezone_from,
    "zoneinfo": ZoneInfo,
}


def _from_class(tag: str, payload: Any) -> Any:
    """Build a registered class, an Enum member or a dataclass named by ``tag``; refuse anything else."""
    cls = _resolve(tag)
    codec = cls.__dict__.get(_CODEC)
    if isinstance(codec, _Codec):
        value = codec.from_value(payload)
        if not isinstance(value, cls):
            raise TypeError(f"{cls.__qualname__}.from_value returned {type(value).__qualname__}, not {cls.__qualname__}")
        return value
    if issubclass(cls, enum.Enum):
        return cls(payload)
    if dataclasses.is_dataclass(cls):
        return _dataclass_from(cls, payload)
    raise TypeError(
        f"refusing to decode a stored {tag}: it is not a dataclass, an Enum or a class registered with durable.register_type"
    )


def _resolve(tag: str) -> type:
    module_name, _, qualname = tag.partition(":")
    if not all(part.isidentifier() for part in module_name.split(".")) or not qualname:
        raise ValueError(f"malformed stored class name {tag!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TypeError(f"cannot decode a stored {tag}: {exc}") from None
    cls = _lookup(module, qualname)
    if not isinstance(cls, type):
        raise TypeError(
            f"refusing to decode a stored {tag}: it is not a dataclass, an Enum or a class registered with durable.register_type"
        )
    return cls


def _dataclass_from(cls: type[Any], state: Any) -> Any:
    """An instance with ``state`` restored field by field, as a copy would: ``__init__`` is not called."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if type(state) is not dict or state.keys() - fields.keys():
        raise ValueError(f"stored {cls.__qualname__} does not match its fields {list(fields)}: {state!r:.200}")
    obj = cast(Any, cls).__new__(cls)
    for name, field in fields.items():
        object.__setattr__(obj, name, state[name] if name in state else _default(cls, field))
    return obj


def _default(cls: type, field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ValueError(f"stored {cls.__qualname__} has no value for field {field.name!r}, which has no default")
