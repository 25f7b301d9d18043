"""Run a function over many items (files, series) with worker processes and a progress bar.

``executor="local"`` uses a process pool (the default); ``executor="dask"`` submits one task per
item to a Dask cluster (``scheduler`` address, or a LocalCluster started here). Results come back in
input order. Exceptions inside ``fn`` are returned as :class:`Failure` records rather than raised,
so one bad item never aborts a batch.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Failure:
    """An item whose function raised: the item, the exception type and message, and the traceback."""

    item: Any
    error: str
    message: str
    traceback: str = ""


def _safe_call(fn: Callable[[T], R], item: T) -> R | Failure:
    try:
        return fn(item)
    except Exception as exc:  # noqa: BLE001 - a batch must survive any single item
        return Failure(item, type(exc).__name__, str(exc), traceback.format_exc())


def default_workers() -> int:
    """Worker processes to use: the usable CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _resolve_workers(workers: int | None) -> int:
    """``workers`` clamped to at least 1, or :func:`default_workers` when ``None``."""
    return default_workers() if workers is None else max(1, int(workers))


def map_items(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    desc: str = "",
    progress: bool = True,
    chunksize: int | None = None,
) -> list[R | Failure]:
    """Apply ``fn`` to each item, in parallel, returning results (or :class:`Failure`) in order.

    Args:
        fn: A picklable top-level function of one item.
        items: The items.
        workers: Process count (default: CPU count); ``1`` runs in this process.
        executor: ``"local"`` (process pool) or ``"dask"``.
        scheduler: Dask scheduler address; ``None`` starts a LocalCluster of ``workers`` processes.
        desc: Progress-bar label.
        progress: Show a progress bar.
        chunksize: Items per task for the local pool (default: a size that keeps ~4 tasks per worker).
    """
    items = list(items)
    if executor == "dask":
        from medbench.parallel_dask import dask_map

        return dask_map(fn, items, workers=workers, scheduler=scheduler, desc=desc, progress=progress)
    if executor != "local":
        from medbench.registry import did_you_mean

        raise ValueError(f"unknown executor {executor!r}: {did_you_mean(executor, ['local', 'dask'])}")
    workers = _resolve_workers(workers)
    bar = tqdm(total=len(items), desc=desc or None, disable=not progress, unit="item")
    try:
        if workers == 1 or len(items) <= 1:
            out: list[R | Failure] = []
            for item in items:
                out.append(_safe_call(fn, item))
                bar.update(1)
            return out
        if chunksize is None:
            chunksize = max(1, len(items) // (workers * 4))
        chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
        results: list[list[R | Failure] | None] = [None] * len(chunks)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_chunk, fn, chunk): i for i, chunk in enumerate(chunks)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                bar.update(len(chunks[i]))
        return [r for chunk in results for r in (chunk or [])]
    finally:
        bar.close()


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R | Failure]:
    return [_safe_call(fn, item) for item in chunk]
