"""The ``checkpoint`` source: a local ``.pth``/``.safetensors`` state dict saved from a
:class:`~medbench.sources.model.SourceModel` (see :func:`~medbench.sources.checkpoint.save_source_weights`)
or from a timm model, rebuilt as the architecture it was saved from."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from medbench.sources.card import SourceCard
from medbench.sources.checkpoint import (
    META_ARCH,
    META_VARIANT,
    load_into,
    read_metadata,
    read_state_dict,
    strip_prefixes,
)
from medbench.sources.keras_resnet import is_keras_v1_state_dict, keras_v1_resnet50
from medbench.sources.radimagenet import build_backbone
from medbench.sources.registry import model_channels, register_source
from medbench.sources.timm_build import build_timm


def _first_conv_chans(sd: Mapping[str, torch.Tensor]) -> int | None:
    for v in sd.values():
        if v.ndim == 4:
            return int(v.shape[1])
    return None


def _checkpoint_loader(
    card: SourceCard,
    *,
    arch: str,
    num_classes: int | None,
    in_chans: int,
    weights: str | os.PathLike[str],
    drop_rate: float,
) -> nn.Module:
    meta = read_metadata(weights)
    if meta.get(META_ARCH) and arch == card.arch:  # the card's default arch yields to the file's own
        arch = meta[META_ARCH]
    sd = strip_prefixes(read_state_dict(weights))
    saved_chans = _first_conv_chans(sd) or 3
    chans = in_chans if saved_chans == in_chans else model_channels(card, in_chans)
    if num_classes is None:  # keep the saved head: its size comes from the classifier's weight
        from timm.models import get_pretrained_cfg_value

        head = get_pretrained_cfg_value(arch, "classifier") or "fc"
        head = head if isinstance(head, str) else head[0]
        n = int(sd[f"{head}.weight"].shape[0]) if f"{head}.weight" in sd else 0
    else:
        n = num_classes
    if arch == "resnet50" and is_keras_v1_state_dict(sd):  # e.g. a fine-tuned RadImageNet model
        model = keras_v1_resnet50(num_classes=n, in_chans=chans, drop_rate=drop_rate)
    elif meta.get(META_VARIANT) == "keras" and arch in ("densenet121", "inception_v3"):
        model = build_backbone(arch, "keras", num_classes=n, in_chans=chans, drop_rate=drop_rate)
    else:
        model = build_timm(arch, pretrained=False, num_classes=n, in_chans=chans, drop_rate=drop_rate)
    load_into(model, sd, source=str(weights), keep_head=True)
    return model


CHECKPOINT = register_source(
    SourceCard(
        name="checkpoint",
        arch="resnet50",
        loader=_checkpoint_loader,
        weights_in_chans=3,
        needs_weights=True,
        default_num_classes=None,
        licence="as the checkpoint's",
        citation="",
        description="Local .pth/.safetensors state dict (weights_only loading) of a timm arch",
    )
)


__all__ = ["CHECKPOINT"]
