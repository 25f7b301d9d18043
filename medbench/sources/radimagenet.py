"""``radimagenet``: RadImageNet weights from the official Keras ``.h5`` files or a PyTorch port.

Accepted ``weights=`` files:
- the official Keras files (``RadImageNet-ResNet50_notop.h5``, ``RadImageNet-DenseNet121_notop.h5``,
  ``RadImageNet-InceptionV3_notop.h5``, ``RadImageNet-IRV2_notop.h5``), converted on load (see :mod:`keras_resnet`,
  :mod:`keras_densenet`, :mod:`keras_inception`): each becomes a timm network changed where Keras
  differs (ResNet50: the Keras-v1 variant) so it computes what Keras computes;
- a converted file written by :func:`convert_radimagenet` (``.pt``/``.safetensors``, timm names);
- community PyTorch ports as plain state dicts read with ``weights_only=True``: the RadImageNet
  ``RadImageNet_pytorch/ResNet50.pt``/``DenseNet121.pt`` layout (a torchvision backbone wrapped
  as ``backbone = nn.Sequential(*children)``: keys ``backbone.0.weight``, ``backbone.4.0.conv1.weight``
  for ResNet50, ``backbone.0.denseblock1...`` for DenseNet121) and torchvision/timm key names.
  Bias-free ResNet50 ports load into timm's (torchvision-style v1.5) ``resnet50``, the layout the
  port was made for; ports with conv biases load into the Keras-v1 variant.

Preprocessing is not agreed upstream. The default, ``caffe-rescaled``, is what RadImageNet's own
training scripts and the Source-Matters paper's code do (Keras ``preprocess_input`` in "caffe" mode,
BGR minus the ImageNet BGR mean, then ``rescale=1/255``); ``preprocessing="caffe"`` (no rescale) and
``"tf"`` ([-1, 1]) are the alternatives seen in ports.
InceptionResNetV2 maps onto timm's ``inception_resnet_v2`` unchanged (timm's is a TensorFlow port).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench.errors import InputError
from medbench.sources.card import PREPROCESSING, SourceCard
from medbench.sources.registry import model_channels, register_source

logger = logging.getLogger(__name__)

SUPPORTED = ("resnet50", "densenet121", "inception_v3", "inception_resnet_v2")
_KERAS_SUFFIXES = (".h5", ".hdf5", ".keras_h5")
_HEADS = ("fc.", "classifier.", "classif.")  # classifier prefixes of the SUPPORTED timm networks
_RESNET_SEQ = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_TV_DENSE_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _sequential_resnet_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``nn.Sequential(*resnet.children())`` keys (``0.weight``, ``4.0.conv1.weight``) -> timm names."""
    out = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".")
        if head not in _RESNET_SEQ:
            raise InputError(f"unexpected key {k!r} in a Sequential ResNet50 state dict")
        out[f"{_RESNET_SEQ[head]}.{rest}"] = v
    return out


