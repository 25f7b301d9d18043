"""Building timm architectures by name, with clear errors (shared by every source loader)."""

from __future__ import annotations

from typing import Any

from torch import nn

from medbench.errors import InputError
from medbench.registry import did_you_mean


def check_timm_arch(arch: str) -> None:
    """Raise :class:`InputError` (with close matches) when ``arch`` is not a timm architecture."""
    import timm

    if not timm.is_model(arch):
        raise InputError(f"unknown timm architecture {arch!r}: {did_you_mean(arch, timm.list_models())}")


#: timm families whose classifier is initialised as Google's TF code does (``_init_weight_goog``):
#: uniform +-1/sqrt(out_features), sized for 1000 classes.
FAN_OUT_HEAD_FAMILIES = ("timm.models.efficientnet", "timm.models.mobilenetv3", "timm.models.mobilenetv5",
                         "timm.models.rexnet")


def build_timm(arch: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with an :class:`InputError` (and close matches) for unknown names.

    The EfficientNet/MobileNet/ReXNet families get their ``Linear`` classifier re-initialised with
    PyTorch's default (uniform +-1/sqrt(in_features), as timm's ResNets, DenseNets and others
    have): timm gives them +-1/sqrt(out_features), which for a 2-class head is +-0.71 and makes
    the initial logits' SD about 6 (ImageNet EfficientNet-Lite0) to 30 (random init), a
    cross-entropy of 5-30 before the first step, which the first epochs then spend undoing.
    """
    import timm

    check_timm_arch(arch)
    model = timm.create_model(arch, **kwargs)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear) and type(model).__module__ in FAN_OUT_HEAD_FAMILIES \
            and not _head_is_pretrained(model, kwargs):
        head.reset_parameters()
    return model


def _head_is_pretrained(model: nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether timm loaded the classifier with the pretrained weights (same class count as theirs)."""
    if not kwargs.get("pretrained"):
        return False
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return int(getattr(model, "num_classes", -1)) == int(cfg.get("num_classes", 1000))
