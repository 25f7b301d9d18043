"""CD-GraB (Cooper et al. 2023): coordinated pair balance over the workers of a DDP job.

Each of W workers owns a fixed shard of ``N // W`` examples and visits it in its own order. At
every step each worker computes (sketched) per-example gradients of its batch and all workers
``all_gather`` them. Consecutive examples of one worker form a pair; the pair differences are
signed against **one shared running sum** ``s``, pair by pair in (position, rank) order; the
example with sign +1 takes that worker's next front slot, the other its next back slot. Every
worker replays the same signing on the same gathered vectors, so ``s`` stays identical
everywhere without a server, and each worker keeps only its own next local permutation.

:class:`CDGraBSimulator` runs W virtual workers in one process and is the oracle for the
distributed sampler :class:`CDGraBSampler` (registered as "cdgrab").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from medbench.errors import InputError
from medbench.train.grab import BALANCE_DTYPE, GradientSource, SlotOrder, pair_balance
from medbench.train.hooks import ORDERINGS
from medbench.train.sketch import CountSketch
from medbench.utils.rng import torch_generator

logger = logging.getLogger(__name__)


def shard_indices(dataset_size: int, world_size: int, seed: int) -> list[list[int]]:
    """Seeded equal shards of ``dataset_size // world_size`` dataset indices per worker."""
    if world_size < 1 or dataset_size < world_size:
        raise InputError(
            f"CD-GraB needs at least one example per worker: dataset_size={dataset_size}, "
            f"world_size={world_size}"
        )
    perm = torch.randperm(dataset_size, generator=torch_generator(seed, "cdgrab-shards")).tolist()
    n_local = dataset_size // world_size
    if dataset_size % world_size:
        logger.info("CD-GraB: %d examples left out so that shards are equal", dataset_size % world_size)
    return [perm[r * n_local : (r + 1) * n_local] for r in range(world_size)]


def first_local_order(n_local: int, seed: int, rank: int) -> list[int]:
    """Epoch-0 visit order (positions in the shard) of worker ``rank``."""
    return torch.randperm(n_local, generator=torch_generator(seed, "cdgrab-order", rank)).tolist()


class CoordinatedPairBalance:
    """Shared running sum over W workers; builds the next local orders of the ``tracked`` ranks."""

    def __init__(self, world_size: int, tracked: Sequence[int]) -> None:
        self.world_size = int(world_size)
        self.tracked = list(tracked)
        self.reset()

    def reset(self) -> None:
        self.s: torch.Tensor | None = None
        self.pending: list[tuple[int, torch.Tensor] | None] = [None] * self.world_size
        self.slots = {r: SlotOrder() for r in self.tracked}
        self.seen = {r: set() for r in self.tracked}  # type: dict[int, set[int]]

    def step(self, vectors: torch.Tensor, positions: dict[int, Sequence[int]]) -> None:
        """Balance gathered rows ``(W, B, d)``; ``positions[r]``: shard positions of tracked rank r."""
        if vectors.ndim != 3 or vectors.shape[0] != self.world_size:
            raise InputError(f"expected gathered vectors (W={self.world_size}, B, d), got {tuple(vectors.shape)}")
        v = vectors.detach().to(BALANCE_DTYPE)
        if self.s is None:
            self.s = v.new_zeros(v.shape[2])
        for p in range(v.shape[1]):
            for w in range(self.world_size):
                pos = int(positions[w][p]) if w in positions else -1
                if w in self.seen:
                    self.seen[w].add(pos)
                if self.pending[w] is None:
                    self.pending[w] = (pos, v[w, p])
                    continue
                first, g_first = self.pending[w]  # type: ignore[misc]
                self.pending[w] = None
                plus, self.s = pair_balance((g_first - v[w, p])[None], self.s)
                if w in self.slots:
                    self.slots[w].place(first, bool(plus[0]))
                    self.slots[w].place(pos, not bool(plus[0]))

    def next_order(self, rank: int, current: Sequence[int]) -> list[int]:
        """Front slots, then unvisited positions, then back slots reversed; leftover goes in front."""
        slots = self.slots[rank]
        if self.pending[rank] is not None:
            slots.place(self.pending[rank][0], True)  # type: ignore[index]
        missed = [q for q in current if q not in self.seen[rank]]
        return slots.order(missed)


class CDGraBSimulator:
    """W virtual CD-GraB workers in one process (the oracle of the distributed sampler)."""

    def __init__(self, dataset_size: int, world_size: int, seed: int = 0) -> None:
        self.shards = shard_indices(dataset_size, world_size, seed)
        n_local = len(self.shards[0])
        self.local = [first_local_order(n_local, seed, r) for r in range(world_size)]
        self.core = CoordinatedPairBalance(world_size, range(world_size))
        self._pos = [{i: q for q, i in enumerate(sh)} for sh in self.shards]

    def orders(self) -> list[list[int]]:
        """Dataset indices each worker visits this epoch."""
        return [[self.shards[r][q] for q in order] for r, order in enumerate(self.local)]

    def step(self, vectors: torch.Tensor, indices: Sequence[Sequence[int]]) -> None:
        """Rows ``(W, B, d)`` of the dataset ``indices[r]`` visited by each worker at this step."""
        positions = {r: [self._pos[r][int(i)] for i in idx] for r, idx in enumerate(indices)}
        self.core.step(vectors, positions)

    def end_epoch(self) -> None:
        self.local = [self.core.next_order(r, self.local[r]) for r in range(len(self.local))]
        self.core.reset()


