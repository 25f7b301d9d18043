"""Baseline example orderings: "rr" (random reshuffling each epoch) and "so" (shuffle once).

Both are ``torch.utils.data.Sampler`` objects that yield every dataset index exactly once per epoch.
The order depends only on ``(seed, epoch)`` ("rr") or on ``seed`` ("so"), never on global RNG
state, so a resumed run replays the same order. They implement the optional sampler protocol of
:mod:`medbench.train.hooks` (``set_epoch``, ``state_dict``, ``load_state_dict``, ``summary``).

Example:
    >>> from medbench.train.hooks import ORDERINGS, load_builtin_entries
    >>> load_builtin_entries()
    >>> s = ORDERINGS.create("rr", dataset_size=5, seed=0)
    >>> sorted(s) == [0, 1, 2, 3, 4]
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from medbench.errors import InputError
from medbench.train.hooks import ORDERINGS
from medbench.utils.rng import torch_generator


class _SeededPermutationSampler(Sampler[int]):
    """Shared part of the baseline orderings: a permutation drawn from a keyed generator."""

    name = "base"

    def __init__(self, dataset_size: int, seed: int = 0) -> None:
        if int(dataset_size) <= 0:
            raise InputError(
                f"ordering {self.name!r}: dataset_size must be positive, got {dataset_size}; "
                "check that the training split is not empty"
            )
        self.dataset_size = int(dataset_size)
        self.seed = int(seed)
        self.epoch = 0

    def _keys(self) -> tuple[object, ...]:
        raise NotImplementedError

    def order(self) -> list[int]:
        """The indices of the current epoch, in visit order."""
        g = torch_generator(self.seed, self.name, *self._keys())
        return torch.randperm(self.dataset_size, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def __len__(self) -> int:
        return self.dataset_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.seed, "dataset_size": self.dataset_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("dataset_size", self.dataset_size)) != self.dataset_size:
            raise InputError(
                f"ordering {self.name!r}: checkpoint was made for {state['dataset_size']} training "
                f"examples but the dataset has {self.dataset_size}; use a fresh output folder"
            )
        self.epoch = int(state.get("epoch", 0))
        self.seed = int(state.get("seed", self.seed))

    def summary(self) -> dict[str, Any]:
        return {"order": self.name, "seed": self.seed}


@ORDERINGS.register("rr")
class RandomReshuffling(_SeededPermutationSampler):
    """Random reshuffling: a fresh permutation each epoch, keyed by ``(seed, epoch)``."""

    name = "rr"

    def _keys(self) -> tuple[object, ...]:
        return (self.epoch,)


@ORDERINGS.register("so")
class ShuffleOnce(_SeededPermutationSampler):
    """Shuffle once: one permutation keyed by ``seed``, repeated every epoch."""

    name = "so"

    def _keys(self) -> tuple[object, ...]:
        return ()
