"""What every executor of :mod:`medbench.parallel` shares: the per-item call that turns any
exception into a :class:`Failure` record, and the worker count."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: :attr:`Failure.error` of an item whose worker process died (abort, segfault, killed).
WORKER_CRASH = "WorkerCrash"


@dataclass(frozen=True)
class Failure:
    """An item whose function raised: the item, the exception type and message, and the traceback."""

    item: Any
    error: str
    message: str
    traceback: str = ""


def safe_call(fn: Callable[[T], R], item: T) -> R | Failure:
    """``fn(item)``, or a :class:`Failure` for anything it raises but ``KeyboardInterrupt``/``SystemExit``."""
    try:
        return fn(item)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a batch must survive any single item (pyo3 panics too)
        return Failure(item, type(exc).__name__, str(exc), traceback.format_exc())


def default_workers() -> int:
    """Worker processes to use: the usable CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``workers`` clamped to at least 1, or :func:`default_workers` when ``None``."""
    return default_workers() if workers is None else max(1, int(workers))