@ORDERINGS.register("cdgrab")
class CDGraBSampler(Sampler[int]):
    """Per-rank CD-GraB sampler for torchrun/DDP (falls back to one worker without a process group).

    Args:
        dataset_size: N; each rank gets ``N // world_size`` examples.
        seed: Seed of shards, first orders and the sketch (must match on all ranks).
        rank: This worker (default: ``torch.distributed.get_rank()`` or 0).
        world_size: Number of workers (default: from torch.distributed or 1).
        sketch_dim: Count-sketch dimension (None: exact gradients); also bounds all_gather traffic.
        grad_params: fnmatch patterns of the parameters to balance on (None: all).
        chunk_size: vmap chunk size for per-example gradients.
        method: "auto", "vmap" or "tap" (see :class:`~medbench.train.grab.GraBSampler`).
        conv_proj: Conv-gradient projection (see :class:`~medbench.train.grab.GraBSampler`).
        group: torch.distributed process group (None: the default group).
    """

    name = "cdgrab"

    def __init__(
        self, dataset_size: int, seed: int = 0, *, rank: int | None = None,
        world_size: int | None = None, sketch_dim: int | None = 1024,
        grad_params: Sequence[str] | None = None, chunk_size: int | None = None,
        method: str = "auto", conv_proj: int | None = 8, group: Any = None,
    ) -> None:
        ready = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = int(rank if rank is not None else (torch.distributed.get_rank(group) if ready else 0))
        self.world_size = int(world_size if world_size is not None else (
            torch.distributed.get_world_size(group) if ready else 1))
        if not 0 <= self.rank < self.world_size:
            raise InputError(f"rank={self.rank} is outside world_size={self.world_size}")
        self.seed = int(seed)
        self.group = group
        self.grad_params = list(grad_params) if grad_params is not None else None
        self.chunk_size = chunk_size
        self.sketch = CountSketch(sketch_dim, seed) if sketch_dim else None
        self.source = GradientSource(sketch=self.sketch, grad_params=self.grad_params,
                                     chunk_size=chunk_size, method=method, conv_proj=conv_proj,
                                     seed=self.seed)
        self.shard = shard_indices(int(dataset_size), self.world_size, self.seed)[self.rank]
        self._pos = {i: q for q, i in enumerate(self.shard)}
        self.local = first_local_order(len(self.shard), self.seed, self.rank)
        self.core = CoordinatedPairBalance(self.world_size, [self.rank])
        self.epoch = 0
        self.epochs_balanced = 0
        self._observe_seconds = 0.0

    def __iter__(self) -> Iterator[int]:
        return iter([self.shard[q] for q in self.local])

    def __len__(self) -> int:
        return len(self.shard)

    def order(self) -> list[int]:
        return list(iter(self))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def observe(
        self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor | Sequence[int],
    ) -> None:
        t0 = time.perf_counter()
        self.step(self.source.rows(model, loss_fn, inputs, targets), indices)
        self._observe_seconds += time.perf_counter() - t0

    def step(self, rows: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> None:
        """All-gather this rank's rows ``(B, d)`` and run the shared pair balance."""
        idx = torch.as_tensor(indices).reshape(-1).tolist()
        rows = rows.detach().to(BALANCE_DTYPE).contiguous()
        if self.world_size > 1:
            parts = [torch.empty_like(rows) for _ in range(self.world_size)]
            torch.distributed.all_gather(parts, rows, group=self.group)
            gathered = torch.stack(parts)
        else:
            gathered = rows[None]
        self.core.step(gathered, {self.rank: [self._pos[int(i)] for i in idx]})

    def end_epoch(self) -> None:
        self.source.close()  # no hooks left on the model after the last epoch
        self.local = self.core.next_order(self.rank, self.local)
        self.core.reset()
        self.epochs_balanced += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "local": torch.tensor(self.local), "rank": self.rank,
                "world_size": self.world_size, "epochs_balanced": self.epochs_balanced}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (int(state["rank"]), int(state["world_size"])) != (self.rank, self.world_size):
            raise InputError("CD-GraB state is from another rank/world size: start a fresh run")
        self.local = torch.as_tensor(state["local"]).tolist()
        self.epoch = int(state["epoch"])
        self.epochs_balanced = int(state.get("epochs_balanced", 0))
        self.core.reset()

    def summary(self) -> dict[str, Any]:
        return {"order": self.name, "world_size": self.world_size,
                "sketch_dim": self.sketch.k if self.sketch else None,
                "epochs_balanced": self.epochs_balanced,
                "batches_by_method": dict(self.source.batches_by_method),
                "observe_seconds": round(self._observe_seconds, 3)}
