"""Keras ``DenseNet121`` ``.h5`` weights -> timm ``densenet121`` (BN eps 1.001e-5 as in Keras).

Keras' DenseNet121 and timm's (torchvision's) have the same structure: ZeroPadding2D(3) + 7x7/2 conv
without bias, BN, ReLU, ZeroPadding2D(1) + 3x3/2 max pool (equal to padding=1 after the ReLU),
dense layers BN-ReLU-1x1 conv-BN-ReLU-3x3 conv with the new features concatenated after the old,
transitions BN-ReLU-1x1 conv-2x2/2 average pool, and a final BN + ReLU before global pooling. Only
BatchNorm's eps differs (Keras 1.001e-5, PyTorch 1e-5), which :func:`keras_densenet121` sets.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.keras_h5 import KerasWeights, bn_params, conv_params, dense_weight
from medbench.sources.keras_resnet import KERAS_BN_EPS

BLOCKS = (6, 12, 24, 16)
_LAYER = re.compile(r"^conv([2-5])_block(\d+)_([0-2])_(conv|bn)$")
_TRANSITION = re.compile(r"^pool([2-4])_(conv|bn)$")


def keras_densenet121(**kwargs: Any) -> nn.Module:
    """timm ``densenet121`` with Keras' BatchNorm eps (``kwargs`` go to timm)."""
    import timm

    model = timm.create_model("densenet121", pretrained=False, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = KERAS_BN_EPS
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["variant"] = "keras"
    model.pretrained_cfg = cfg
    return model


def densenet121_state_dict(weights: KerasWeights, *, source: str = "") -> dict[str, torch.Tensor]:
    """Map Keras DenseNet121 layer weights to timm ``densenet121`` names.

    Raises:
        InputError: When the number of mapped conv/bn layers is not DenseNet121's.
    """
    out: dict[str, np.ndarray] = {}
    used = 0
    for name, layer in weights.items():
        if name == "conv1_conv":
            out.update(conv_params(layer, "features.conv0"))
        elif name == "conv1_bn":
            out.update(bn_params(layer, "features.norm0"))
        elif name == "bn":
            out.update(bn_params(layer, "features.norm5"))
        elif name in ("predictions", "fc1000"):
            out["classifier.weight"] = dense_weight(layer["kernel"])
            out["classifier.bias"] = layer["bias"]
            continue
        elif m := _LAYER.match(name):
            stage, block, idx, kind = int(m[1]), int(m[2]), int(m[3]), m[4]
            prefix = f"features.denseblock{stage - 1}.denselayer{block}."
            if kind == "bn":
                out.update(bn_params(layer, prefix + f"norm{idx + 1}"))
            else:
                out.update(conv_params(layer, prefix + f"conv{idx}"))
        elif m := _TRANSITION.match(name):
            prefix = f"features.transition{int(m[1]) - 1}." + ("conv" if m[2] == "conv" else "norm")
            out.update(conv_params(layer, prefix) if m[2] == "conv" else bn_params(layer, prefix))
        else:
            continue
        used += 1
    expected = 3 + 4 * sum(BLOCKS) + 2 * 3
    if used != expected:
        raise InputError(f"{source!r}: found {used} of the {expected} Keras DenseNet121 conv/bn layers")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
