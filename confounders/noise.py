"""Noise confounders: photon-count (Poisson) noise and additive Gaussian noise.

Poisson mapping (documented, used in the tests): a radiograph is a projection image, so each pixel
intensity ``x`` in [0, 1] is read as a normalised line integral of attenuation ``p = mu_max * x``
(brighter = more attenuating). With ``N0`` photons per pixel in the unattenuated beam the detector
counts ``c ~ Poisson(N0 * exp(-p))``; the noisy line integral is ``p' = -ln(max(c, 1) / N0)`` and
the output intensity ``x' = p' / mu_max``. For large counts ``std(x') ~= sqrt(exp(p) / N0) / mu_max``:
lowering the photon count (the paper's N0 = 1.5e7 against 2e7) raises the noise by
``sqrt(2e7 / 1.5e7)``, most in bright (attenuating) regions. ``N0`` is per pixel of the image as
given (noise is applied at the image's own resolution).

Sampling (documented approximation, see :func:`poisson_counts`): counts with rate
``lambda >= NORMAL_MIN_RATE`` (100) are drawn as ``round(lambda + sqrt(lambda) z + (z^2 - 1) / 6)``,
``z ~ N(0, 1)``: the normal approximation with the first Cornish-Fisher (skewness) term, whose
CDF is within 1.2e-4 of the Poisson CDF at lambda = 100 and closer above (mean exact, variance
``lambda + 0.14``, third cumulant ``lambda``). Lower rates are drawn exactly. In the paper's setting
(N0 >= 1.5e7, mu_max = 12) every rate is >= 92, so nearly every pixel takes the fast path. All in
float32 (the output's relative precision, ~1e-7, is far below the noise).

The Source Matters presets ("paper-noise", "paper-noise-reference") use :class:`HUPoissonNoise`,
the authors' recipe (DovileDo/source-matters ``include_noise.py``), not this mapping.
"""

from __future__ import annotations

import math

import torch

from confounders.base import Confounder, check_positive, register_confounder

#: Rates at or above this are sampled with the skewness-corrected normal approximation.
NORMAL_MIN_RATE = 100.0


