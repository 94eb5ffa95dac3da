"""Typed parsing of plain mappings (JSON, TOML) into dataclasses, with one-line errors.

Both sides of the project read files written by hand or by the other side: `exp_config.json`, shard rows,
metrics, `cockpit.toml`. A bad value must produce one line naming the file, the key and what was expected,
never a traceback. Pure Python: imported by the cockpit and the runtime alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class InputError(Exception):
    """Bad input from a file or the command line. Its message is one line meant for the user."""


class SchemaError(InputError):
    """A value in a file does not have the expected shape."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def describe(tp: Any) -> str:
    """A short human name for a type hint: 'integer', 'one of "fp32", "bf16"', 'list of integer'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [describe(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {describe(args[0])}"
    if origin is dict:
        return f"table of {describe(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "true or false"}.get(tp, str(tp))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    wrong = SchemaError(source, key, f"expected {describe(tp)}, got {_shown(value)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(arm, value, source, key)
            except SchemaError:
                continue
        raise wrong
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise wrong
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise wrong
        items = [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong
        return {str(k): _convert(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise wrong
        return parse(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong
    if tp is Any:
        return value
    raise TypeError(f"schema: unsupported field type {tp!r} for {key}")


def parse(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and values of the wrong type.

    After construction, a `check(source)` method on the dataclass (if any) runs the cross-field rules.
    """
    if not isinstance(data, Mapping):
        raise SchemaError(source, prefix.rstrip("."), f"expected a table of keys, got {_shown(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SchemaError(source, f"{prefix}{key}", f"unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], source, f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(source, f"{prefix}{name}", f"missing (expected {describe(hints[name])})")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(source, prefix)
    return obj


def to_plain(obj: Any) -> Any:
    """A dataclass (nested) as JSON-ready dicts and lists; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


__all__ = ["InputError", "SchemaError", "describe", "parse", "to_plain"]
