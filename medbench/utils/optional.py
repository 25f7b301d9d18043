"""Lazy imports of optional heavy dependencies that fail with the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from medbench.errors import MissingDependencyError


def optional_import(module: str, *, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install medbench[extra]``.

    Args:
        module: Dotted module name, e.g. ``"dask.distributed"``.
        extra: The medbench extra that provides it, e.g. ``"scale"``.
        purpose: What it is needed for, shown in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module!r} is needed{why} but is not installed: run `pip install 'medbench[{extra}]'`"
        ) from exc


def has_module(module: str) -> bool:
    """True when ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
