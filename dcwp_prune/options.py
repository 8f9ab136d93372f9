"""Typed, frozen option dataclasses: the base every stage and run config derives from.

Fields carry their types (``Literal`` for choice lists); values are checked when a config is built,
so a wrong type or an unknown choice fails at once with :class:`ConfigError` naming the key, the
expected type and the value, never later inside a stage.

An option is declared once, as a field: :func:`option` puts its command-line flag, help, range and path
kind in the field's metadata, from which the CLI builds its options (``run/cli.py``), :func:`check_ranges`
checks ranges and :func:`flag_of` names the flag in messages. Adding an option is one field plus its use.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Dict, Iterator, Literal, Optional, Tuple, Type, TypeVar, Union, get_args, get_origin

from .errors import InputError

__all__ = ["ConfigError", "OptionSpec", "Options", "check_ranges", "choices", "flag_of", "option", "option_specs"]

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


PathKind = Literal["file", "folder", "any"]


def option(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    flag: Optional[str] = None,
    help: str = "",
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    means: str = "",
    path: Optional[PathKind] = None,
    show_default: bool = False,
) -> Any:
    """A config field that declares everything about its option once.

    Args:
        flag: its command-line flag (``"--batch-size"``; a boolean ``"--progress/--no-progress"``); None: config
            file only.
        help: the flag's help text.
        ge, gt, le, lt: its range (None values are never checked), enforced by :func:`check_ranges`.
        means: what the range means, named in the error (``"a percentage"``).
        path: ``"file"`` / ``"folder"`` / ``"any"``: a path, ``~``-expanded, checked to be that kind where it exists.
        show_default: the flag's help shows the field's default (not for values a dataset preset decides).
    """
    meta = {
        "flag": flag,
        "help": help,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "means": means,
        "path": path,
        "show_default": show_default,
    }
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One leaf option of a config class: its dotted key, type, default and the metadata of :func:`option`."""

    key: str
    type: Any
    default: Any
    flag: Optional[str] = None
    help: str = ""
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    means: str = ""
    path: Optional[str] = None
    show_default: bool = False

    @property
    def ranged(self) -> bool:
        return any(v is not None for v in (self.ge, self.gt, self.le, self.lt))

    def range_text(self) -> str:
        """``>= 0``, ``> 0`` or ``in (0, 1]``."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
        assert high is not None
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"

    def in_range(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def _default_of(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def option_specs(cls: Type[Options], prefix: str = "") -> Iterator[OptionSpec]:
    """Every leaf option of ``cls`` in declaration order, nested tables flattened to dotted keys."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        if isinstance(tp, type) and issubclass(tp, Options):
            yield from option_specs(tp, f"{prefix}{f.name}.")
            continue
        yield OptionSpec(key=prefix + f.name, type=tp, default=_default_of(f), **dict(f.metadata))


def _specs(cls: Type[Options]) -> Dict[str, OptionSpec]:
    cached = cls.__dict__.get("_option_specs")
    if cached is None:
        cached = {s.key: s for s in option_specs(cls)}
        cls._option_specs = cached
    return cached


def flag_of(cls: Type[Options], key: str) -> str:
    """`` (--flag)`` for a dotted key that has a command-line flag, else ``""``: for error messages."""
    spec = _specs(cls).get(key)
    return f" ({spec.flag.split('/')[0]})" if spec is not None and spec.flag else ""


def get_dotted(config: Options, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_ranges(config: Options) -> None:
    """Raise :class:`ConfigError` for the first set value outside its declared range, naming key, range, value
    and flag: ``data.batch_size must be > 0, got 0 (--batch-size)``."""
    for spec in _specs(type(config)).values():
        if not spec.ranged:
            continue
        value = get_dotted(config, spec.key)
        if value is None or spec.in_range(value):
            continue
        means = f" ({spec.means})" if spec.means else ""
        raise ConfigError(
            f"{spec.key} must be {spec.range_text()}{means}, got {value:g}{flag_of(type(config), spec.key)}"
        )
