"""Frequency view of what a source learns (Lu et al. 2024): radially averaged power spectra.

- :func:`radial_psd`: radially averaged power spectral density of images (or any (..., H, W)
  maps): mean |FFT|^2 over the maps, averaged over rings of integer radius k; frequency k / S
  in cycles per pixel (S = min(H, W)), from 0 to 1/2 (rings beyond Nyquist are dropped).
- :func:`input_gradient_spectrum`: PSD of the gradients of the loss with respect to the input
  images; :func:`weight_gradient_spectrum`: PSD of the first layer's weight gradients (kernels
  zero-padded to ``pad`` x ``pad`` so the spectrum has more than k/2 bins). Run them on the
  pre-trained and the fine-tuned model to see the frequency priority change.
- :func:`artifact_spectrum`: PSD of an artifact (the confounded image minus the clean one).
- :func:`spectral_alignment`: cosine similarity of two radial spectra after normalising each
  to unit sum, DC excluded, on a common frequency grid; in [0, 1], 1 = same shape. An artifact
  aligned with a model's gradient spectrum sits where the model is most sensitive.
- :func:`band_limited_pattern` (the frequency-shortcut experiment that uses it is
  :func:`transferability.shortcut.frequency_shortcut_experiment`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.data.bands import BANDS
from medbench.errors import InputError
from medbench.utils.rng import numpy_rng

log = logging.getLogger(__name__)

# BANDS (low/mid/high, cycles/pixel) is medbench.data.bands.BANDS, shared with confounders.frequency.


@dataclass(frozen=True)
class Spectrum:
    """A radial power spectrum: ``freqs`` in cycles/pixel and mean ``power`` per ring."""

    freqs: np.ndarray
    power: np.ndarray

    def normalised(self, *, exclude_dc: bool = True) -> np.ndarray:
        """Power divided by its total (DC ring set to 0 when ``exclude_dc``)."""
        p = self.power.astype(np.float64).copy()
        if exclude_dc:
            p[self.freqs == 0] = 0.0
        s = p.sum()
        return p / s if s > 0 else p

    def centroid(self) -> float:
        """Power-weighted mean frequency (DC excluded)."""
        return float(np.sum(self.freqs * self.normalised()))


def _maps(x: Any) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim < 2:
        raise InputError(f"expected (..., H, W) maps, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("maps contain NaN or inf")
    return a.reshape(-1, a.shape[-2], a.shape[-1])


def power_spectrum_2d(x: Any) -> np.ndarray:
    """Mean centred power spectrum |FFT|^2 / (H W) of (..., H, W) maps, shape (H, W)."""
    a = _maps(x)
    f = np.fft.fftshift(np.fft.fft2(a), axes=(-2, -1))
    return np.mean(np.abs(f) ** 2, axis=0) / (a.shape[-1] * a.shape[-2])


def radial_average(p2d: np.ndarray) -> Spectrum:
    """Average a centred (H, W) spectrum over rings of integer radius (in frequency bins)."""
    h, w = p2d.shape
    s = min(h, w)
    fy = np.fft.fftshift(np.fft.fftfreq(h))
    fx = np.fft.fftshift(np.fft.fftfreq(w))
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    k = np.rint(r * s).astype(np.int64)
    keep = k <= s // 2
    sums = np.bincount(k[keep], weights=p2d[keep], minlength=s // 2 + 1)
    counts = np.bincount(k[keep], minlength=s // 2 + 1)
    return Spectrum(np.arange(s // 2 + 1) / s, sums / np.maximum(counts, 1))


def radial_psd(x: Any) -> Spectrum:
    """Radially averaged PSD of (..., H, W) maps."""
    return radial_average(power_spectrum_2d(x))


def artifact_spectrum(confounded: Any, clean: Any | None = None) -> Spectrum:
    """PSD of an artifact: ``confounded - clean`` when both are given, else ``confounded`` itself."""
    a = _maps(confounded)
    if clean is not None:
        b = _maps(clean)
        if a.shape != b.shape:
            raise InputError(f"confounded {a.shape} and clean {b.shape} images must have the same shape")
        a = a - b
    return radial_psd(a)


def spectral_alignment(a: Spectrum, b: Spectrum, *, exclude_dc: bool = True) -> float:
    """Cosine similarity of two unit-sum radial spectra (``b`` interpolated onto ``a``'s grid)."""
    pa = a.normalised(exclude_dc=exclude_dc)
    pb = b.normalised(exclude_dc=exclude_dc)
    if not np.array_equal(a.freqs, b.freqs):
        pb = np.interp(a.freqs, b.freqs, pb)
    na, nb = np.linalg.norm(pa), np.linalg.norm(pb)
    if na == 0 or nb == 0:
        raise InputError("a spectrum is all zero (besides DC); nothing to align")
    return float(pa @ pb / (na * nb))


def band_limited_pattern(size: int, band: str | tuple[float, float], *, seed: int = 0) -> np.ndarray:
    """A random-phase pattern whose spectrum fills one ring band (cycles/pixel), max |value| 1."""
    if isinstance(band, str) and band not in BANDS:
        raise InputError(f"band must be one of {list(BANDS)} or (low, high) in cycles/pixel, got {band!r}")
    lo, hi = BANDS[band] if isinstance(band, str) else band
    rng = numpy_rng(seed, "band", lo, hi, size)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    mask = (f >= lo) & (f <= hi)
    if not mask.any():
        raise InputError(f"band ({lo}, {hi}) holds no frequency at {size} px; widen it or use larger images")
    spec = mask * np.exp(2j * np.pi * rng.random((size, size)))
    pat = np.real(np.fft.ifft2(spec))
    return (pat / np.abs(pat).max()).astype(np.float32)


def _floating(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def _long_labels(labels: Any) -> torch.Tensor:
    """Labels (array or tensor) as a CPU int64 tensor."""
    return torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels), dtype=torch.long)


