"""Frequency-domain confounders: low-pass filters and band-limited shortcut patterns.

Frequencies are measured as a radius ``r`` in the centred 2-D FFT, normalised per axis by the
Nyquist frequency: ``r = sqrt((fy / 0.5)^2 + (fx / 0.5)^2)`` with ``fy, fx`` in cycles/pixel. So a
cutoff is a fraction of Nyquist and scales with the image size: the paper's ideal disk of diameter
500 bins at 1024 px is ``cutoff = 250 / 512``.
"""

from __future__ import annotations

import functools

import torch

from confounders.base import Confounder, check_positive, register_confounder
from medbench.data.bands import BANDS
from medbench.errors import InputError
from medbench.utils.rng import torch_generator

# BANDS is medbench.data.bands.BANDS (cycles/pixel, shared with transferability.spectral); a named
# band enters this module's Nyquist-fraction unit through FrequencyBand.nyquist_fraction().


@functools.lru_cache(maxsize=64)
def _radius_rfft(h: int, w: int, device: str) -> torch.Tensor:
    """Normalised radius (h, w // 2 + 1) on the rfft2 grid."""
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64) / 0.5
    fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64) / 0.5
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def lowpass_mask(h: int, w: int, cutoff: float, kind: str = "ideal", order: int = 2,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """Transfer function on the rfft2 grid: ideal disk (r <= cutoff) or Butterworth
    ``1 / (1 + (r / cutoff)^(2 order))``."""
    r = _radius_rfft(h, w, str(device))
    if kind == "ideal":
        return (r <= cutoff).to(torch.float32)
    if kind == "butterworth":
        return (1.0 / (1.0 + (r / cutoff) ** (2 * order))).to(torch.float32)
    raise InputError(f"kind must be 'ideal' or 'butterworth'; got {kind!r}")


@functools.lru_cache(maxsize=64)
def _lowpass_plan(h: int, w: int, cutoff: float, kind: str, order: int, device: str) -> tuple[int, torch.Tensor]:
    """(kept rfft columns ``k``, transfer function on them as (h, k, 2) float32 for complex views).

    The ideal disk has no support beyond ``|fx| <= cutoff``: only those columns go through the
    FFT along H. Butterworth keeps every column.
    """
    mask = lowpass_mask(h, w, cutoff, kind, order, device)
    k = mask.shape[1]
    if kind == "ideal":
        cols = torch.nonzero(mask.amax(0)).flatten()
        k = int(cols.max()) + 1 if cols.numel() else 1
    return k, mask[:, :k, None].expand(h, k, 2).contiguous()


@register_confounder("lowpass")
class LowPass(Confounder):
    """Blur by low-pass filtering in the 2-D FFT (preset "paper-lowpass").

    Args:
        cutoff: Cut-off radius as a fraction of Nyquist, in (0, sqrt(2)].
        kind: "ideal" (disk) or "butterworth".
        order: Butterworth order.
    """

    miccat = ("environment", "imaging", "blur")

    def __init__(self, *, cutoff: float = 250.0 / 512.0, kind: str = "ideal", order: int = 2,
                 seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.cutoff = check_positive(cutoff, "cutoff")
        if kind not in ("ideal", "butterworth"):
            raise InputError(f"kind must be 'ideal' or 'butterworth'; got {kind!r}")
        self.kind = kind
        self.order = int(order)

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        h, w = src.shape[-2:]
        k, mask = _lowpass_plan(h, w, self.cutoff, self.kind, self.order, str(src.device))
        # separable 2-D rFFT, pruned to the columns the mask keeps: rfft along W, FFT along H on
        # k <= w // 2 + 1 columns, multiply, inverse FFT along H, irfft along W (zero-pads to w)
        spec = torch.fft.rfft(src.float(), dim=-1)
        if k < spec.shape[-1]:
            spec = spec[..., :k].contiguous()
        spec = torch.fft.fft(spec, dim=-2)
        torch.view_as_real(spec).mul_(mask)
        spec = torch.fft.ifft(spec, dim=-2)
        if dst.dtype == torch.float32 and dst.is_contiguous():
            torch.fft.irfft(spec, n=w, dim=-1, out=dst)
        else:
            dst.copy_(torch.fft.irfft(spec, n=w, dim=-1))
        return dst

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return self.apply_into(images, images, uids)


def band_pattern(h: int, w: int, band: tuple[float, float], generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """Zero-mean random-phase pattern (h, w) with all its power in ``band`` (fractions of Nyquist),
    scaled to max |value| = 1."""
    r = _radius_rfft(h, w, str(device))
    inband = ((r >= band[0]) & (r <= band[1])).to(torch.float32)
    if not bool(inband.any()):
        raise InputError(f"band {band} holds no frequency bin at {h}x{w}: widen it")
    phase = torch.rand(r.shape, generator=generator, device=generator.device).to(device) * (2 * torch.pi)
    spec = torch.polar(inband, phase)
    pat = torch.fft.irfft2(spec, s=(h, w))
    return pat / pat.abs().max().clamp_min(1e-12)


@register_confounder("freq-pattern")
class FrequencyPattern(Confounder):
    """Adds a band-limited pattern (the spectral study's frequency shortcut).

    Args:
        band: "low", "mid", "high" (:data:`medbench.data.bands.BANDS`, the spectral study's
            bands, converted to fractions of Nyquist) or (lo, hi) as fractions of Nyquist.
        amplitude: Peak amplitude of the added pattern in intensity units.
        per_sample: New random phases per uid; by default one fixed pattern (per seed and size).
    """

    miccat = ("environment", "imaging", "acquisition")

    def __init__(self, *, band: str | tuple[float, float] = "high", amplitude: float = 0.05,
                 per_sample: bool = False, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        if isinstance(band, str):
            if band not in BANDS:
                raise InputError(f"band must be one of {list(BANDS)} or (lo, hi); got {band!r}")
            self.band = BANDS[band].nyquist_fraction()
        else:
            lo, hi = (float(b) for b in band)
            if not 0 <= lo < hi:
                raise InputError(f"band (lo, hi) needs 0 <= lo < hi; got {band!r}")
            self.band = (lo, hi)
        self.amplitude = check_positive(amplitude, "amplitude")
        self.per_sample = bool(per_sample)
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        """True for the fixed pattern (no per-uid phases)."""
        return not self.per_sample

    def pattern(self, h: int, w: int, device: torch.device, uid: str | None = None) -> torch.Tensor:
        """The (h, w) pattern: the fixed one (cached per size and device) or ``uid``'s own."""
        if uid is not None:  # per-sample phases: drawn on each call, never cached
            g = torch_generator(self.seed, self.name, h, w, uid or "fixed")
            return band_pattern(h, w, self.band, g, device)
        key = (h, w, str(device))
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            g = torch_generator(self.seed, self.name, h, w, "fixed")
            self._cache[key] = band_pattern(h, w, self.band, g, device)
        return self._cache[key]

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        h, w = images.shape[-2:]
        if not self.per_sample:
            return images + self.amplitude * self.pattern(h, w, images.device).to(images.dtype)
        pats = torch.stack([self.pattern(h, w, images.device, u) for u in uids])[:, None]
        return images + self.amplitude * pats.to(images.dtype)
