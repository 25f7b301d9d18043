"""The ``imagenet`` source: offline failure is fast and clear; ``weights=PATH`` loads timm layout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from medbench.errors import InputError, OfflineError
from medbench.sources import create_source
from medbench.sources import imagenet as imagenet_mod


def test_offline_hub_fails_fast_with_weights_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(OfflineError, match="weights="):
        create_source("imagenet", arch="resnet10t")
    assert time.monotonic() - start < 10


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, a short TCP probe decides (here: a closed local port)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert imagenet_mod.hub_reachable(timeout=1.0) is False
    start = time.monotonic()
    with pytest.raises(OfflineError, match="weights=PATH"):
        create_source("imagenet", arch="resnet10t")
    assert time.monotonic() - start < 10


def test_local_weights_load_exactly(tiny_imagenet_weights: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(tiny_imagenet_weights))
    model = create_source("imagenet", arch="resnet10t", num_classes=None, in_chans=3, weights=tiny_imagenet_weights)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    # a new 2-class head keeps the backbone weights
    m2 = create_source("imagenet", arch="resnet10t", num_classes=2, weights=tiny_imagenet_weights)
    torch.testing.assert_close(m2.backbone.conv1[0].weight, sd["conv1.0.weight"])
    assert m2.classifier.out_features == 2


def test_fold_policy_sums_rgb_filters(tiny_imagenet_weights: Path) -> None:
    """timm-style folding: a grey image through folded weights == the grey image repeated to RGB."""
    from safetensors.torch import load_file

    sd = load_file(str(tiny_imagenet_weights))
    fold = create_source("imagenet", arch="resnet10t", num_classes=None, weights=tiny_imagenet_weights, channel_policy="fold", preprocessing="tf")
    rep = create_source("imagenet", arch="resnet10t", num_classes=None, weights=tiny_imagenet_weights, channel_policy="repeat", preprocessing="tf")
    torch.testing.assert_close(fold.backbone.conv1[0].weight, sd["conv1.0.weight"].sum(1, keepdim=True))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fold(x), rep(x), atol=1e-4, rtol=1e-4)


def test_wrong_arch_for_weights_lists_keys(tiny_imagenet_weights: Path) -> None:
    with pytest.raises(InputError, match="missing keys") as err:
        create_source("imagenet", arch="resnet18", weights=tiny_imagenet_weights)
    assert "resnet18" in str(err.value)