def _loss(out: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    if objective == "auto":
        objective = "ce" if out.ndim == 2 and out.shape[1] > int(y.max()) and out.shape[1] > 1 else "norm"
    if objective == "ce":
        return nn.functional.cross_entropy(out, y, reduction="sum")
    if objective == "norm":
        return 0.5 * (out**2).sum()
    raise InputError(f"objective must be 'auto', 'ce' or 'norm', got {objective!r}")


def input_gradients(model: nn.Module, images: torch.Tensor, labels: Any, *, objective: str = "auto",
                    batch_size: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """d loss / d input for every image, summed over channels: (N, H, W).

    ``objective``: "ce" (cross-entropy of the model's logits), "norm" (0.5 ||output||^2, for a
    model without head) or "auto" (ce when the output is wide enough for the labels).
    The model is used in eval mode (mode restored afterwards); no ``.grad`` is written to it.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputError("images must be a (N, C, H, W) tensor")
    y = _long_labels(labels)
    was = model.training
    model.to(device).eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = _floating(images[i:i + batch_size].to(device)).requires_grad_(True)
            loss = _loss(model(x), y[i:i + batch_size].to(device), objective)
            (g,) = torch.autograd.grad(loss, [x])
            out.append(g.sum(dim=1).detach().cpu().double().numpy())
    finally:
        model.train(was)
    return np.concatenate(out)


def input_gradient_spectrum(model: nn.Module, images: torch.Tensor, labels: Any, **kwargs: Any) -> Spectrum:
    """Radial PSD of the input gradients (see :func:`input_gradients`)."""
    return radial_psd(input_gradients(model, images, labels, **kwargs))


def weight_gradient_spectrum(model: nn.Module, images: torch.Tensor, labels: Any, *, layer: str | None = None,
                             pad: int = 32, objective: str = "auto", device: str | torch.device = "cpu") -> Spectrum:
    """Radial PSD of the first conv layer's weight gradient, kernels zero-padded to ``pad`` px."""
    mods = dict(model.named_modules())
    if layer is None:
        layer = next((n for n, m in mods.items() if isinstance(m, nn.Conv2d)), None)
        if layer is None:
            raise InputError("model has no Conv2d layer; pass layer=")
    if layer not in mods or not isinstance(mods[layer], nn.Conv2d):
        raise InputError(f"layer {layer!r} is not a Conv2d of the model")
    w = mods[layer].weight
    y = _long_labels(labels)
    was = model.training
    model.to(device).eval()
    try:
        loss = _loss(model(_floating(images.to(device))), y.to(device), objective)
        (g,) = torch.autograd.grad(loss, [w])
    finally:
        model.train(was)
    k = g.detach().cpu().double().numpy().reshape(-1, g.shape[-2], g.shape[-1])
    padded = np.zeros((k.shape[0], max(pad, k.shape[-2]), max(pad, k.shape[-1])))
    padded[:, : k.shape[-2], : k.shape[-1]] = k
    return radial_psd(padded)


def plot_spectra(spectra: Mapping[str, Spectrum], *, title: str = "", normalise: bool = True) -> Any:
    """Log-scale plot of radial spectra (one line each, DC omitted); returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 3.6), layout="constrained")
    top = 0.0
    for name, s in spectra.items():
        p = s.normalised() if normalise else s.power
        m = s.freqs > 0
        top = max(top, float(np.max(p[m], initial=0.0)))
        ax.semilogy(s.freqs[m], np.maximum(p[m], 1e-300), label=str(name))
    if top > 0:  # a band-limited pattern is ~0 (rounding, 1e-17) outside its band: do not let that set the scale
        ax.set_ylim(bottom=top * 1e-8)
    ax.set_xlabel("frequency (cycles / pixel)")
    ax.set_ylabel("normalised power" if normalise else "power")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, not on them
    return fig
