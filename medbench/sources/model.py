"""``SourceModel``: a timm backbone plus the card's preprocessing, fed images in [0, 1]."""

from __future__ import annotations

import logging

import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.card import SourceCard

logger = logging.getLogger(__name__)


def _per_channel(values: tuple[float, ...], channels: int) -> torch.Tensor:
    """Broadcast a 1- or 3-entry mean/std to ``channels`` entries (3 -> 1 takes their average)."""
    t = torch.tensor(values, dtype=torch.float32)
    if t.numel() == channels:
        out = t
    elif t.numel() == 1:
        out = t.repeat(channels)
    elif channels == 1:
        out = t.mean().reshape(1)
    else:
        raise ValueError(f"cannot use {t.numel()} mean/std values for {channels} channels")
    return out.view(1, channels, 1, 1)


class SourceModel(nn.Module):
    """A source network that takes images in [0, 1] and preprocesses them as its card says.

    Args:
        backbone: timm-style model (``forward_features``, ``forward_head``, ``get_classifier``).
        card: The source card (its ``preprocessing`` and ``channel_policy`` are used).
        in_chans: Channels of the images the caller feeds (1 for grey).
        model_chans: Channels the backbone's first layer takes.

    Attributes:
        backbone: The timm model (its head is ``classifier``).
        card: The :class:`SourceCard` used to build this model.
        in_chans: Expected input channels.
    """

    def __init__(self, backbone: nn.Module, card: SourceCard, *, in_chans: int, model_chans: int) -> None:
        super().__init__()
        if in_chans not in (1, model_chans):
            raise InputError(
                f"source {card.name!r}: in_chans={in_chans} cannot feed a {model_chans}-channel "
                f"network; use in_chans=1 (grey) or in_chans={model_chans}"
            )
        self.backbone = backbone
        self.card = card
        self.in_chans = in_chans
        self.model_chans = model_chans
        p = card.preprocessing
        self._repeat = in_chans == 1 and model_chans > 1
        self._flip = p.channel_order == "BGR" and model_chans == 3
        lo, hi = p.input_range
        self._lo, self._scale = float(lo), float(hi - lo)
        self.register_buffer("mean", _per_channel(p.mean, model_chans), persistent=False)
        self.register_buffer("std", _per_channel(p.std, model_chans), persistent=False)

    @property
    def classifier(self) -> nn.Module:
        """The head module (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.backbone.get_classifier()

    @property
    def num_features(self) -> int:
        """Dimension ``D`` of :meth:`features`."""
        return int(self.backbone.num_features)

    @property
    def num_classes(self) -> int:
        """Number of outputs of :meth:`forward` (``num_features`` without a head)."""
        n = int(getattr(self.backbone, "num_classes", 0) or 0)
        return n if n > 0 else self.num_features

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] of shape ``(B, in_chans, H, W)`` to the network's input."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputError(
                f"source {self.card.name!r} expects images of shape (B, {self.in_chans}, H, W) in "
                f"[0, 1], got {tuple(x.shape)}; add a batch/channel axis or rebuild the source "
                f"with in_chans={x.shape[1] if x.ndim == 4 else '...'}"
            )
        x = x.to(self.mean.dtype) if not x.is_floating_point() else x
        if self._repeat:
            x = x.expand(-1, self.model_chans, -1, -1)
        if self._flip:
            x = x.flip(1)
        if self._lo != 0.0 or self._scale != 1.0:
            x = x * self._scale + self._lo
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, D)``: the classifier's input (after dropout in training mode)."""
        b = self.backbone
        return b.forward_head(b.forward_features(self.preprocess(x)), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (features when there is no head)."""
        return self.backbone(self.preprocess(x))

    def extra_repr(self) -> str:
        p = self.card.preprocessing
        return (
            f"source={self.card.name!r}, in_chans={self.in_chans}, model_chans={self.model_chans}, "
            f"preprocessing={p.name!r}"
        )
