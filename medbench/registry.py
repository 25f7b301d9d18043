"""A small registry + factory used by every extension point (sources, confounders, metrics, ...).

Example:
    >>> METRICS = Registry("metric")
    >>> @METRICS.register("ones")
    ... def ones(x):
    ...     return 1.0
    >>> METRICS.get("ones")(None)
    1.0
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from medbench.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a short hint naming the closest choices to ``name`` (or all of them)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose one of: " + ", ".join(sorted(choices))


class Registry(Generic[T]):
    """Name -> object mapping with a decorator to register and a factory to create.

    Args:
        kind: What the entries are ("source", "confounder", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name`` (default: its ``name`` attr or __name__)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            key = str(key)
            if key in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name, overwrite=overwrite)(obj)

    def get(self, name: str) -> T:
        """Look up ``name``; unknown names raise :class:`UnknownNameError` with close matches."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}: {did_you_mean(name, self.names())}"
            ) from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the entry registered under ``name`` with ``kwargs`` (class -> instance)."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
