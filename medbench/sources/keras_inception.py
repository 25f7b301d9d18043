"""Keras ``InceptionV3`` ``.h5`` weights -> timm ``inception_v3`` computing what Keras computes.

Differences handled:
- Keras ``conv2d_bn`` uses BatchNormalization(scale=False): gamma is 1 (eps 1e-3 as in timm);
- Keras' branch-pool AveragePooling2D(3, strides=1, padding="same") averages over the valid pixels
  only (TensorFlow excludes the padding), while timm's ``F.avg_pool2d(..., padding=1)`` counts the
  zero padding. A forward pre-hook on each ``branch_pool`` conv rescales its pooled input by
  ``9 / valid-count`` per pixel, which turns the one average into the other exactly;
- Keras names its layers ``conv2d_N``/``batch_normalization_N`` in creation order, which is the
  order of timm's module definitions; the file's order of ``layer_names`` is not (it is sorted by
  graph depth), so layers are paired by their numeric suffix and every pair's shape is checked.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.keras_h5 import KerasWeights, bn_params, conv_weight, dense_weight

_NUMBERED = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")


def _valid_count_scale(x: torch.Tensor) -> torch.Tensor:
    """``9 / (number of in-image pixels in each 3x3 window)`` for a stride-1, padding-1 pool."""
    h, w = x.shape[-2:]

    def counts(n: int) -> torch.Tensor:
        c = torch.full((n,), 3.0, dtype=x.dtype, device=x.device)
        c[0] -= 1
        c[-1] -= 1
        return c.clamp(min=1.0)

    return 9.0 / (counts(h)[:, None] * counts(w)[None, :])


def _exclude_pad_hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x = args[0]
    return (x * _valid_count_scale(x),) + tuple(args[1:])


def make_keras_pooling(model: nn.Module) -> nn.Module:
    """Make every Inception ``branch_pool`` see a padding-excluding 3x3 average (Keras/TF semantics)."""
    for name, module in model.named_modules():
        if name.endswith("branch_pool") and type(model.get_submodule(name.rsplit(".", 1)[0])).__name__ in (
            "InceptionA",
            "InceptionC",
            "InceptionE",
        ):
            module.register_forward_pre_hook(_exclude_pad_hook)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["variant"] = "keras"
    model.pretrained_cfg = cfg
    return model


def keras_inception_v3(**kwargs: Any) -> nn.Module:
    """timm ``inception_v3`` with Keras' average pooling (``kwargs`` go to timm)."""
    import timm

    return make_keras_pooling(timm.create_model("inception_v3", pretrained=False, **kwargs))


def _numbered(weights: KerasWeights, kind: str) -> list[str]:
    found = []
    for name in weights:
        m = _NUMBERED.match(name)
        if m and m[1] == kind:
            found.append((int(m[2] or 0), name))
    return [name for _, name in sorted(found)]


def inception_v3_state_dict(weights: KerasWeights, *, source: str = "") -> dict[str, torch.Tensor]:
    """Map Keras InceptionV3 weights to timm ``inception_v3`` names (plus ``fc`` from ``predictions``).

    Raises:
        InputError: Wrong number of conv/bn layers or a shape that does not line up.
    """
    import timm

    reference = timm.create_model("inception_v3", pretrained=False, num_classes=0)
    blocks = [n for n, m in reference.named_modules() if type(m).__name__ == "ConvNormAct"]
    convs, bns = _numbered(weights, "conv2d"), _numbered(weights, "batch_normalization")
    if not (len(convs) == len(bns) == len(blocks)):
        raise InputError(
            f"{source!r}: found {len(convs)} conv2d and {len(bns)} batch_normalization layers; "
            f"Keras InceptionV3 has {len(blocks)} of each"
        )
    target = reference.state_dict()
    out: dict[str, np.ndarray] = {}
    for prefix, conv, bn in zip(blocks, convs, bns):
        w = conv_weight(weights[conv]["kernel"])
        want = tuple(target[f"{prefix}.conv.weight"].shape)
        if w.shape != want:
            raise InputError(f"{source!r}: Keras layer {conv!r} {w.shape} does not line up with {prefix} {want}")
        out[f"{prefix}.conv.weight"] = w
        out.update(bn_params(weights[bn], f"{prefix}.bn"))
    if "predictions" in weights:
        out["fc.weight"] = dense_weight(weights["predictions"]["kernel"])
        out["fc.bias"] = weights["predictions"]["bias"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


_UP_CONV = {"repeat": "block35", "repeat_1": "block17", "repeat_2": "block8"}


def _keras_irv2_name(timm_name: str) -> str | None:
    """Keras name of an InceptionResNetV2 residual "up" conv (with bias), else ``None``."""
    if timm_name == "block8.conv2d":
        return "block8_10_conv"
    parts = timm_name.split(".")
    if len(parts) == 3 and parts[0] in _UP_CONV and parts[2] == "conv2d":
        return f"{_UP_CONV[parts[0]]}_{int(parts[1]) + 1}_conv"
    return None


def inception_resnet_v2_state_dict(weights: KerasWeights, *, source: str = "") -> dict[str, torch.Tensor]:
    """Map Keras InceptionResNetV2 weights to timm ``inception_resnet_v2`` names.

    timm's network is a port of the TensorFlow one (its stem average pool already excludes the
    padding), so only names differ: ``conv2d_bn`` units pair in creation order (numeric suffix),
    the residual up-convs are named ``block35_i_conv``/``block17_i_conv``/``block8_i_conv`` and the
    last unit ``conv_7b``. BatchNorm has no gamma (scale=False).
    """
    import timm

    reference = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=0)
    target = reference.state_dict()
    convs, bns = iter(_numbered(weights, "conv2d")), iter(_numbered(weights, "batch_normalization"))
    out: dict[str, np.ndarray] = {}
    try:
        for name, module in reference.named_modules():
            if type(module).__name__ == "ConvNormAct":
                conv, bn = ("conv_7b", "conv_7b_bn") if name == "conv2d_7b" else (next(convs), next(bns))
                w = conv_weight(weights[conv]["kernel"])
                if w.shape != tuple(target[f"{name}.conv.weight"].shape):
                    raise InputError(f"{source!r}: Keras layer {conv!r} {w.shape} does not line up with {name}")
                out[f"{name}.conv.weight"] = w
                out.update(bn_params(weights[bn], f"{name}.bn"))
            elif (keras_name := _keras_irv2_name(name)) is not None:
                out[f"{name}.weight"] = conv_weight(weights[keras_name]["kernel"])
                out[f"{name}.bias"] = weights[keras_name]["bias"]
    except (StopIteration, KeyError) as exc:
        raise InputError(f"{source!r}: not a complete Keras InceptionResNetV2 ({exc!r} missing)") from exc
    if next(convs, None) is not None:
        raise InputError(f"{source!r}: more conv2d layers than Keras InceptionResNetV2 has")
    if "predictions" in weights:
        out["classif.weight"] = dense_weight(weights["predictions"]["kernel"])
        out["classif.bias"] = weights["predictions"]["bias"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
