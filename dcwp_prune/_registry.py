"""A small name -> factory registry with close-match errors (models and datasets)."""

from __future__ import annotations

import difflib
import warnings
from typing import Callable, Dict, Generic, Iterable, List, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, available: Iterable[str], listing: str = "") -> str:
    """``unknown dataset 'bffq'; did you mean 'bffhq'? available: ...``: close matches first.

    Up to 12 names are listed in full; a longer list is summarised by its count and ``listing`` (the
    option that prints it all, e.g. ``--list-models``).
    """
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if len(names) <= 12:
        return f"unknown {kind} {name!r}{hint} available: {', '.join(names)}"
    where = f"{listing} prints" if listing else "there are"
    return f"unknown {kind} {name!r}{hint} ({where} all {len(names)} {kind}s)"


class Registry(Generic[T]):
    """Maps names to factories. ``get`` raises ``KeyError`` listing close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                warnings.warn(f"overwriting {self.kind} {name!r} in the registry", stacklevel=2)
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> List[str]:
        return sorted(self._items)
