"""Keras-v1 ResNet50 as a timm model, and the Keras ``.h5`` -> PyTorch weight mapping.

Keras' ``applications.ResNet50`` is the original (v1) ResNet: the stride-2 of the first block of
stages 3-5 sits on the first 1x1 conv (timm/torchvision's v1.5 put it on the 3x3 conv), every conv
has a bias, and BatchNorm uses eps = 1.001e-5. The stem (ZeroPadding2D(3) + 7x7/2 valid conv,
ZeroPadding2D(1) + 3x3/2 max pool after a ReLU) equals PyTorch's padding=3 conv and padding=1
max pool exactly. :func:`keras_v1_resnet50` builds timm's ``resnet50`` and changes those three
things, so the converted network computes what Keras computes while keeping timm's interface.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.keras_h5 import KerasWeights, bn_params, conv_params, dense_weight

KERAS_BN_EPS = 1.001e-5
STAGE_BLOCKS = (3, 4, 6, 3)

_BLOCK = re.compile(r"^conv([2-5])_block(\d+)_([0-3])_(conv|bn)$")


def _add_bias(conv: nn.Conv2d) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))


def make_keras_v1(model: nn.Module) -> nn.Module:
    """Turn a timm (v1.5) bottleneck ResNet into the Keras v1 variant in place and return it."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            _add_bias(module)
        elif isinstance(module, nn.BatchNorm2d):
            module.eps = KERAS_BN_EPS
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        stride = first.conv2.stride
        first.conv1.stride, first.conv2.stride = stride, (1, 1)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["variant"] = "keras_v1"
    model.pretrained_cfg = cfg
    return model


def keras_v1_resnet50(**kwargs: Any) -> nn.Module:
    """timm ``resnet50`` with Keras-v1 strides, conv biases and BN eps (``kwargs`` go to timm)."""
    import timm

    return make_keras_v1(timm.create_model("resnet50", pretrained=False, **kwargs))


def is_keras_v1_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """A ResNet state dict with conv biases (``conv1.bias``) comes from the Keras-v1 variant."""
    return "conv1.bias" in sd and "layer1.0.conv1.weight" in sd and "layer1.0.conv1.bias" in sd


def resnet50_state_dict(weights: KerasWeights, *, source: str = "") -> dict[str, torch.Tensor]:
    """Map Keras ResNet50 layer weights to timm ``resnet50`` names (plus ``fc`` if ``predictions`` exists).

    Raises:
        InputError: Missing or unknown layers (a few are listed).
    """
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for name, layer in weights.items():
        if name == "conv1_conv":
            out.update(conv_params(layer, "conv1"))
        elif name == "conv1_bn":
            out.update(bn_params(layer, "bn1"))
        elif name in ("predictions", "probs", "fc1000"):
            out["fc.weight"] = dense_weight(layer["kernel"])
            out["fc.bias"] = layer["bias"]
        else:
            m = _BLOCK.match(name)
            if m is None:
                continue
            stage, block, idx, kind = int(m[1]), int(m[2]), int(m[3]), m[4]
            prefix = f"layer{stage - 1}.{block - 1}."
            if idx == 0:
                prefix += "downsample." + ("0" if kind == "conv" else "1")
            else:
                prefix += ("conv" if kind == "conv" else "bn") + str(idx)
            out.update(conv_params(layer, prefix) if kind == "conv" else bn_params(layer, prefix))
        used.add(name)
    expected = 2 + sum(2 * (3 * n + 1) for n in STAGE_BLOCKS)  # stem conv+bn, 3 conv+bn per block, shortcut
    found = len([n for n in used if n not in ("predictions", "probs", "fc1000")])
    if found != expected:
        raise InputError(
            f"{source!r}: found {found} of the {expected} Keras ResNet50 conv/bn layers; "
            f"unused layers: {sorted(set(weights) - used)[:5]}"
        )
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
