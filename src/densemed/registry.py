"""The name -> object registry behind ``nets``, ``losses`` and ``targets``, and "did you mean".

Each family keeps its own ``register``/``build``/``names`` functions (their signatures differ);
this module holds what they share: duplicate names are errors, unknown names and options list
the available ones and the closest match.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from densemed.errors import DensemedError

T = TypeVar("T")


def closest(name: str, options: Iterable[str], cutoff: float = 0.4) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or ``""`` when nothing is close."""
    match = difflib.get_close_matches(str(name), list(options), n=1, cutoff=cutoff)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_options(fn: Callable[..., Any], given: Iterable[str], what: str, skip: tuple[str, ...] = ("self",)) -> None:
    """Raise when ``given`` holds a keyword ``fn`` does not take (unless it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    options = [k for k in params if k not in skip]
    for key in given:
        if key not in options:
            raise DensemedError(f"{what} has no option {key!r}{closest(key, options)} Options: {', '.join(options)}")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` and ``where`` phrase the error messages)."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        """Record ``item``; a second entry under the same name is a programming error."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises listing the available ones and the closest."""
        if name not in self._items:
            raise DensemedError(
                f"{self.where}: unknown {self.kind} {name!r}{closest(name, self.names())} "
                f"Available: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Sorted names."""
        return sorted(self._items)
