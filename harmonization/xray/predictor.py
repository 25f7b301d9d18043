"""The GDCE curve-parameter predictor network.

Input ``[x, 1 - x]`` resized to ``input_size`` (256 in the paper); five conv3x3+ReLU blocks with
widths 16, 32, 64, 128, 256 and 2x2 average pooling between them; global average pooling; an MLP
256-64-32-n; ``tanh`` so that every parameter lies in [-1, 1]. The predicted curve is then applied
to the full-resolution image, so the network's cost does not grow with the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harmonization.xray.curves import N_ITERATIONS, apply_curve


class CurvePredictor(nn.Module):
    """Predicts ``n`` curve parameters per image.

    Args:
        n_iterations: Curve iterations (parameters per image).
        input_size: Side of the resized network input.
        widths: Channels of the five conv blocks.
    """

    def __init__(self, n_iterations: int = N_ITERATIONS, input_size: int = 256,
                 widths: tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        self.n_iterations = n_iterations
        self.input_size = input_size
        layers: list[nn.Module] = []
        c_in = 2
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.AvgPool2d(2))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(c_in, 64), nn.ReLU(inplace=True), nn.Linear(64, 32), nn.ReLU(inplace=True),
            nn.Linear(32, n_iterations),
        )
        for m in self.modules():  # keep activations O(1) through the stack so gradients reach a
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head[-1].weight)  # start at the identity curve (a = 0)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Curve parameters ``(B, n)`` in [-1, 1] for grey images ``x`` in [0, 1], ``(B, 1, H, W)``."""
        g = x.mean(dim=1, keepdim=True) if x.shape[1] != 1 else x
        g = F.interpolate(g, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                          antialias=True)
        z = self.features(torch.cat([g, 1.0 - g], dim=1)).mean(dim=(2, 3))
        return torch.tanh(self.head(z))

    def harmonize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each image's predicted curve at full resolution."""
        return apply_curve(x, self(x)).clamp(0.0, 1.0)
