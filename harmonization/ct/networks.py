"""Small CNNs for low-dose CT: RED-CNN, the projection-domain and the image-domain residual networks.

Widths and depths are arguments so that tests run tiny models on CPU. Weights are initialised
from a seeded generator (no global RNG).
"""

from __future__ import annotations

import torch
from torch import nn

from medbench.utils.rng import torch_generator


def init_weights(model: nn.Module, seed: int = 0, *, zero_last: bool = True) -> nn.Module:
    """Kaiming-uniform conv weights, zero biases, from ``(seed, "init", param name)``.

    With ``zero_last`` the final layer starts at zero, so a residual network starts as the identity.
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        for i, (name, m) in enumerate(convs):
            if zero_last and i == len(convs) - 1:
                nn.init.zeros_(m.weight)
            else:
                nn.init.kaiming_uniform_(m.weight, a=0.0, nonlinearity="relu",
                                         generator=torch_generator(seed, "init", name))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class ConvStack(nn.Module):
    """``depth`` 3x3 convs (ReLU between) from ``in_ch`` to ``out_ch`` via ``width`` channels.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        width: Hidden channels.
        depth: Number of conv layers (>= 2).
        dilations: Optional per-hidden-layer dilation (enlarges the receptive field cheaply).
    """

    def __init__(self, in_ch: int, out_ch: int, *, width: int = 32, depth: int = 6,
                 dilations: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2")
        dil = list(dilations or (1,) * (depth - 2))
        dil = (dil + [1] * (depth - 2))[: depth - 2]
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1, padding_mode="reflect"), nn.ReLU()]
        for d in dil:
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="reflect"), nn.ReLU()]
        layers.append(nn.Conv2d(width, out_ch, 3, padding=1, padding_mode="reflect"))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ProjectionNet(nn.Module):
    """Projection-domain residual network on a sinogram laid out ``(views, detectors)``.

    Input channels: the low-dose line integrals (scaled by ``1/p_scale``) and, with ``use_prior``,
    the noise-prior SD ``sigma`` (scaled by ``1/noise_scale``). Convolutions along the view axis
    mix consecutive views. Output: the predicted noise residual ``p_ld - p_fd`` in line-integral
    units (``noise_scale`` times the last conv).
    """

    def __init__(self, *, width: int = 16, depth: int = 5, use_prior: bool = True,
                 p_scale: float = 4.0, noise_scale: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        self.use_prior = use_prior
        self.p_scale = p_scale
        self.noise_scale = noise_scale
        self.net = ConvStack(2 if use_prior else 1, 1, width=width, depth=depth,
                             dilations=tuple(1 + (i % 2) for i in range(depth - 2)))
        init_weights(self, seed)

    def forward(self, p_ld: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """``p_ld``, ``sigma``: ``(B, 1, V, D)``; returns the residual ``(B, 1, V, D)``."""
        x = p_ld / self.p_scale
        if self.use_prior:
            if sigma is None:
                raise ValueError("this ProjectionNet was built with use_prior=True: pass sigma")
            x = torch.cat([x, sigma / self.noise_scale], dim=1)
        return self.net(x) * self.noise_scale


class ImageDomainNet(nn.Module):
    """Image-domain residual network on ``n_adjacent`` slices.

    Input: low-dose slices (and, with ``use_residual``, the reconstructed projection-stage residual
    of each slice) in HU; output: the HU residual of the centre slice (denoised = ld - output).
    """

    def __init__(self, *, n_adjacent: int = 3, use_residual: bool = True, width: int = 32,
                 depth: int = 6, hu_scale: float = 500.0, seed: int = 0) -> None:
        super().__init__()
        self.n_adjacent = n_adjacent
        self.use_residual = use_residual
        self.hu_scale = hu_scale
        in_ch = n_adjacent * (2 if use_residual else 1)
        self.net = ConvStack(in_ch, 1, width=width, depth=depth,
                             dilations=tuple(1 + (i % 2) for i in range(depth - 2)))
        init_weights(self, seed)

    def forward(self, ld_hu: torch.Tensor, res_hu: torch.Tensor | None = None) -> torch.Tensor:
        """``ld_hu``, ``res_hu``: ``(B, n_adjacent, H, W)``; returns ``(B, 1, H, W)`` HU residual."""
        x = ld_hu / self.hu_scale
        if self.use_residual:
            if res_hu is None:
                raise ValueError("this ImageDomainNet was built with use_residual=True: pass res_hu")
            x = torch.cat([x, res_hu / self.hu_scale * 10.0], dim=1)
        return self.net(x) * self.hu_scale * 0.1


class REDCNN(nn.Module):
    """RED-CNN (Chen et al. 2017): 5 conv (5x5, valid) + 5 deconv layers with residual shortcuts.

    Works on HU images; predicts the denoised image (shortcut from the input) in HU.
    """

    def __init__(self, *, width: int = 96, hu_scale: float = 500.0, seed: int = 0) -> None:
        super().__init__()
        self.hu_scale = hu_scale
        self.enc = nn.ModuleList([nn.Conv2d(1 if i == 0 else width, width, 5) for i in range(5)])
        self.dec = nn.ModuleList([nn.ConvTranspose2d(width, 1 if i == 4 else width, 5) for i in range(5)])
        self.relu = nn.ReLU()
        init_weights(self, seed)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        """``hu``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` HU (H, W >= 21)."""
        x = hu / self.hu_scale
        r1 = x
        o = self.relu(self.enc[0](x))
        o = self.relu(self.enc[1](o))
        r2 = o
        o = self.relu(self.enc[2](o))
        o = self.relu(self.enc[3](o))
        r3 = o
        o = self.relu(self.enc[4](o))
        o = self.dec[0](o) + r3
        o = self.dec[1](self.relu(o))
        o = self.dec[2](self.relu(o)) + r2
        o = self.dec[3](self.relu(o))
        o = self.dec[4](self.relu(o)) + r1
        return o * self.hu_scale


NETWORKS = {"projection": ProjectionNet, "image": ImageDomainNet, "redcnn": REDCNN}


def build_network(kind: str, **config: object) -> nn.Module:
    """Construct a network from a checkpoint's ``(kind, config)``."""
    if kind not in NETWORKS:
        from medbench.registry import did_you_mean

        raise ValueError(f"unknown network {kind!r}: {did_you_mean(kind, list(NETWORKS))}")
    return NETWORKS[kind](**config)  # type: ignore[arg-type]
