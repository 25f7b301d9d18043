"""Fixtures for the sources tests: tiny models and weights files written on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medbench.sources import create_source
from medbench.sources.checkpoint import save_source_weights

TINY_ARCH = "resnet10t"


@pytest.fixture(scope="session")
def tiny_imagenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel, 1000-class timm state dict (timm key layout) standing in for hub weights."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(TINY_ARCH, pretrained=False, num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / f"{TINY_ARCH}.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SourceModel state dict (``backbone.`` keys) of a grey 2-class random resnet10t."""
    torch.manual_seed(1)
    model = create_source("random", arch=TINY_ARCH, num_classes=2, in_chans=1)
    return save_source_weights(model, tmp_path_factory.mktemp("ckpt") / "tiny.pth")
