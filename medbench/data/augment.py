"""Albumentations transforms in medbench's data pipeline (the optional ``augment`` extra).

medbench datasets hand their ``transform`` a float tensor ``(C, H, W)`` in [0, 1];
Albumentations works on numpy ``(H, W, C)`` arrays. :func:`as_transform` adapts one to the other,
so ``ImageDataset(table, transform=as_transform(A.Compose([...])))`` and
``run_experiment(..., train_transform=A.HorizontalFlip(p=0.5))`` both work. Pixel-level transforms
that assume uint8 input (e.g. some colour jitters) see float32 in [0, 1], which Albumentations
supports; the result is clipped back to [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medbench.errors import InputError
from medbench.utils.optional import optional_import

Transform = Callable[[torch.Tensor], torch.Tensor]


def is_albumentations(obj: Any) -> bool:
    """True for an Albumentations transform or Compose (without importing albumentations)."""
    return type(obj).__module__.split(".")[0] == "albumentations" or any(
        c.__module__.split(".")[0] == "albumentations" for c in type(obj).__mro__)


class AlbumentationsTransform:
    """Wrap an Albumentations transform as a ``(C, H, W)`` tensor -> tensor transform.

    Args:
        aug: An Albumentations transform (``A.Compose``, ``A.HorizontalFlip(p=1)``, ...).
    """

    def __init__(self, aug: Any) -> None:
        self.aug = aug

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3:
            raise InputError(f"expected a (C, H, W) image tensor, got shape {tuple(img.shape)}")
        hwc = np.ascontiguousarray(img.detach().cpu().numpy().transpose(1, 2, 0), dtype=np.float32)
        out = self.aug(image=hwc)["image"]
        if isinstance(out, torch.Tensor):  # a Compose ending in ToTensorV2 already gives (C, H, W)
            return out.float()
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 2:
            out = out[:, :, None]
        return torch.from_numpy(np.clip(out, 0.0, 1.0).transpose(2, 0, 1).copy())

    def __repr__(self) -> str:
        return f"AlbumentationsTransform({self.aug!r})"


def as_transform(obj: Any) -> Transform | None:
    """A dataset transform from an Albumentations object, a callable, or None (unchanged)."""
    if obj is None:
        return None
    if is_albumentations(obj):
        return AlbumentationsTransform(obj)
    if callable(obj):
        return obj
    raise InputError(f"transform must be callable or an Albumentations transform, got {type(obj).__name__}")


def load_augmentation(path: str | os.PathLike[str], *, seed: int = 0) -> Transform:
    """The training augmentation named by ``--augment``: "affine" is medbench's MONAI pipeline
    (:func:`medbench.data.transforms.train_transforms`: rotation, shift, shear, zoom, flip; seeded
    by ``(seed, uid, epoch)``); anything else is an Albumentations pipeline saved with
    ``A.save(aug, path)`` (.json or .yaml)."""
    text = str(path)
    if text == "affine":
        from medbench.data.transforms import train_transforms

        return train_transforms(seed=seed)
    A = optional_import("albumentations", extra="augment", purpose="--augment")  # noqa: N806
    if not os.path.isfile(text):
        raise InputError(f"--augment {text}: file not found; pass 'affine' or save a pipeline with albumentations.save(aug, PATH)")
    fmt = "yaml" if text.endswith((".yaml", ".yml")) else "json"
    return AlbumentationsTransform(A.load(text, data_format=fmt))
