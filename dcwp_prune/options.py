"""Typed, frozen option dataclasses: the base every stage and run config derives from.

Fields carry their types (``Literal`` for choice lists); values are checked when a config is built,
so a wrong type or an unknown choice fails at once with :class:`ConfigError` naming the key, the
expected type and the value, never later inside a stage.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import fields
from typing import Any, Dict, Literal, Tuple, Type, TypeVar, Union, get_args, get_origin

from .errors import InputError

__all__ = ["ConfigError", "Options", "choices"]

T = TypeVar("T")


def choices(tp: Any) -> Tuple[str, ...]:
    """The values of a ``Literal`` type: the one tuple ``click.Choice`` and error messages use."""
    return tuple(get_args(tp))


class ConfigError(InputError):
    """A configuration value of the wrong type or outside its choices (the message names the key)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is Union:
        parts = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in parts) + " (or null)"
    if origin in (tuple, Tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, Dict):
        return "a table of options (name = value)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (ints widen to floats, lists become tuples)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Union:
        if value is None and type(None) in get_args(tp):
            return None
        for option in get_args(tp):
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool):
            raise bad
        return value
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(f"{key}[{i}]", v, get_args(tp)[0]) for i, v in enumerate(value))
    if origin in (dict, Dict):  # a free-form table (its keys are checked by whoever reads it)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{key} must be a 64-bit integer (below 2**63), got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


class Options:
    """Base of every frozen config dataclass: typed fields, checked when built, ``to_dict`` / ``from_dict``.

    A field annotated ``Literal[...]`` accepts only those values; ``Optional`` fields accept None; a
    field whose type is another :class:`Options` subclass is a nested table (``mask.lr``).
    """

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], data: Dict[str, Any], prefix: str = "") -> T:
        """Build from a (partial) dict, checking every value against its annotation.

        Unknown keys, values of the wrong type and values outside a choice list raise
        :class:`ConfigError` naming the dotted key (``mask.lr``), the expected type and the value.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of options, got {data!r}")
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} option(s) {[prefix + u for u in unknown]}; valid: {sorted(names)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in data.items():
            sub = hints[k]
            if isinstance(sub, type) and issubclass(sub, Options):
                kwargs[k] = v if isinstance(v, sub) else sub.from_dict(v, prefix=f"{prefix}{k}.")
            else:
                kwargs[k] = _coerce(prefix + k, v, hints[k])
        return cls(**kwargs)  # type: ignore[call-arg]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Options):
                continue
            checked = _coerce(f"{type(self).__name__}.{f.name}", value, hints[f.name])
            if checked is not value:
                object.__setattr__(self, f.name, checked)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
