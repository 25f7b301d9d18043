"""Noise confounders: photon-count (Poisson) noise and additive Gaussian noise.

Poisson mapping (documented, used in the tests): a radiograph is a projection image, so each pixel
intensity ``x`` in [0, 1] is read as a normalised line integral of attenuation ``p = mu_max * x``
(brighter = more attenuating). With ``N0`` photons per pixel in the unattenuated beam the detector
counts ``c ~ Poisson(N0 * exp(-p))``; the noisy line integral is ``p' = -ln(max(c, 1) / N0)`` and
the output intensity ``x' = p' / mu_max``. For large counts ``std(x') ~= sqrt(exp(p) / N0) / mu_max``:
lowering the photon count (the paper's N0 = 1.5e7 against 2e7) raises the noise by
``sqrt(2e7 / 1.5e7)``, most in bright (attenuating) regions. ``N0`` is per pixel of the image as
given (noise is applied at the image's own resolution).
"""

from __future__ import annotations

import math

import torch

from confounders.base import Confounder, check_positive, register_confounder


@register_confounder("poisson")
class PoissonNoise(Confounder):
    """CT/radiography-style quantum noise at photon count ``n0`` (presets "paper-noise" 1.5e7 and
    "paper-noise-reference" 2e7).

    Args:
        n0: Unattenuated photons per pixel.
        mu_max: Line integral that intensity 1 stands for.
    """

    miccat = ("environment", "imaging", "noise")
    deterministic = False

    def __init__(self, *, n0: float = 2.0e7, mu_max: float = 12.0, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.n0 = check_positive(n0, "n0")
        self.mu_max = check_positive(mu_max, "mu_max")

    def expected_std(self, x: float) -> float:
        """First-order std of the output at flat intensity ``x``."""
        return math.sqrt(math.exp(self.mu_max * x) / self.n0) / self.mu_max

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        rate = self.n0 * torch.exp(-self.mu_max * images.double())
        counts = torch.empty_like(rate)
        for i, uid in enumerate(uids):
            counts[i] = torch.poisson(rate[i], generator=self.generator(uid, images.device))
        p = -torch.log(counts.clamp_min(1.0) / self.n0)
        return (p / self.mu_max).to(images.dtype)


@register_confounder("gaussian")
class GaussianNoise(Confounder):
    """Additive white Gaussian noise of standard deviation ``sigma`` (intensity units)."""

    miccat = ("environment", "imaging", "noise")
    deterministic = False

    def __init__(self, *, sigma: float = 0.03, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.sigma = check_positive(sigma, "sigma")

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        noise = torch.empty_like(images)
        for i, uid in enumerate(uids):
            g = self.generator(uid, images.device)
            noise[i] = torch.randn(images.shape[1:], generator=g, device=images.device, dtype=images.dtype)
        return images + self.sigma * noise
