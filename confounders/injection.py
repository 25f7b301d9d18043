"""Putting an artifact on chosen images: at the working size, or made at the confounder's native
acquisition size (``ref_size``) and carried down, as the authors filter and tag at 1024 px.
:class:`ConfounderTransform` plugs a confounder into the data path's uid-aware pipeline."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import torch

from confounders.base import Confounder
from medbench.errors import InputError
from medbench.registry import did_you_mean

ARTIFACT_SCALES = ("native", "working")
_NATIVE_CHUNK = 16


def native_delta(conf: Confounder, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
    """The artifact made at ``conf.ref_size`` and brought to the images' size.

    The working image is upsampled (bilinear) to the reference size, the artifact applied there,
    and the change ``conf(up) - up`` downsampled with the loaders' resize (bilinear, antialiased)
    and added back: pixels the artifact does not touch stay exactly as they were, a tag is drawn
    at 1024 px and area-averaged like the image around it, and a low-pass removes only what the
    1024-px filter would (almost nothing the working image holds when it is much smaller).
    """
    import torch.nn.functional as F

    ref = conf.ref_size
    h, w = images.shape[-2:]
    out = images.clone()
    for s in range(0, images.shape[0], _NATIVE_CHUNK):
        x = images[s : s + _NATIVE_CHUNK].float()
        up = F.interpolate(x, size=(ref, ref), mode="bilinear", align_corners=False).clamp_(0, 1)
        delta = conf(up, uids[s : s + _NATIVE_CHUNK]) - up
        down = F.interpolate(delta, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[s : s + _NATIVE_CHUNK] = (x + down).clamp_(0, 1).to(images.dtype)
    return out


def inject(conf: Confounder, images: torch.Tensor, uids: list[str], mask: np.ndarray, *,
           scale: str = "native") -> torch.Tensor:
    """Copy of ``images`` with the artifact on the rows where ``mask`` is True.

    ``scale="native"`` makes geometric/frequency artifacts at the confounder's ``ref_size``
    (:func:`native_delta`); per-pixel artifacts (noise) and images already at ``ref_size`` are
    applied directly, as is everything with ``scale="working"``."""
    if scale not in ARTIFACT_SCALES:
        raise InputError(f"artifact_scale {scale!r}: {did_you_mean(str(scale), ARTIFACT_SCALES)}")
    out = images.clone()
    idx = np.flatnonzero(mask)
    if len(idx):
        sub, sub_uids = images[idx], [uids[i] for i in idx]
        native = scale == "native" and not conf.per_pixel and tuple(images.shape[-2:]) != (conf.ref_size,) * 2
        out[idx] = native_delta(conf, sub, sub_uids) if native else conf(sub, sub_uids)
    return out


class ConfounderTransform:
    """A confounder as a step of the uid-aware pipeline (:mod:`medbench.data.transforms`).

    The artifact goes on the images whose uid is in ``uids`` (all images when None), drawn as the
    confounder always draws: seeded by ``(seed, uid)``, so the same image gets the same artifact
    in every epoch, worker and resume. ``scale`` as in :func:`inject`.

    Args:
        conf: The confounder (``conf(images (N, C, H, W), uids) -> images``).
        uids: Uids that carry the artifact; None: every image.
        scale: "native" (made at ``conf.ref_size``) or "working".
    """

    uid_aware = True

    def __init__(self, conf: Confounder, uids: Collection[str] | None = None, *, scale: str = "native") -> None:
        if scale not in ARTIFACT_SCALES:
            raise InputError(f"artifact_scale {scale!r}: {did_you_mean(str(scale), ARTIFACT_SCALES)}")
        self.conf, self.scale = conf, scale
        self.uids = None if uids is None else frozenset(str(u) for u in uids)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        uid = str(data["uid"])
        if self.uids is not None and uid not in self.uids:
            return data
        img = data["image"]
        out = inject(self.conf, img[None], [uid], np.ones(1, dtype=bool), scale=self.scale)[0]
        return {**data, "image": out}

    def __repr__(self) -> str:
        n = "all" if self.uids is None else len(self.uids)
        return f"ConfounderTransform({self.conf!r}, uids={n}, scale={self.scale!r})"
