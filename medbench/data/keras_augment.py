"""Keras ``ImageDataGenerator``-style random affine augmentation (Source Matters' training recipe).

The authors train with ``rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
shear_range=0.1, zoom_range=0.1, fill_mode="nearest"`` and no flips. Keras' semantics, kept here:
rotation uniform in degrees in ``[-10, 10]``; shifts uniform in ``[-0.1, 0.1]`` of the image size;
shear uniform in ``[-0.1, 0.1]`` **degrees** (Keras' unit, so nearly no shear); zoom factors drawn
independently for x and y from ``[0.9, 1.1]``; pixels outside the image take the nearest edge
value (``grid_sample`` with ``padding_mode="border"``). Interpolation is bilinear (Keras uses
scipy's order-1 spline, the same).

Draws never touch torch's global RNG. Inside a medbench dataset the transform is uid-aware
(:mod:`medbench.data.transforms`): image ``uid`` in epoch ``e`` draws from a generator seeded by
``(seed, "keras-affine", uid, e)``, so the draws do not depend on worker count, batch order or a
resume. Called on a bare tensor it draws from its own generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from medbench.errors import InputError
from medbench.utils.rng import torch_generator


class KerasAffine:
    """Random affine transform of one image ``(C, H, W)`` in [0, 1], Keras parameter semantics.

    Args:
        rotation: Maximum rotation in degrees.
        shift: Maximum shift as a fraction of width/height.
        shear: Maximum shear angle in degrees.
        zoom: Zoom factors are drawn from ``[1 - zoom, 1 + zoom]`` per axis.
        seed: Base seed of the draws.
    """

    uid_aware = True

    def __init__(self, *, rotation: float = 10.0, shift: float = 0.1, shear: float = 0.1,
                 zoom: float = 0.1, seed: int = 0) -> None:
        for name, v in (("rotation", rotation), ("shift", shift), ("shear", shear), ("zoom", zoom)):
            if not (v >= 0 and math.isfinite(v)):
                raise InputError(f"KerasAffine {name} must be a finite number >= 0; got {v!r}")
        if zoom >= 1:
            raise InputError(f"KerasAffine zoom must be < 1; got {zoom}")
        self.rotation, self.shift, self.shear, self.zoom = float(rotation), float(shift), float(shear), float(zoom)
        self.seed, self.epoch = int(seed), 0
        self.generator = torch_generator(self.seed, "keras-affine")

    def set_epoch(self, epoch: int) -> None:
        """The running epoch (part of each uid's seed)."""
        self.epoch = int(epoch)

    def matrix(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random 2x3 matrix in ``affine_grid``'s normalised coordinates (output -> input),
        drawn from ``generator`` (default: this transform's own seeded generator)."""
        u = torch.rand(6, dtype=torch.float64, generator=generator or self.generator) * 2 - 1
        theta = math.radians(self.rotation) * float(u[0])
        tx, ty = self.shift * float(u[1]) * 2, self.shift * float(u[2]) * 2  # fraction of size -> [-1, 1] units
        sh = math.radians(self.shear) * float(u[3])
        zx, zy = 1 + self.zoom * float(u[4]), 1 + self.zoom * float(u[5])
        rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        shear = torch.tensor([[1.0, -math.sin(sh)], [0.0, math.cos(sh)]])
        zoom = torch.diag(torch.tensor([zx, zy]))
        a = rot @ shear @ zoom
        return torch.cat([a, torch.tensor([[tx], [ty]])], dim=1).float()

    def apply(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random transform of ``image`` ``(C, H, W)`` drawn from ``generator``."""
        if image.ndim != 3:
            raise InputError(f"KerasAffine takes one image (C, H, W); got shape {tuple(image.shape)}")
        x = image[None].float()
        grid = F.affine_grid(self.matrix(generator)[None], list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0].clamp_(0.0, 1.0).to(image.dtype)

    def __call__(self, data: Any) -> Any:
        """``{"image", "uid"}`` -> same with the image transformed (seeded by (seed, uid, epoch)),
        or a bare tensor -> tensor (this transform's own generator)."""
        if isinstance(data, dict):
            g = torch_generator(self.seed, "keras-affine", data["uid"], self.epoch)
            return {**data, "image": self.apply(data["image"], g)}
        return self.apply(data)

    def __repr__(self) -> str:
        return (f"KerasAffine(rotation={self.rotation}, shift={self.shift}, shear={self.shear}, zoom={self.zoom}, "
                f"seed={self.seed})")


#: Augmentations an audit can name: "keras" is the Source Matters recipe.
AUGMENTATIONS = {"keras": KerasAffine}


def create_augmentation(name: str | None, *, seed: int = 0) -> KerasAffine | None:
    """The named augmentation (None/"none" for none), its draws seeded by ``seed``."""
    if name in (None, "none"):
        return None
    if name not in AUGMENTATIONS:
        from medbench.registry import did_you_mean

        raise InputError(f"augmentation {name!r}: {did_you_mean(str(name), list(AUGMENTATIONS))}")
    return AUGMENTATIONS[name](seed=seed)
