"""Exceptions that medbench raises for bad input, with a message that names the fix."""

from __future__ import annotations


class MedbenchError(Exception):
    """Base class: an error caused by the user's input or environment, not by a bug."""


class InputError(MedbenchError, ValueError):
    """Bad input data: wrong shape, NaNs, missing labels, empty folders, unreadable files."""


class UnknownNameError(MedbenchError, KeyError):
    """A name that is not in a registry. The message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(MedbenchError, ImportError):
    """An optional dependency is not installed. The message names the pip extra."""


class OfflineError(MedbenchError, RuntimeError):
    """Something needed the network (weights from a hub) and it is not reachable."""
