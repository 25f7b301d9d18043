"""The one registration mechanism of every extension point (sources, confounders, metrics, ...).

A :class:`Registry` maps names to entries. Built-in entries are found one way: the registry is
given the modules that define them (``builtins``) and imports them on its first lookup; a
built-in module that fails to import raises (it is never a silently missing entry). Other
entries register themselves when their module is imported (``@REGISTRY.register("name")``).
An extension point states its contract as a :class:`typing.Protocol`; given one, the registry
checks each entry against it when the entry is registered.

Example:
    >>> METRICS = Registry("metric")
    >>> @METRICS.register("ones")
    ... def ones(x):
    ...     return 1.0
    >>> METRICS.get("ones")(None)
    1.0
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Literal, TypeVar

from medbench.errors import MissingDependencyError, UnknownNameError

T = TypeVar("T")
#: Top-level packages of this project: a missing module among them is a bug, not a missing extra.
PROJECT_PACKAGES = frozenset({"medbench", "confounders", "transferability", "harmonization"})

#: How an entry relates to the registry's Protocol: it is an instance of it, a class whose
#: instances satisfy it, or a factory returning one (checked only when called).
EntryKind = Literal["instance", "class", "factory"]


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a short hint naming the closest choices to ``name`` (or all of them)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose one of: " + ", ".join(sorted(choices))


_PROTOCOL_BASE_ATTRS = frozenset({"__annotations__", "__dict__", "__doc__", "__module__", "__weakref__",
                                  "__init__", "__parameters__", "__orig_bases__", "__abstractmethods__",
                                  "__protocol_attrs__", "__non_callable_proto_members__",
                                  "__subclasshook__", "__slots__", "__type_params__", "__static_attributes__",
                                  "__firstlineno__", "__qualname__", "__orig_class__"})


def protocol_members(protocol: type) -> list[str]:
    """Names a class must provide to satisfy ``protocol`` (its methods and annotated attributes)."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base.__name__ in ("Protocol", "Generic", "object"):
            continue
        names.update(getattr(base, "__annotations__", {}))
        names.update(k for k in vars(base) if not k.startswith("_abc_"))
    return sorted(n for n in names if n not in _PROTOCOL_BASE_ATTRS and not n.startswith("_"))


def missing_members(obj: Any, protocol: type) -> list[str]:
    """Members of ``protocol`` that ``obj`` (a class or an instance) lacks."""
    return [m for m in protocol_members(protocol) if not hasattr(obj, m)]


class Registry(Generic[T]):
    """Name -> entry mapping with a decorator to register and a factory to create.

    Args:
        kind: What the entries are ("source", "confounder", ...), used in error messages.
        builtins: Modules whose import registers the built-in entries; imported on first lookup.
            An import error propagates (a broken built-in is never silently skipped).
        protocol: The extension point's :class:`typing.Protocol`; entries are checked against it
            on registration (see ``entry``).
        entry: ``"instance"`` (entries satisfy ``protocol``), ``"class"`` (their instances do:
            the class must define every member) or ``"factory"`` (checked in tests only).
    """

    def __init__(self, kind: str, *, builtins: Sequence[str] = (), protocol: type | None = None,
                 entry: EntryKind = "instance") -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self.protocol = protocol
        self.entry = entry
        self._entries: dict[str, T] = {}
        self._state = "new" if self.builtins else "loaded"  # new -> loading -> loaded

    # -- built-ins ------------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Import the built-in modules once (idempotent); their import errors propagate."""
        if self._state != "new":
            return
        self._state = "loading"  # a lookup made while a built-in module imports must not recurse
        try:
            for module in self.builtins:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    missing = (exc.name or "").split(".")[0]
                    if not missing or missing in PROJECT_PACKAGES:
                        raise  # the project's own module is broken or missing: a bug, never skipped
                    raise MissingDependencyError(
                        f"the built-in {self.kind} entries of {module} need the package {missing!r}, which is "
                        f"not installed: install it (or the medbench extra that provides it) and retry"
                    ) from exc
        except BaseException:
            self._state = "new"
            raise
        self._state = "loaded"

    # -- registration ---------------------------------------------------------------------------
    def check(self, key: str, obj: Any) -> None:
        """Raise ``TypeError`` when ``obj`` lacks members of the registry's Protocol."""
        if self.protocol is None or self.entry == "factory":
            return
        missing = missing_members(obj, self.protocol)
        if missing:
            raise TypeError(f"{self.kind} {key!r} ({getattr(obj, '__name__', type(obj).__name__)}) does not "
                            f"satisfy {self.protocol.__name__}: missing {', '.join(missing)}")

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name`` (default: its ``name`` attr or __name__)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            key = str(key)
            if key in self._entries and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self.check(key, obj)
            self._entries[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name, overwrite=overwrite)(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (unknown names raise :class:`UnknownNameError`)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    @contextlib.contextmanager
    def temporary(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the duration of a ``with`` block (tests, experiments)."""
        self.load_builtins()
        self.add(name, obj)
        try:
            yield obj
        finally:
            self._entries.pop(name, None)

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """Look up ``name``; unknown names raise :class:`UnknownNameError` with close matches."""
        self.load_builtins()
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
        self.load_builtins()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.load_builtins()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
