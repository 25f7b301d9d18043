"""Run a function over many items (files, series) with worker processes and a progress bar.

``executor="local"`` uses a process pool (the default); ``executor="dask"`` submits one task per
item to a Dask cluster (``scheduler`` address, or a LocalCluster started here). Results come back in
input order. Exceptions inside ``fn`` are returned as :class:`Failure` records rather than raised,
so one bad item never aborts a batch.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from typing import Any, TypeVar

from tqdm.auto import tqdm

from medbench.errors import InputError
from medbench.parallel_items import (
    WORKER_CRASH,
    Failure,
    resolve_workers,
    safe_call,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
#: Executors :func:`map_items` knows.
EXECUTORS = ("local", "dask")


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
    workers = resolve_workers(workers)
    bar = tqdm(total=len(items), desc=desc or None, disable=not progress, unit="item")
    try:
        if isolate and items:
            return _isolated_map(fn, items, workers, bar)
        if workers == 1 or len(items) <= 1:
            out: list[R | Failure] = []
            for item in items:
                out.append(safe_call(fn, item))
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
    return [safe_call(fn, item) for item in chunk]


def check_executor(executor: str) -> None:
    """Raise :class:`~medbench.errors.InputError` (one line) unless ``executor`` is known."""
    if executor not in EXECUTORS:
        from medbench.registry import did_you_mean

        raise InputError(f"unknown executor {executor!r}: {did_you_mean(executor, list(EXECUTORS))}")


def _isolated_map(fn: Callable[[T], R], items: list[T], workers: int, bar: Any) -> list[R | Failure]:
    """:func:`map_items` in worker processes that survives worker deaths (see module docstring).

    Each worker holds one item at a time, so a worker that dies names its item exactly; it is
    recorded as :data:`WORKER_CRASH` and a fresh worker takes its place.
    """
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    queue = deque(range(len(items)))
    results: dict[int, R | Failure] = {}
    slots = [_Worker.start(ctx, fn) for _ in range(min(workers, len(items)))]
    try:
        for w in slots:
            w.feed(queue, items)
        while any(w.current is not None for w in slots):
            busy = [w for w in slots if w.current is not None]
            ready = set(mp_connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for k, w in enumerate(slots):
                if w.current is None or (w.conn not in ready and w.process.sentinel not in ready):
                    continue
                i = w.current
                try:
                    if w.conn not in ready:
                        raise EOFError
                    j, res = w.conn.recv()
                    results[j] = res
                    bar.update(1)
                    w.feed(queue, items)
                except (EOFError, OSError):
                    w.process.join(timeout=5)
                    logger.warning("worker died (exit code %s) on item %r; recorded as %s",
                                   w.process.exitcode, items[i], WORKER_CRASH)
                    results[i] = Failure(items[i], WORKER_CRASH,
                                         f"worker process died while processing this item (exit code {w.process.exitcode})")
                    bar.update(1)
                    w.close()
                    slots[k] = _Worker.start(ctx, fn)
                    slots[k].feed(queue, items)
    finally:
        for w in slots:
            w.close()
    return [results[i] for i in range(len(items))]


@dataclass
class _Worker:
    """One isolated worker process and the pipe it takes items from."""

    process: Any
    conn: Any
    current: int | None = None

    @classmethod
    def start(cls, ctx: Any, fn: Callable[[Any], Any]) -> _Worker:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_loop, args=(fn, child, os.getpid()), daemon=True)
        process.start()
        child.close()
        return cls(process, parent)

    def feed(self, queue: deque[int], items: list[Any]) -> None:
        self.current = queue.popleft() if queue else None
        if self.current is not None:
            self.conn.send((self.current, items[self.current]))

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _worker_loop(fn: Callable[[Any], Any], conn: Any, parent: int) -> None:
    """Take ``(index, item)`` messages until ``None`` (or the parent is gone); answer ``(index, result)``."""
    while True:
        try:
            while not conn.poll(1.0):
                if os.getppid() != parent:  # orphaned: the batch is gone
                    return
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, item = msg
        res = safe_call(fn, item)
        try:
            conn.send((i, res))
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            conn.send((i, Failure(item, type(exc).__name__, f"result cannot be sent back: {exc}")))
