"""The ``random`` (no weights) and ``imagenet`` (timm hub, a local file, or Keras ImageNet ``.h5``) sources.

A Keras ``.h5`` (e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``) goes through the
same Keras-v1 converter as RadImageNet's files, so ImageNet and RadImageNet arms are the same
network (Source Matters compares Keras ResNet50 v1 against Keras ResNet50 v1).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from typing import Any
from urllib.parse import urlparse

from torch import nn

from medbench.errors import InputError, OfflineError
from medbench.sources.card import PREPROCESSING, Preprocessing, SourceCard
from medbench.sources.registry import model_channels, register_source, resolve_num_classes
from medbench.sources.timm_build import build_timm, check_timm_arch

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the Hugging Face hub is switched off by ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Open one TCP connection to the hub endpoint with a short timeout (no retries)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(arch: str, why: str) -> str:
    return (
        f"cannot get ImageNet weights for {arch!r} from the Hugging Face hub ({why}). "
        f"Pass --weights PATH with a local .pth/.safetensors file in timm's key layout "
        f"(from Python: weights=PATH), or download the weights once while online so that "
        f"HF_HUB_OFFLINE=1 finds them in the cache"
    )


def _random_loader(
    card: SourceCard, *, arch: str, num_classes: int | None, in_chans: int, weights: Any, drop_rate: float
) -> nn.Module:
    if weights is not None:
        raise InputError("the 'random' source takes no weights: use the 'checkpoint' source for a file")
    n = resolve_num_classes(card, num_classes)
    if arch == KERAS_RESNET50:  # the Keras-v1 network of the ImageNet/RadImageNet .h5 arms
        from medbench.sources.keras_resnet import keras_v1_resnet50

        return keras_v1_resnet50(num_classes=n, in_chans=in_chans, drop_rate=drop_rate)
    return build_timm(arch, pretrained=False, num_classes=n, in_chans=in_chans, drop_rate=drop_rate)


def _imagenet_loader(
    card: SourceCard, *, arch: str, num_classes: int | None, in_chans: int, weights: Any, drop_rate: float
) -> nn.Module:
    from medbench.sources.checkpoint import load_into, read_state_dict

    n = resolve_num_classes(card, num_classes)
    chans = model_channels(card, in_chans)
    if weights is not None and str(weights).lower().endswith(KERAS_SUFFIXES):
        return _keras_imagenet(card, arch=arch, num_classes=n, in_chans=chans, weights=weights, drop_rate=drop_rate)
    if weights is not None:
        model = build_timm(arch, pretrained=False, num_classes=n, in_chans=chans, drop_rate=drop_rate)
        load_into(model, read_state_dict(weights), source=str(weights), keep_head=True)
        return model, _card_for(card, model)
    check_timm_arch(arch)  # before any download
    if not hub_offline() and not hub_reachable():
        raise OfflineError(_offline_message(arch, f"no connection within {HUB_PROBE_TIMEOUT_S:g} s"))
    try:
        model = build_timm(arch, pretrained=True, num_classes=n, in_chans=chans, drop_rate=drop_rate)
    except (OSError, RuntimeError, ValueError) as exc:
        why = "HF_HUB_OFFLINE is set and they are not cached" if hub_offline() else type(exc).__name__
        raise OfflineError(_offline_message(arch, why)) from exc
    return model, _card_for(card, model)


#: ``random``'s name for the Keras-v1 ResNet50 (random init, timm's initialiser): the network the
#: Keras ImageNet and RadImageNet files load into, so a random arm compares like with like.
KERAS_RESNET50 = "keras_resnet50"

#: Suffixes read as Keras weight files (the Keras-v1 path of :mod:`medbench.sources.radimagenet`).
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras_h5")


def _keras_imagenet(card: SourceCard, *, arch: str, num_classes: int, in_chans: int, weights: Any,
                    drop_rate: float) -> tuple[nn.Module, SourceCard]:
    """Keras ImageNet weights (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` and the
    other ``keras.applications`` files) through the Keras-v1 converter, so the network computes
    what Keras computes; the card records Keras' ImageNet preprocessing (``preprocess_input`` in
    "caffe" mode on 0-255 input: BGR minus the BGR mean, no rescale, as Source Matters feeds it)."""
    from medbench.sources.checkpoint import load_into
    from medbench.sources.radimagenet import build_backbone, read_radimagenet

    file_arch, variant, sd = read_radimagenet(weights)
    if file_arch != arch:
        raise InputError(f"{str(weights)!r} holds Keras {file_arch} weights but arch={arch!r} was asked: "
                         f"pass arch={file_arch!r}")
    model = build_backbone(arch, variant, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
    load_into(model, sd, source=str(weights), keep_head=True)
    keep = card.preprocessing is not PREPROCESSING["imagenet"]  # the caller chose one: keep it
    keras_card = dataclasses.replace(
        card, preprocessing=card.preprocessing if keep else PREPROCESSING["caffe"], resolution=224,
        preprocessing_options=("caffe", "caffe-rescaled", "imagenet"),
        licence="Keras applications weights (MIT/Apache-2.0 per keras-applications)",
        citation="He et al., Deep Residual Learning, CVPR 2016 (Keras applications weights); Deng et al., ImageNet, CVPR 2009",
        description=f"Keras ImageNet {arch} ({variant} variant) from {os.path.basename(str(weights))}",
    )
    return model, keras_card


def _card_for(card: SourceCard, model: nn.Module) -> SourceCard:
    """Use the timm model's own mean/std when they differ from the ImageNet default (e.g. 0.5 for ViTs)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if card.preprocessing is not PREPROCESSING["imagenet"] or not mean or not std:
        return card
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if mean == card.preprocessing.mean and std == card.preprocessing.std:
        return card
    pre = Preprocessing(
        name=f"timm:{cfg.get('architecture', card.arch)}", mean=mean, std=std, note="timm pretrained_cfg mean/std"
    )
    size = cfg.get("input_size")
    return dataclasses.replace(card, preprocessing=pre, resolution=int(size[-1]) if size else card.resolution)


RANDOM = register_source(
    SourceCard(
        name="random",
        arch="resnet50",
        loader=_random_loader,
        preprocessing=PREPROCESSING["imagenet"],
        weights_in_chans=None,
        default_num_classes=1000,
        licence="n/a (no weights)",
        citation="",
        description="timm architecture with random initialisation (built with the input's channels)",
    )
)

IMAGENET = register_source(
    SourceCard(
        name="imagenet",
        arch="resnet50",
        loader=_imagenet_loader,
        preprocessing=PREPROCESSING["imagenet"],
        weights_in_chans=3,
        channel_policy="repeat",
        preprocessing_options=("imagenet",),
        licence="per timm model card (most Apache-2.0)",
        citation="Wightman, PyTorch Image Models (timm), 2019; Deng et al., ImageNet, CVPR 2009",
        description="timm ImageNet weights from the hub (pretrained=True) or weights=PATH",
    )
)
