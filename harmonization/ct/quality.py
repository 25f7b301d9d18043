"""Image-quality metrics for CT denoising, all in HU.

PSNR, SSIM and RMSE are computed on a stated HU window (values clipped to it; default soft tissue
[-160, 240]) inside the circular field of view. Noise is measured as SD in flat ROIs and as a noise
power spectrum; resolution as an edge-spread -> line-spread -> MTF curve and its MTF50, so that
blurring is not mistaken for denoising.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medbench.errors import InputError

SOFT_TISSUE = (-160.0, 240.0)
Box = tuple[int, int, int, int]  # row0, col0, height, width


def fov_mask(shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the inscribed circle of an ``(H, W)`` image."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = min(h, w) / 2.0
    return (yy - (h - 1) / 2.0) ** 2 + (xx - (w - 1) / 2.0) ** 2 <= r**2


def _prepare(x: np.ndarray, ref: np.ndarray, window: tuple[float, float] | None,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape or x.ndim not in (2, 3):
        raise InputError(f"images must share a (H, W) or (Z, H, W) shape, got {x.shape} and {ref.shape}")
    if mask is None:
        mask = fov_mask(x.shape[-2:])
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise InputError(f"window must be (low, high) with high > low, got {window}")
        x, ref, rng = np.clip(x, lo, hi), np.clip(ref, lo, hi), hi - lo
    else:
        rng = float(ref[mask].max() - ref[mask].min())
    return x, ref, mask, rng


def rmse(x: np.ndarray, ref: np.ndarray, *, window: tuple[float, float] | None = SOFT_TISSUE,
         mask: np.ndarray | None = None) -> float:
    """Root-mean-square error in HU (after clipping to ``window``; ``None`` = raw HU) inside ``mask``."""
    x, ref, mask, _ = _prepare(x, ref, window, mask)
    return float(np.sqrt(np.mean((x[mask] - ref[mask]) ** 2)))


def psnr(x: np.ndarray, ref: np.ndarray, *, window: tuple[float, float] | None = SOFT_TISSUE,
         mask: np.ndarray | None = None) -> float:
    """PSNR in dB with peak = window width (or the reference's range when ``window`` is None)."""
    x, ref, mask, peak = _prepare(x, ref, window, mask)
    mse = float(np.mean((x[mask] - ref[mask]) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))


def ssim_map(x: np.ndarray, ref: np.ndarray, data_range: float, *, sigma: float = 1.5,
             k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """SSIM map of two 2-D images (Wang et al. 2004, Gaussian window, population covariances)."""
    from scipy.ndimage import gaussian_filter

    def g(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma, mode="reflect", truncate=3.5)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = g(x), g(ref)
    vx = g(x * x) - mx * mx
    vy = g(ref * ref) - my * my
    cxy = g(x * ref) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ssim(x: np.ndarray, ref: np.ndarray, *, window: tuple[float, float] | None = SOFT_TISSUE,
         mask: np.ndarray | None = None, sigma: float = 1.5) -> float:
    """Mean SSIM over the mask (borders of half the Gaussian support excluded), averaged over slices."""
    x, ref, mask, peak = _prepare(x, ref, window, mask)
    if x.ndim == 2:
        x, ref, mask = x[None], ref[None], mask[None]
    pad = int(3.5 * sigma + 0.5)
    vals = []
    for xs, rs, ms in zip(x, ref, mask):
        smap = ssim_map(xs, rs, peak, sigma=sigma)
        keep = np.zeros_like(ms)
        keep[pad:-pad, pad:-pad] = ms[pad:-pad, pad:-pad]
        vals.append(smap[keep].mean())
    return float(np.mean(vals))


def _crop(img: np.ndarray, box: Box) -> np.ndarray:
    r, c, h, w = box
    if r < 0 or c < 0 or r + h > img.shape[-2] or c + w > img.shape[-1]:
        raise InputError(f"ROI {box} lies outside the image {img.shape[-2:]}: move or shrink it")
    return img[..., r:r + h, c:c + w]


def noise_sd(image: np.ndarray, rois: Sequence[Box]) -> float:
    """Mean over ROIs (and slices) of the pixel SD in flat regions, in HU.

    Pass a difference image (denoised - reference) to measure noise on textured objects.
    """
    if not rois:
        raise InputError("no flat ROIs given: pass (row, col, height, width) boxes in a uniform region")
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    sds = [_crop(s, b).std(ddof=1) for s in img for b in rois]
    return float(np.mean(sds))


def nps_2d(noise_rois: np.ndarray, *, pixel_mm: float = 1.0, detrend: str = "mean"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D noise power spectrum from a stack of noise-only ROIs ``(K, h, w)``.

    ``NPS(fy, fx) = dx dy / (h w) * mean_k |DFT(roi_k - trend_k)|^2`` (centred). Its integral over
    frequency equals the pixel variance. Use flat ROIs of one image, or difference images divided
    by sqrt(2).

    Returns:
        ``(nps (h, w) in HU^2 mm^2, fy, fx)`` with frequencies in cycles/mm.
    """
    rois = np.asarray(noise_rois, dtype=np.float64)
    if rois.ndim == 2:
        rois = rois[None]
    if rois.ndim != 3 or min(rois.shape[1:]) < 4:
        raise InputError(f"noise ROIs must be (K, h, w) with h, w >= 4, got {rois.shape}")
    k, h, w = rois.shape
    if detrend == "mean":
        rois = rois - rois.mean(axis=(1, 2), keepdims=True)
    elif detrend == "plane":
        yy, xx = np.mgrid[:h, :w]
        a = np.stack([np.ones(h * w), yy.ravel(), xx.ravel()], axis=1)
        coef, *_ = np.linalg.lstsq(a, rois.reshape(k, -1).T, rcond=None)
        rois = rois - (a @ coef).T.reshape(k, h, w)
    else:
        raise InputError(f"detrend must be 'mean' or 'plane', got {detrend!r}")
    spec = np.abs(np.fft.fft2(rois)) ** 2
    nps = np.fft.fftshift(spec.mean(axis=0)) * pixel_mm * pixel_mm / (h * w)
    fy = np.fft.fftshift(np.fft.fftfreq(h, d=pixel_mm))
    fx = np.fft.fftshift(np.fft.fftfreq(w, d=pixel_mm))
    return nps, fy, fx


def radial_nps(nps: np.ndarray, fy: np.ndarray, fx: np.ndarray, *, n_bins: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS: ``(bin-centre frequency, mean NPS)`` up to the Nyquist frequency."""
    fr = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    fmax = min(np.abs(fy).max(), np.abs(fx).max())
    n_bins = n_bins or max(4, min(nps.shape) // 2)
    edges = np.linspace(0.0, fmax, n_bins + 1)
    idx = np.digitize(fr.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.bincount(idx[ok], weights=nps.ravel()[ok], minlength=n_bins)
    cnts = np.bincount(idx[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = sums / cnts
    return 0.5 * (edges[1:] + edges[:-1]), prof


@dataclass
class MTFResult:
    """Edge-based MTF: frequencies (cycles/mm), MTF, MTF50, and the ESF/LSF on the oversampled grid."""

    freqs: np.ndarray
    mtf: np.ndarray
    mtf50: float
    distance: np.ndarray
    esf: np.ndarray
    lsf: np.ndarray
    angle_deg: float


def edge_mtf(roi: np.ndarray, *, pixel_mm: float = 1.0, oversample: int = 4,
             taper: float = 0.5, n_fft: int = 512) -> MTFResult:
    """MTF from a (slightly slanted) straight edge ROI: ESF -> LSF -> |FFT|.

    The edge runs roughly along rows or columns (orientation detected). A 3-D stack of ROIs over
    slices is averaged first (the ensemble mean removes noise for nonlinear denoisers). Per line
    the edge position is the area under the normalised profile; a straight line fitted to them
    gives the angle, pixels are binned by signed distance to it at ``1/oversample`` pixel, the
    binned ESF is differentiated, tapered (Tukey ``taper``) and Fourier transformed. The binning
    and central-difference transfer functions are divided out.
    """
    img = np.asarray(roi, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=0)
    if img.ndim != 2 or min(img.shape) < 4:
        raise InputError(f"edge ROI must be 2-D with sides >= 4 px, got {img.shape}")
    # Make the profile run along columns (edge roughly vertical): transpose if the step is along rows.
    if np.abs(np.diff(img, axis=0)).mean() > np.abs(np.diff(img, axis=1)).mean():
        img = img.T
    n_rows, n_cols = img.shape
    lo = np.median(img[:, :2])
    hi = np.median(img[:, -2:])
    if abs(hi - lo) < 1e-9:
        raise InputError("edge ROI has no contrast: place it across an edge")
    norm = (img - lo) / (hi - lo)
    pos = n_cols - 0.5 - norm.sum(axis=1)  # step position per row, pixel-centre coordinates
    rows = np.arange(n_rows)
    slope, icpt = np.polyfit(rows, pos, 1)
    cos_a = 1.0 / np.sqrt(1.0 + slope**2)
    cols = np.arange(n_cols)
    dist = (cols[None, :] - (slope * rows[:, None] + icpt)) * cos_a
    half = float(min(np.min(slope * rows + icpt), np.min(n_cols - 1 - (slope * rows + icpt)))) * cos_a
    if half < 2.0:
        raise InputError(f"edge is too close to the ROI border ({half:.1f} px): centre the ROI on the edge")
    h = 1.0 / oversample
    nb = int(np.floor(half / h))
    centres = np.arange(-nb, nb + 1) * h
    idx = np.rint(dist / h).astype(int) + nb
    ok = (idx >= 0) & (idx < centres.size)
    sums = np.bincount(idx[ok], weights=norm[ok], minlength=centres.size)
    cnts = np.bincount(idx[ok], minlength=centres.size)
    have = cnts > 0
    esf = np.interp(centres, centres[have], sums[have] / cnts[have])
    lsf = np.gradient(esf, h)
    if taper > 0:
        from scipy.signal.windows import tukey

        lsf = lsf * tukey(lsf.size, alpha=taper)
    n = max(n_fft, lsf.size)
    spec = np.abs(np.fft.rfft(lsf, n=n))
    f_px = np.fft.rfftfreq(n, d=h)  # cycles per pixel
    mtf = spec / spec[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.sinc(f_px * h) * np.sinc(2 * f_px * h)  # bin averaging x central difference
        mtf = np.where(corr > 0.1, mtf / corr, np.nan)
    keep = f_px <= 0.5 + 1e-12  # up to the pixel Nyquist
    freqs = f_px[keep] / pixel_mm
    mtf = mtf[keep]
    return MTFResult(freqs, mtf, mtf50(freqs, mtf), centres * pixel_mm, esf, lsf,
                     float(np.degrees(np.arctan(slope))))


def mtf50(freqs: np.ndarray, mtf: np.ndarray) -> float:
    """First frequency where the MTF falls to 0.5 (linear interpolation); NaN if it never does."""
    below = np.nonzero(np.asarray(mtf) < 0.5)[0]
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    f0, f1, m0, m1 = freqs[i - 1], freqs[i], mtf[i - 1], mtf[i]
    return float(f0 + (m0 - 0.5) * (f1 - f0) / (m0 - m1))


def image_quality(x: np.ndarray, ref: np.ndarray, *, window: tuple[float, float] = SOFT_TISSUE,
                  flat_rois: Sequence[Box] = (), edge_roi: Box | None = None,
                  pixel_mm: float = 1.0) -> dict[str, float]:
    """All metrics of ``x`` against ``ref``: psnr, ssim, rmse, noise_sd (of x - ref), mtf50.

    ``noise_sd`` is always present: NaN (with a logged reason) when no flat ROI is given.
    """
    out = {
        "psnr": psnr(x, ref, window=window),
        "ssim": ssim(x, ref, window=window),
        "rmse": rmse(x, ref, window=window),
    }
    if flat_rois:
        out["noise_sd"] = noise_sd(np.asarray(x, np.float64) - np.asarray(ref, np.float64), flat_rois)
    else:
        logging.getLogger(__name__).warning("noise_sd is NaN: no flat region (ROI) to measure it in")
        out["noise_sd"] = float("nan")
    if edge_roi is not None:
        out["mtf50"] = edge_mtf(_crop(np.asarray(x, np.float64), edge_roi), pixel_mm=pixel_mm).mtf50
    return out