def _torch_layout_to_timm(sd: dict[str, torch.Tensor], *, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """Recognise a PyTorch RadImageNet port and return ``(arch, state dict in timm names)``."""
    from medbench.sources.checkpoint import strip_prefixes

    sd = strip_prefixes(sd)
    if "0.weight" in sd and "4.0.conv1.weight" in sd:
        return "resnet50", _sequential_resnet_to_timm(sd)
    if "layer1.0.conv1.weight" in sd and "conv1.weight" in sd:
        return "resnet50", sd
    if "conv2d_1a.conv.weight" in sd and "conv2d_7b.conv.weight" in sd:  # timm inception_resnet_v2
        return "inception_resnet_v2", sd
    if "Conv2d_1a_3x3.conv.weight" in sd:  # torchvision/timm inception_v3 names
        return "inception_v3", {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    if any(k.startswith("0.denseblock1.") for k in sd):
        sd = {"features." + k[2:]: v for k, v in sd.items() if k.startswith("0.")}
    elif any(k.startswith("denseblock1.") for k in sd):
        sd = {"features." + k: v for k, v in sd.items()}
    if any(k.startswith("features.denseblock1.") for k in sd):
        fixed = {}
        for k, v in sd.items():
            m = _TV_DENSE_OLD.match(k)
            fixed[m[1] + m[2] if m else k] = v
        return "densenet121", fixed
    raise InputError(
        f"{source!r} is not a RadImageNet ResNet50/DenseNet121 state dict (first keys: "
        f"{list(sd)[:4]}); expected the official Keras .h5 or a torchvision-style PyTorch port"
    )


def read_radimagenet(path: str | os.PathLike[str]) -> tuple[str, str, dict[str, torch.Tensor]]:
    """Read RadImageNet weights of any accepted layout.

    Returns:
        ``(arch, variant, state_dict)`` with ``arch`` in :data:`SUPPORTED`, ``variant`` "keras" (the
        network Keras computes) or "torchvision" (timm's own resnet50/densenet121), and timm key names.
    """
    from medbench.sources.checkpoint import META_VARIANT, read_metadata, read_state_dict
    from medbench.sources.keras_resnet import is_keras_v1_state_dict

    p = Path(path)
    if p.suffix.lower() in _KERAS_SUFFIXES:
        from medbench.sources.keras_densenet import densenet121_state_dict
        from medbench.sources.keras_h5 import detect_keras_arch, read_keras_h5
        from medbench.sources.keras_resnet import resnet50_state_dict

        weights = read_keras_h5(p)
        arch = detect_keras_arch(weights)
        if arch == "resnet50":
            return arch, "keras", resnet50_state_dict(weights, source=str(p))
        if arch == "densenet121":
            return arch, "keras", densenet121_state_dict(weights, source=str(p))
        if arch == "inception_v3":
            from medbench.sources.keras_inception import inception_v3_state_dict

            return arch, "keras", inception_v3_state_dict(weights, source=str(p))
        if arch == "inception_resnet_v2":
            from medbench.sources.keras_inception import inception_resnet_v2_state_dict

            # timm's network is already TF-faithful: the "torchvision" variant is the plain timm model
            return arch, "torchvision", inception_resnet_v2_state_dict(weights, source=str(p))
        raise InputError(f"{str(p)!r}: no Keras ResNet50/DenseNet121 layers found (first: {list(weights)[:4]})")
    arch, sd = _torch_layout_to_timm(read_state_dict(p), source=str(p))
    if arch == "resnet50":
        variant = "keras" if is_keras_v1_state_dict(sd) else "torchvision"
    else:
        variant = read_metadata(p).get(META_VARIANT, "torchvision")
    return arch, variant, sd


def build_backbone(arch: str, variant: str, **kwargs: Any) -> nn.Module:
    """The timm network for ``(arch, variant)``: Keras-v1 ResNet50, Keras-eps DenseNet121, or timm's own."""
    from medbench.sources.keras_densenet import keras_densenet121
    from medbench.sources.keras_resnet import keras_v1_resnet50
    from medbench.sources.timm_build import build_timm

    if variant == "keras":
        if arch == "inception_v3":
            from medbench.sources.keras_inception import keras_inception_v3

            return keras_inception_v3(**kwargs)
        return keras_v1_resnet50(**kwargs) if arch == "resnet50" else keras_densenet121(**kwargs)
    return build_timm(arch, pretrained=False, **kwargs)


def convert_radimagenet(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert RadImageNet weights (``.h5`` or a port) to a timm-named ``.safetensors``/``.pt`` file."""
    return write_radimagenet(*read_radimagenet(src), dst, source=src)


def write_radimagenet(
    arch: str,
    variant: str,
    sd: dict[str, torch.Tensor],
    dst: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] = "",
) -> Path:
    """Write what :func:`read_radimagenet` returned as a ``.safetensors`` (arch/variant recorded) or ``.pt``."""
    from medbench.sources.checkpoint import META_ARCH, META_VARIANT, write_state_dict

    out = write_state_dict(
        {k: v.contiguous() for k, v in sd.items()}, dst, metadata={META_ARCH: arch, META_VARIANT: variant}
    )
    logger.info("converted %s (%s, %s variant) to %s", source, arch, variant, out)
    return out


def _loader(
    card: SourceCard,
    *,
    arch: str,
    num_classes: int | None,
    in_chans: int,
    weights: str | os.PathLike[str],
    drop_rate: float,
) -> nn.Module:
    from medbench.sources.checkpoint import load_into

    if arch not in SUPPORTED:
        raise InputError(f"radimagenet supports arch in {SUPPORTED}, got {arch!r}")
    file_arch, variant, sd = read_radimagenet(weights)
    if file_arch != arch:
        raise InputError(
            f"{str(weights)!r} holds RadImageNet {file_arch} weights but arch={arch!r} was asked: "
            f"pass arch={file_arch!r}"
        )
    n = num_classes
    if n is None:
        head = next((k for k in sd if k.startswith(_HEADS) and k.endswith(".weight")), None)
        if head is None:
            raise InputError(
                f"{str(weights)!r} has no classification head (a 'notop' file): there are no source "
                f"logits to keep; pass num_classes=0 for features or num_classes=K for a new head"
            )
        n = int(sd[head].shape[0])
    model = build_backbone(arch, variant, num_classes=n, in_chans=model_channels(card, in_chans), drop_rate=drop_rate)
    load_into(model, sd, source=str(weights), keep_head=True)
    return model


RADIMAGENET = register_source(
    SourceCard(
        name="radimagenet",
        arch="resnet50",
        loader=_loader,
        preprocessing=PREPROCESSING["caffe-rescaled"],
        weights_in_chans=3,
        channel_policy="repeat",
        needs_weights=True,
        arch_choices=SUPPORTED,
        resolution=224,
        preprocessing_options=("caffe-rescaled", "caffe", "tf"),
        default_num_classes=None,
        licence="repo MIT; weights shared by the RadImageNet authors on request (check their terms)",
        citation="Mei et al., RadImageNet, Radiology: Artificial Intelligence 2022",
        description="RadImageNet ResNet50/DenseNet121/InceptionV3/InceptionResNetV2 (Keras .h5) or a PyTorch port",
    )
)
