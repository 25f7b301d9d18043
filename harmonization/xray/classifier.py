"""The frozen reference-vendor classifier GDCE is trained against.

GDCE needs a classifier that has actually learned the downstream task on the reference vendor:
its cross-entropy is the training signal. The default, ``"cnn"``, is a small convolutional net
(conv3x3-BatchNorm-ReLU blocks with max pooling, global *max* pooling, a linear head) trained
from scratch. On a few hundred small (64-128 px) radiographs it learns a local finding within a
few seconds per epoch on a CPU, where an ImageNet-style network started from random weights
(e.g. ``resnet10t``, stride 32: 2x2 features at 64 px) stays at chance. Any registered medbench
source can be chosen instead (``source="imagenet", arch="resnet18"``, a RadImageNet file, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medbench.errors import InputError

log = logging.getLogger(__name__)

SMALL_CNN = "cnn"


class SmallCnn(nn.Module):
    """conv3x3-BN-ReLU blocks (max pooling between them), global max pooling, a linear head.

    Args:
        widths: Channels of the conv blocks.
        num_classes: Outputs (logits).
        in_chans: Input channels (1 for grey X-rays).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 32), num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__()
        if not widths:
            raise InputError("SmallCnn needs at least one conv block")
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)  # a local finding anywhere in the image
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, C, H, W)`` in [0, 1]."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def resolve_source(source: str | None, arch: str | None) -> str:
    """The classifier source: ``source`` if given, else ``"random"`` (timm ``arch`` from random
    weights) when an ``arch`` is named, else ``"cnn"``."""
    if source is None:
        return "random" if arch else SMALL_CNN
    if source == SMALL_CNN and arch:
        raise InputError(f"arch {arch!r} applies to registry sources, not to the small CNN: "
                         "pass source='random' (CLI: --classifier-source random) to train a timm architecture")
    return source


def build_classifier(source: str | None = None, *, arch: str | None = None, seed: int = 0) -> nn.Module:
    """A 2-class grey-image classifier: :class:`SmallCnn` for ``"cnn"``, else a registered source.

    Args:
        source: ``"cnn"``, a medbench source name (``"random"``, ``"imagenet"``, ...) or None
            (see :func:`resolve_source`).
        arch: timm architecture of a registry source.
        seed: Seed of the initial weights (drawn in a forked RNG: global state untouched).
    """
    source = resolve_source(source, arch)
    if source == SMALL_CNN:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return SmallCnn()
    from medbench.sources import create_source

    return create_source(source, arch=arch, num_classes=2, in_chans=1, seed=seed)


def train_classifier(images: np.ndarray, labels: np.ndarray, out_dir: str | Path, *, source: str | None = None,
                     arch: str | None = None, epochs: int = 20, lr: float | None = None, batch_size: int = 32,
                     seed: int = 0, val_frac: float = 0.0, progress: bool = False) -> nn.Module:
    """Train a classifier on grey images with the medbench engine; returns the trained model.

    Args:
        images: ``(N, H, W)`` float32 in [0, 1].
        labels: ``N`` class ids.
        out_dir: Run folder of the engine (checkpoints, log; an existing run is resumed).
        source: ``"cnn"`` (:class:`SmallCnn` from scratch) or a registered source name; None:
            ``"cnn"``, or ``"random"`` when ``arch`` is given (see :func:`resolve_source`).
        arch: timm architecture of a registry source.
        epochs: Training epochs (cosine schedule to 0).
        lr: Peak Adam learning rate (default 3e-3 for the small CNN from scratch, 1e-3 for sources).
        batch_size: Batch size.
        seed: Seed of the split, the initial weights and the batch order.
        val_frac: Share of the images held out to keep the best validation-loss epoch; 0 (default)
            trains on all images and keeps the last epoch. A small net learning from scratch sits
            at validation loss ~ln 2 for some epochs, then overshoots before it learns the finding,
            so on a few hundred images the lowest validation loss is often the untrained epoch 0.
        progress: Show progress bars.
    """
    from medbench.data.dataset import ArrayDataset
    from medbench.train.engine import TrainConfig, fit

    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    n = len(images)
    if n < 10 or len(np.unique(labels)) < 2:
        raise InputError(f"the reference classifier needs >= 10 images of both classes (got {n}, "
                         f"classes {sorted(np.unique(labels).tolist())})")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(2, int(round(val_frac * n))) if val_frac > 0 else 0
    tr, va = order[n_val:], order[:n_val]
    source = resolve_source(source, arch)
    model = build_classifier(source, arch=arch, seed=seed)
    lr = lr if lr is not None else (3e-3 if source == SMALL_CNN else 1e-3)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device="cpu", patience=None,
                      progress=progress, optimizer="adam", schedule="cosine")
    val_ds = ArrayDataset(images[va], labels[va]) if n_val else None
    res = fit(model, ArrayDataset(images[tr], labels[tr]), val_ds, cfg, out_dir)
    return res.model.eval()
