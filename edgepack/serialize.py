"""Dataclass records -> plain JSON values, the one way every --json output and report does it."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from enum import Enum
from pathlib import Path
from typing import Any

# Field metadata key: a field that is storage, not part of the record's JSON (see HistoryRun).
INTERNAL = "edgepack.internal"


def to_jsonable(value: Any) -> Any:
    """Dataclasses become objects (their properties stay out), paths strings, numpy scalars
    numbers; non-finite floats become the strings "inf", "-inf" and "nan", which strict JSON
    parsers accept."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get(INTERNAL)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return to_jsonable(value.item())
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=False, allow_nan=False)


def from_jsonable(tp: Any, value: Any) -> Any:
    """The inverse of to_jsonable for a declared type: a dataclass from its object (keys this
    edgepack does not know are ignored, so records written by a newer one still read; missing
    ones take their defaults), lists and tuples, dicts, `X | None`, floats from "inf"/"nan",
    paths and enums."""
    import types
    import typing

    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option in options[:-1]:
            try:
                return from_jsonable(option, value)
            except (TypeError, ValueError, KeyError):
                continue
        return from_jsonable(options[-1], value)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return [from_jsonable(item, v) for v in _sequence(value, tp)]
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in _sequence(value, tp))
        return tuple(from_jsonable(a, v) for a, v in zip(args, _sequence(value, tp), strict=True))
    if origin is dict:
        _, item = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp}, got {type(value).__name__}")
        return {k: from_jsonable(item, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {type(value).__name__}")
        return tp(**{name: from_jsonable(hint, value[name])
                     for name, hint in _init_fields(tp) if name in value})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)  # "inf", "-inf" and "nan" too
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    return value


def _sequence(value: Any, tp: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list for {tp}, got {type(value).__name__}")
    return list(value)


@functools.cache
def _init_fields(cls: type) -> list[tuple[str, Any]]:
    """A dataclass's init fields with their resolved types (resolving is the slow part)."""
    import typing

    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init]
