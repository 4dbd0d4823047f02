"""Typed hooks: ``define_hook(Payload)`` checks payloads before they are stored and converts them on arrival.

A dataclass type builds instances field by field (``ValueError`` naming the
field that is missing, unknown or of the wrong type); any other class is an
``isinstance`` check; any other callable is a validator that returns the value
the workflow receives or raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from ._hooks import Hook, new_hook

if TYPE_CHECKING:
    from ._engine import Engine
    from ._hook_registry import HookInfo

T = TypeVar("T")

_SIMPLE = (str, int, float, bool, type(None))


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _check_simple(where: str, value: Any, hint: type) -> Any:
    if hint is float and type(value) is int:
        return float(value)
    if type(value) is not hint:
        raise ValueError(f"{where}: expected {_name(hint)}, got {type(value).__name__} {value!r:.60}")
    return value


def _check_union(where: str, value: Any, options: tuple[Any, ...]) -> Any:
    if value is None and type(None) in options:
        return None
    candidates = [option for option in options if option is not type(None)]  # an optional field's value
    errors = []
    for option in candidates:
        try:
            return _check(where, value, option)
        except ValueError as exc:
            errors.append(str(exc))
    if len(errors) == 1:
        raise ValueError(errors[0])
    raise ValueError(f"{where}: matches none of {', '.join(_name(o) for o in options)}, got {value!r:.60}")


def _check_items(where: str, value: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check(f"{where}[{i}]", item, args[0]) for i, item in enumerate(value)] if args else value
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    if len(args) != 2:
        return value
    return {key: _check(f"{where}[{key!r}]", item, args[1]) for key, item in value.items()}


def _check_literal(where: str, value: Any, options: tuple[Any, ...]) -> Any:
    if value not in options:
        raise ValueError(f"{where}: expected one of {', '.join(map(repr, options))}, got {value!r:.60}")
    return value


def _check(where: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (and converted: dataclasses built, ints to floats)."""
    if hint is Any or hint is object:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, f"{where}.")
    origin = get_origin(hint)
    if origin is not None or hint in (list, dict):
        return _check_generic(where, value, hint, origin)
    if hint in _SIMPLE:
        return _check_simple(where, value, hint)
    return _check_instance(where, value, hint)


def _check_instance(where: str, value: Any, hint: Any) -> Any:
    """Any other class: the payload must be one of its instances."""
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ValueError(f"{where or 'payload'} must be a {hint.__name__}, got {type(value).__name__}")
    return value


def _check_generic(where: str, value: Any, hint: Any, origin: Any) -> Any:
    if origin in (Union, types.UnionType):
        return _check_union(where, value, get_args(hint))
    if origin is Literal:
        return _check_literal(where, value, get_args(hint))
    if origin in (list, dict) or hint in (list, dict):
        return _check_items(where, value, origin or hint, get_args(hint))
    return value


def _fields(cls: type[Any], value: Any, prefix: str) -> dict[str, dataclasses.Field[Any]]:
    """The init fields of ``cls``, once ``value`` is an object with none they lack."""
    if not isinstance(value, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'payload'}: expected an object with the fields of {cls.__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown field of {cls.__name__}")
    return fields


def build(cls: type[T], value: Any, prefix: str = "") -> T:
    """An instance of the dataclass ``cls`` from a JSON object; ValueError naming the field that does not fit."""
    if isinstance(value, cls):
        return value
    fields = _fields(cls, value, prefix)
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, spec in fields.items():
        if name in value:
            checked[name] = _check(prefix + name, value[name], hints.get(name, Any))
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{prefix}{name}: required field of {cls.__name__} is missing")
    return cls(**checked)


def _converter(schema: type[T] | Callable[[Any], T]) -> Callable[[Any], T]:
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        dataclass_type = typing.cast(type[T], schema)
        return lambda value: build(dataclass_type, value)
    if isinstance(schema, type):
        plain: type[T] = schema
        return lambda value: typing.cast(T, _check("payload", value, plain))
    if callable(schema):
        return _validated_by(schema)
    raise TypeError(f"define_hook() takes a dataclass, a type or a validator function, got {schema!r}")


def _validated_by(validator: Callable[[Any], T]) -> Callable[[Any], T]:
    def convert(value: Any) -> T:
        try:
            return validator(value)
        except ValueError:
            raise
        except Exception as exc:  # the validator's own error, as the ValueError callers expect
            raise ValueError(f"payload refused by {_name(validator)}: {type(exc).__name__}: {exc}") from exc

    return convert


class HookDefinition(Generic[T]):
    """A kind of hook whose payloads are checked and typed; from ``define_hook``."""

    def __init__(self, schema: type[T] | Callable[[Any], T]) -> None:
        self.schema = schema
        self._convert = _converter(schema)

    def __repr__(self) -> str:
        return f"<HookDefinition {_name(self.schema)}>"

    def validate(self, payload: Any) -> T:
        """The payload as the workflow receives it; ``ValueError`` naming the field that does not fit."""
        return self._convert(payload)

    def create(self, token: str | None = None, metadata: Any = None) -> Hook[T]:
        """A hook of this kind in the current workflow body; its payloads arrive converted."""
        hook: Hook[T] = new_hook(Hook, token, metadata, None, self._convert)
        return hook

    async def resume(self, engine: Engine, token: str, payload: Any, *, idempotency_key: str | None = None) -> HookInfo:
        """Check ``payload`` here (``ValueError``, nothing stored), then ``engine.resume_hook``."""
        self.validate(payload)
        return await engine.resume_hook(token, payload, idempotency_key=idempotency_key)


def define_hook(schema: type[T] | Callable[[Any], T]) -> HookDefinition[T]:
    """A typed hook: ``schema`` is a dataclass type, another type, or a validator function."""
    return HookDefinition(schema)
