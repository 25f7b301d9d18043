"""Tiny models and in-memory data shared by the engine tests (no tests here; loaded by path)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv + BatchNorm + dropout backbone and a ``classifier`` head."""

    def __init__(self, n_out: int = 2, in_chans: int = 1, width: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.backbone = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.3),
        )
        self.classifier = nn.Linear(width * 4, n_out)
        with torch.no_grad():
            for p in self.parameters():  # all from the generator: no global RNG in the init
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            self.backbone[1].weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def blob_data(n: int, *, size: int = 12, n_classes: int = 2, seed: int = 0,
              random_labels: bool = False) -> list[tuple[torch.Tensor, int, dict]]:
    """Items (image, label, meta): class k gets a bright square at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.5
    y = torch.randint(0, n_classes, (n,), generator=g)
    half = size // 2
    for k in range(1, n_classes):
        r, c = divmod(k - 1, 2)
        x[y == k, :, r * half : r * half + half, c * half : c * half + half] += 0.45
    if random_labels:
        y = torch.randint(0, n_classes, (n,), generator=g)
    return [(x[i], int(y[i]), {"uid": f"s{seed}-{i}", "group": "a" if i % 2 else "b"}) for i in range(n)]