def poisson_counts(rate: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson counts for a float ``rate`` tensor from one generator (on the rate's device).

    ``rate >= NORMAL_MIN_RATE``: ``round(rate + sqrt(rate) z + (z^2 - 1) / 6)`` with one standard
    normal ``z`` per element (Cornish-Fisher); below it the exact ``torch.poisson``. The normal draw
    covers every element, so the stream depends only on the rate tensor's shape and values.
    """
    z = torch.randn(rate.shape, generator=generator, device=rate.device, dtype=rate.dtype)
    u = torch.sqrt(rate).add_(z, alpha=1 / 6)  # sqrt(rate) + z / 6
    c = torch.addcmul(rate, z, u).sub_(1 / 6).round_()
    if rate.numel() and float(rate.amin()) < NORMAL_MIN_RATE:  # one reduction, cheaper than a mask
        low = rate < NORMAL_MIN_RATE
        c[low] = torch.poisson(rate[low], generator=generator)
    return c


@register_confounder("poisson")
class PoissonNoise(Confounder):
    """CT/radiography-style quantum noise at photon count ``n0`` on medbench's ``mu_max`` mapping
    (not the paper's presets: those are :class:`HUPoissonNoise`).

    Args:
        n0: Unattenuated photons per pixel.
        mu_max: Line integral that intensity 1 stands for.
    """

    miccat = ("environment", "imaging", "noise")
    deterministic = False
    per_pixel = True

    def __init__(self, *, n0: float = 2.0e7, mu_max: float = 12.0, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.n0 = check_positive(n0, "n0")
        self.mu_max = check_positive(mu_max, "mu_max")

    def expected_std(self, x: float) -> float:
        """First-order std of the output at flat intensity ``x``."""
        return math.sqrt(math.exp(self.mu_max * x) / self.n0) / self.mu_max

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        for i, uid in enumerate(uids):
            x = src[i].float()
            rate = torch.exp(x * -self.mu_max).mul_(self.n0)
            c = poisson_counts(rate, self.generator(uid, src.device))
            # x' = -ln(max(c, 1) / n0) / mu = x - ln(max(c, 1) / rate) / mu  (ln rate = ln n0 - mu x),
            # the second form keeps float32 precise: c / rate is close to 1
            torch.add(x, c.clamp_min_(1.0).div_(rate).log_(), alpha=-1.0 / self.mu_max, out=dst[i])
        return dst

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return self.apply_into(images, images, uids)


@register_confounder("gaussian")
class GaussianNoise(Confounder):
    """Additive white Gaussian noise of standard deviation ``sigma`` (intensity units), drawn in
    float32 from the sample's generator."""

    miccat = ("environment", "imaging", "noise")
    deterministic = False
    per_pixel = True

    def __init__(self, *, sigma: float = 0.03, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.sigma = check_positive(sigma, "sigma")

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        for i, uid in enumerate(uids):
            g = self.generator(uid, src.device)
            # float32 draws whatever the input dtype: the same noise for float16/32/64 inputs
            noise = torch.randn(src.shape[1:], generator=g, device=src.device, dtype=torch.float32)
            torch.add(src[i], noise, alpha=self.sigma, out=dst[i])
        return dst

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return self.apply_into(images, images, uids)


#: The authors' CT-style constants (``include_noise.py``, chest14): attenuation of water and air
#: (1/mm) and the display window in HU that grey levels 0..255 span.
MU_WATER = 0.1837
MU_AIR = 0.1662
HU_WINDOW = (-1200.0, 800.0)


@register_confounder("hu-poisson")
class HUPoissonNoise(Confounder):
    """Source Matters' noise: grey levels read as HU, Poisson noise on ``exp(-mu)``, back to uint8.

    The recipe of the authors (``include_noise.py``), per pixel of the 8-bit image ``g``:
    ``g + U(0, 1)`` (dequantisation) is mapped linearly to HU over :data:`HU_WINDOW`, HU to
    attenuation ``mu = HU (MU_WATER - MU_AIR) / 1000 + MU_WATER``; counts
    ``c ~ Poisson(n0 exp(-mu))``; ``mu' = -ln(max(c / n0, 1e-8))`` goes back to HU, is clipped to
    the window, mapped to grey levels and truncated to uint8. Because ``mu`` spans only
    0.163-0.198 over the window, the noise is almost even across intensities: about 2.1 grey
    levels (0.0082 in [0, 1]) at ``n0 = 1.5e7`` and 1.8 (0.0072) at 2e7, quantisation included.

    The authors apply it at 512 px and Keras resizes to the training size by nearest neighbour,
    which keeps the per-pixel SD; so medbench applies it per pixel at the working size (no
    rescaling; :attr:`per_pixel`). Input ``x`` in [0, 1] is first quantised to
    ``round(255 x)``; the output lies on the 1/255 grid.

    Args:
        n0: Photons per pixel (paper: 1.5e7 for the confounded images, 2e7 for the rest).
    """

    miccat = ("environment", "imaging", "noise")
    deterministic = False
    keeps_range = True
    per_pixel = True

    def __init__(self, *, n0: float = 2.0e7, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.n0 = check_positive(n0, "n0")

    def expected_std(self) -> float:
        """First-order SD of the output in [0, 1] units at mid-window (Poisson term only)."""
        mu = MU_WATER + (sum(HU_WINDOW) / 2) * (MU_WATER - MU_AIR) / 1000
        grey_per_mu = 1000 / (MU_WATER - MU_AIR) * 255 / (HU_WINDOW[1] - HU_WINDOW[0])
        return grey_per_mu / math.sqrt(self.n0 * math.exp(-mu)) / 255

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        lo, hi = HU_WINDOW
        slope = (MU_WATER - MU_AIR) / 1000
        for i, uid in enumerate(uids):
            gen = self.generator(uid, src.device)
            g = torch.round(src[i].float() * 255)
            g += torch.rand(g.shape, generator=gen, device=src.device, dtype=torch.float32)
            mu = (g / 255 * (hi - lo) + lo) * slope + MU_WATER
            rate = torch.exp(-mu).mul_(self.n0)
            c = poisson_counts(rate, gen)
            # mu' = -ln(max(c / n0, 1e-8)) = mu - ln(c / rate) (ln rate = ln n0 - mu): precise in float32
            mu_n = mu - torch.log(torch.clamp_min(c, 1e-8 * self.n0) / rate)
            hu = ((mu_n - MU_WATER) / slope).clamp_(lo, hi)
            grey = torch.floor((hu - lo) / (hi - lo) * 255).clamp_(0, 255)
            dst[i].copy_(grey / 255)
        return dst

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return self.apply_into(images, images, uids)
