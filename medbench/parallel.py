"""Run a function over many items (files, series) with worker processes and a progress bar.

``executor="local"`` uses a process pool (the default); ``executor="dask"`` submits one task per
item to a Dask cluster (``scheduler`` address, or a LocalCluster started here). Results come back in
input order. Exceptions inside ``fn`` are returned as :class:`Failure` records rather than raised,
so one bad item never aborts a batch.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm.auto import tqdm

from medbench.errors import InputError

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: :attr:`Failure.error` of an item whose worker process died (abort, segfault, killed).
WORKER_CRASH = "WorkerCrash"
R = TypeVar("R")
#: Executors :func:`map_items` knows.
EXECUTORS = ("local", "dask")


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
    isolate: bool = False,
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
        isolate: Run items in worker processes even with ``workers=1``, and survive worker deaths
            (see the module docstring); use it for native decoders that may abort.
    """
    items = list(items)
    if executor == "dask":
        from medbench.parallel_dask import dask_map

        return dask_map(fn, items, workers=workers, scheduler=scheduler, desc=desc, progress=progress)
    if executor != "local":
        from medbench.registry import did_you_mean

        raise InputError(f"unknown executor {executor!r}: {did_you_mean(executor, list(EXECUTORS))}")
    workers = _resolve_workers(workers)
    bar = tqdm(total=len(items), desc=desc or None, disable=not progress, unit="item")
    try:
        if isolate and items:
            return _isolated_map(fn, items, workers, chunksize, bar)
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


def check_executor(executor: str) -> None:
    """Raise :class:`~medbench.errors.InputError` (one line) unless ``executor`` is known."""
    if executor not in EXECUTORS:
        from medbench.registry import did_you_mean

        raise InputError(f"unknown executor {executor!r}: {did_you_mean(executor, list(EXECUTORS))}")


def _isolated_map(
    fn: Callable[[T], R], items: list[T], workers: int, chunksize: int | None, bar: Any
) -> list[R | Failure]:
    """:func:`map_items` in worker processes that survives worker deaths (see module docstring)."""
    results: dict[int, R | Failure] = {}
    if chunksize is None:
        chunksize = max(1, len(items) // (workers * 4))
    pending = list(range(len(items)))
    # Round 1: normal chunked pool. A death breaks the pool; what did not finish is re-run below.
    pending = _pool_round(fn, items, pending, workers, chunksize, results, bar)
    if pending:
        logger.warning("a worker process died; re-running %d unfinished items in fresh workers", len(pending))
    # Round 2+: one item per task, at most ``workers`` in flight; on a death, pin the culprit among
    # the in-flight items by running each alone.
    while pending:
        pending, in_flight = _bounded_round(fn, items, pending, workers, results, bar)
        for i in in_flight:
            left = _pool_round(fn, items, [i], 1, 1, results, bar)
            if left:
                logger.warning("worker died on item %r; recorded as %s", items[i], WORKER_CRASH)
                results[i] = Failure(items[i], WORKER_CRASH, "worker process died while processing this item")
                bar.update(1)
    return [results[i] for i in range(len(items))]


def _pool_round(
    fn: Callable[[T], R], items: list[T], idx: list[int], workers: int, chunksize: int,
    results: dict[int, R | Failure], bar: Any,
) -> list[int]:
    """Run ``idx`` in a fresh pool; fill ``results``; return the indices left unfinished by a pool death."""
    chunks = [idx[i : i + chunksize] for i in range(0, len(idx), chunksize)]
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)))
    try:
        futures = {pool.submit(_run_chunk, fn, [items[i] for i in chunk]): chunk for chunk in chunks}
        for fut in as_completed(futures):
            try:
                out = fut.result()
            except BrokenProcessPool:
                continue
            for i, r in zip(futures[fut], out):
                results[i] = r
            bar.update(len(out))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [i for i in idx if i not in results]


def _bounded_round(
    fn: Callable[[T], R], items: list[T], idx: list[int], workers: int, results: dict[int, R | Failure], bar: Any,
) -> tuple[list[int], list[int]]:
    """One item per task, at most ``workers`` in flight, until done or the pool dies.

    Returns:
        (items never submitted, items in flight when the pool died).
    """
    queue = list(idx)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(queue)))
    running: dict[Future[list[R | Failure]], int] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop(0)
                running[pool.submit(_run_chunk, fn, [items[i]])] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                i = running[fut]
                try:
                    results[i] = fut.result()[0]
                except BrokenProcessPool:
                    continue
                del running[fut]
                bar.update(1)
            if any(f.done() and f.exception() is not None for f in running):
                return queue, [i for i in running.values() if i not in results]
        return [], []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
