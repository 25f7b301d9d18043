"""Putting an artifact on chosen images: at the working size, or made at the confounder's native
acquisition size (``ref_size``) and carried down, as the authors filter and tag at 1024 px."""

from __future__ import annotations

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
