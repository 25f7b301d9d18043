"""Dask backend of :func:`medbench.parallel.map_items`: one task per item on a Dask cluster.

Workers are processes (a LocalCluster with ``processes=True`` when no scheduler address is given),
so GIL-bound decoding scales like the local process pool. Failures come back as
:class:`medbench.parallel.Failure` records, never as exceptions, so the batch never aborts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from medbench.utils.optional import optional_import

log = logging.getLogger(__name__)


def dask_map(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    desc: str = "",
    progress: bool = True,
) -> list[Any]:
    """Run ``fn`` over ``items`` on Dask and return results in input order.

    Args:
        fn: Picklable top-level function of one item.
        items: The items (one task each).
        workers: Worker processes for a LocalCluster (ignored with ``scheduler``).
        scheduler: Address of a running scheduler (``tcp://host:8786``); ``None`` starts a
            LocalCluster for this call and closes it afterwards.
        desc: Progress-bar label.
        progress: Show a progress bar.
    """
    distributed = optional_import("dask.distributed", extra="scale", purpose="--executor dask")
    from medbench.parallel_items import WORKER_CRASH, Failure, resolve_workers, safe_call

    cluster = None
    if scheduler is None:
        cluster = distributed.LocalCluster(n_workers=resolve_workers(workers), threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
    else:
        client = distributed.Client(scheduler)
    log.info("dask: %d tasks on %s", len(items), client.scheduler.address)
    try:
        futures = [client.submit(safe_call, fn, item, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(items)
        with tqdm(total=len(items), desc=desc or None, disable=not progress, unit="item") as bar:
            for fut in distributed.as_completed(futures):
                i = index[fut.key]
                try:
                    out[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died on this item (KilledWorker)
                    out[i] = Failure(items[i], WORKER_CRASH, f"{type(exc).__name__}: {exc}")
                bar.update(1)
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
