"""Dataset adapters for the engine: training items carry their dataset index; eval items their uid.

Datasets yield ``(image, label)`` or ``(image, label, meta)`` with ``image`` a ``(C, H, W)`` float
tensor/array in [0, 1], ``label`` an int (or -1/None when unknown) and ``meta`` a dict with "uid".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medbench.errors import InputError


def unpack_item(item: Any, index: int) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """Split a dataset item into ``(image tensor, int label, meta dict)``."""
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        image, label = item[0], item[1]
        meta = item[2] if len(item) == 3 and isinstance(item[2], dict) else {}
    else:
        raise InputError(
            f"dataset item {index} is a {type(item).__name__}; the engine needs (image, label) or "
            "(image, label, meta) tuples"
        )
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        shape = tuple(getattr(image, "shape", ()))
        raise InputError(f"dataset item {index}: image must be a (C, H, W) tensor, got shape {shape}")
    if label is None:
        label = -1
    elif isinstance(label, torch.Tensor):
        label = int(label.item())
    else:
        label = int(label)
    return image.float(), label, meta


class IndexedDataset(Dataset):
    """Training view of a dataset: item ``i`` is ``(image, label, i)`` so samplers can see indices."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label, _ = unpack_item(self.dataset[index], index)
        return image, label, index


class EvalDataset(Dataset):
    """Evaluation view: item ``i`` is ``(image, label, uid, kept meta)``."""

    def __init__(self, dataset: Dataset, keep_meta: Sequence[str] = ()) -> None:
        self.dataset = dataset
        self.keep_meta = tuple(keep_meta)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str, dict[str, Any]]:
        image, label, meta = unpack_item(self.dataset[index], index)
        uid = meta.get("uid", index)
        kept = {k: meta.get(k) for k in self.keep_meta}
        return image, label, str(uid), kept


def collate_train(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(image, label, index)`` items into ``(images, labels, indices)`` tensors."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    indices = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return images, labels, indices


def collate_eval(batch: list[tuple[torch.Tensor, int, str, dict[str, Any]]]) -> tuple[Any, ...]:
    """Stack images and labels; keep uids and meta as lists."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels, [b[2] for b in batch], [b[3] for b in batch]


def first_image(dataset: Dataset) -> torch.Tensor:
    """The image of item 0 (used to probe the model's output size)."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise InputError("the training dataset is empty: check the split and the label table")
    image, _, _ = unpack_item(dataset[0], 0)
    return image
