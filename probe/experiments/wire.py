"""Measured statistics as plain data, both ways: what a probe's child process sends its parent.

``encode`` turns a record (``Stats`` less its spec, ``LayerHistograms``) into JSON-ready lists,
dicts, numbers and strings; ``decode`` builds the record back from such data and checks every
field against its declared type on the way. The parent reads nothing else from its child: no
pickle (unpickling can import and run any code) and no object of the child's making, so what it
judges is numbers it parsed itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class WireError(ValueError):
    """The data does not describe the record it should (a field missing, extra or of a wrong type)."""


def encode(record: Any, skip: tuple[str, ...] = ()) -> Any:
    """A dataclass record (nested records, tuples, numbers, strings, ``None``) as plain data;
    ``skip`` names top-level fields left out (the spec, which the parent already holds)."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: encode(getattr(record, f.name)) for f in dataclasses.fields(record) if f.name not in skip}
    if isinstance(record, (tuple, list)):
        return [encode(v) for v in record]
    if record is None or isinstance(record, (bool, int, float, str)):
        return record
    raise WireError(f"cannot send a {type(record).__name__}")


def decode(cls: type[T], data: Any, given: dict[str, Any] | None = None) -> T:
    """The ``cls`` record ``data`` describes, every field checked against its type (``given``:
    top-level fields supplied by the caller instead, such as the spec)."""
    return typing.cast(T, _record(cls, data, given or {}, cls.__name__))


def _record(cls: type, data: Any, given: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise WireError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = set(data) - set(fields)
    if extra:
        raise WireError(f"{where}: unknown fields {sorted(extra)[:5]}")
    values = dict(given)
    for name, f in fields.items():
        if name in given:
            continue
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{where}: missing field {name}")
            continue
        values[name] = _value(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _value(kind: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _value(option, data, where)
            except WireError:
                continue
        raise WireError(f"{where}: {type(data).__name__} is none of {kind}")
    if origin is tuple:
        if not isinstance(data, list):
            raise WireError(f"{where}: expected a list, got {type(data).__name__}")
        item = typing.get_args(kind)[0]
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if dataclasses.is_dataclass(kind):
        return _record(typing.cast(type, kind), data, {}, where)
    return _scalar(kind, data, where)


def _scalar(kind: Any, data: Any, where: str) -> Any:
    if kind is type(None) and data is None:
        return None
    if kind is bool and isinstance(data, bool):
        return data
    if kind is int and isinstance(data, int) and not isinstance(data, bool):
        return data
    if kind is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if kind is str and isinstance(data, str):
        return data
    raise WireError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(data).__name__}")
