"""Low-dose CT simulation in the projection domain (parallel beam, scikit-image projector).

HU -> linear attenuation ``mu = mu_water (1 + HU/1000)`` (per mm), times the pixel size for line
integrals; Radon transform; Poisson counts ``Poisson(N0 exp(-p))`` (+ optional Gaussian electronic
noise on the counts); log with a floor ``p' = -log(max(counts, 1) / N0)``; filtered back-projection
back to HU. The sinogram/FBP helpers are reused by the projection-domain denoiser.

Sinograms follow scikit-image's layout: ``(n_detectors, n_views)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from medbench.errors import InputError
from medbench.utils.rng import numpy_rng

log = logging.getLogger(__name__)

MU_WATER_PER_MM = 0.0192  # ~70 keV
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")  # scikit-image's names
DEFAULT_FILTER = "shepp-logan"  # the TMD-LDCT authors' FBP filter
AIR_HU = -1000.0
STARVED_WARN_FRACTION = 0.01  # warn when more than 1% of detector bins expect < 1 photon


def starved_fraction(p: np.ndarray, n0: float) -> float:
    """Fraction of detector bins whose expected count ``n0 exp(-p)`` is below one photon."""
    return float(np.mean(n0 * np.exp(-np.asarray(p, dtype=np.float64)) < 1.0))


@dataclass(frozen=True)
class Geometry:
    """Parallel-beam acquisition geometry.

    Args:
        n_views: Number of projection angles over 180 degrees.
        pixel_mm: Pixel size in mm (sets the line-integral scale).
        mu_water: Linear attenuation of water per mm.
        filter_name: FBP filter (scikit-image name: ramp, shepp-logan, cosine, hamming, hann).
            Default ``"shepp-logan"``, the filter of the TMD-LDCT authors' reconstruction
            (``FFTFilter(kernel="shepp-logan")`` in YCL92/TMD-LDCT); ``"ramp"`` stays selectable
            (``--filter ramp``) and is what checkpoints trained before this default recorded.
    """

    n_views: int = 180
    pixel_mm: float = 5.0
    mu_water: float = MU_WATER_PER_MM
    filter_name: str = DEFAULT_FILTER

    def __post_init__(self) -> None:
        if self.filter_name not in FBP_FILTERS:
            raise InputError(f"unknown FBP filter {self.filter_name!r}: choose one of {', '.join(FBP_FILTERS)}")

    @property
    def angles(self) -> np.ndarray:
        """Projection angles in degrees, ``[0, 180)``."""
        return np.arange(self.n_views, dtype=np.float64) * (180.0 / self.n_views)


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """HU -> linear attenuation per mm (negative values clipped to 0: padding below air)."""
    return np.clip(mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation per mm -> HU."""
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / mu_water - 1.0)


def _check_slice(hu: np.ndarray) -> np.ndarray:
    hu = np.asarray(hu)
    if hu.ndim != 2 or hu.shape[0] != hu.shape[1]:
        raise InputError(f"expected a square 2-D slice, got shape {hu.shape}: pad or crop to square")
    if not np.isfinite(hu).all():
        raise InputError("slice contains NaN/inf: fill them (e.g. with -1000 HU) before projecting")
    return hu


def forward_project(hu: np.ndarray, geometry: Geometry = Geometry()) -> np.ndarray:
    """Line integrals (dimensionless) of a HU slice: ``(n_detectors, n_views)``.

    Pixels outside the inscribed circle are treated as air.
    """
    from skimage.transform import radon

    hu = _check_slice(hu)
    mu_px = hu_to_mu(hu, geometry.mu_water) * geometry.pixel_mm
    n = hu.shape[0]
    yy, xx = np.ogrid[:n, :n]
    mu_px[(yy - n // 2) ** 2 + (xx - n // 2) ** 2 > (n // 2) ** 2] = 0.0  # scikit-image's circle
    return radon(mu_px, theta=geometry.angles, circle=True)


def fbp(sinogram: np.ndarray, geometry: Geometry = Geometry(), *, output_size: int | None = None,
        to_hu: bool = True) -> np.ndarray:
    """Filtered back-projection of ``(n_detectors, n_views)`` line integrals.

    Args:
        sinogram: Line integrals (or a sinogram residual).
        geometry: Must match the sinogram's views.
        output_size: Image side (default: the detector count).
        to_hu: Return HU; ``False`` returns attenuation per mm (use for residuals, which have no
            water offset: ``1000 * fbp(r, to_hu=False) / mu_water`` is a HU difference).
    """
    from skimage.transform import iradon

    sinogram = np.asarray(sinogram, dtype=np.float64)
    if sinogram.ndim != 2 or sinogram.shape[1] != geometry.n_views:
        raise InputError(
            f"sinogram shape {sinogram.shape} does not match {geometry.n_views} views: "
            "pass the Geometry used to project it"
        )
    size = output_size or sinogram.shape[0]
    mu = iradon(sinogram, theta=geometry.angles, output_size=size, filter_name=geometry.filter_name,
                circle=True) / geometry.pixel_mm
    return mu_to_hu(mu, geometry.mu_water) if to_hu else mu


def residual_to_hu(sino_residual: np.ndarray, geometry: Geometry, output_size: int | None = None) -> np.ndarray:
    """FBP of a sinogram residual, as a HU difference image."""
    mu = fbp(sino_residual, geometry, output_size=output_size, to_hu=False)
    return 1000.0 * mu / geometry.mu_water


def noisy_line_integrals(p: np.ndarray, n0: float, rng: np.random.Generator, *,
                         electronic_sd: float = 0.0) -> np.ndarray:
    """Poisson (+ Gaussian electronic) noise on counts, then ``-log(max(counts, 1) / N0)``."""
    if not n0 > 0:
        raise InputError(f"photon count N0 must be > 0, got {n0}")
    counts = rng.poisson(n0 * np.exp(-np.asarray(p, dtype=np.float64))).astype(np.float64)
    if electronic_sd > 0:
        counts = counts + rng.normal(0.0, electronic_sd, size=counts.shape)
    return -np.log(np.maximum(counts, 1.0) / n0)


def noise_prior_sigma(p: np.ndarray, n_ld: float, n_fd: float = math.inf) -> np.ndarray:
    """Per-bin noise SD prior ``sqrt((1/N_ld - 1/N_fd) e^p)`` (``N_fd = inf`` -> ``sqrt(e^p / N_ld)``)."""
    inv = 1.0 / n_ld - (0.0 if math.isinf(n_fd) else 1.0 / n_fd)
    return np.sqrt(np.clip(inv, 0.0, None) * np.exp(np.asarray(p, dtype=np.float64)))


def resolve_n0(n0: float | None = None, dose_fraction: float | None = None,
               n0_ref: float = 1e6) -> float:
    """Photon count from ``n0`` or ``dose_fraction * n0_ref`` (exactly one must be given)."""
    if (n0 is None) == (dose_fraction is None):
        raise InputError("give exactly one of n0 (photons per bin) or dose_fraction (of n0_ref)")
    if dose_fraction is not None:
        if not 0 < dose_fraction <= 1:
            raise InputError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
        return float(dose_fraction) * float(n0_ref)
    return float(n0)  # type: ignore[arg-type]


@dataclass
class SliceSim:
    """One simulated slice: full-dose (noise-free) and low-dose images and sinograms."""

    fd_hu: np.ndarray
    ld_hu: np.ndarray
    sino_fd: np.ndarray
    sino_ld: np.ndarray


@dataclass
class LowDoseResult:
    """A simulated volume: ``(Z, H, W)`` images and ``(Z, D, V)`` sinograms, plus settings."""

    fd_hu: np.ndarray
    ld_hu: np.ndarray
    sino_fd: np.ndarray
    sino_ld: np.ndarray
    n0: float
    geometry: Geometry
    info: dict = field(default_factory=dict)


def simulate_slice(hu: np.ndarray, n0: float, geometry: Geometry = Geometry(), *, seed: int = 0,
                   key: object = 0, electronic_sd: float = 0.0) -> SliceSim:
    """Simulate one low-dose slice; noise drawn from ``numpy_rng(seed, key)``."""
    p = forward_project(hu, geometry)
    p_ld = noisy_line_integrals(p, n0, numpy_rng(seed, "ldct", key), electronic_sd=electronic_sd)
    n = hu.shape[0]
    return SliceSim(
        fd_hu=fbp(p, geometry, output_size=n).astype(np.float32),
        ld_hu=fbp(p_ld, geometry, output_size=n).astype(np.float32),
        sino_fd=p.astype(np.float32),
        sino_ld=p_ld.astype(np.float32),
    )


def _sim_item(args: tuple) -> SliceSim:
    hu, n0, geometry, seed, key, electronic_sd = args
    return simulate_slice(hu, n0, geometry, seed=seed, key=key, electronic_sd=electronic_sd)


def simulate_low_dose(hu: np.ndarray, *, n0: float | None = None, dose_fraction: float | None = None,
                      n0_ref: float = 1e6, geometry: Geometry = Geometry(), seed: int = 0,
                      uid: str = "volume", electronic_sd: float = 0.0, workers: int | None = 1,
                      progress: bool = False) -> LowDoseResult:
    """Simulate a low-dose acquisition of every slice of a ``(Z, H, W)`` (or ``(H, W)``) HU volume.

    Slices run in worker processes (:func:`medbench.parallel.map_items`); slice ``z`` draws its noise
    from ``(seed, uid, z)``, so results do not depend on the worker count.
    """
    from medbench.parallel import Failure, map_items

    vol = np.asarray(hu, dtype=np.float64)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise InputError(f"expected a (Z, H, W) HU volume, got shape {vol.shape}")
    n0_val = resolve_n0(n0, dose_fraction, n0_ref)
    items = [(vol[z], n0_val, geometry, seed, (uid, z), electronic_sd) for z in range(vol.shape[0])]
    res = map_items(_sim_item, items, workers=workers, desc="simulate low dose", progress=progress)
    bad = [r for r in res if isinstance(r, Failure)]
    if bad:
        raise InputError(f"low-dose simulation failed on {len(bad)} slice(s): {bad[0].message}")
    starved = float(np.mean([starved_fraction(r.sino_fd, n0_val) for r in res]))
    if starved > STARVED_WARN_FRACTION:
        log.warning("%.1f%% of detector bins expect fewer than 1 photon (N0=%g, pixel %.3g mm, field of view "
                    "%.0f mm): the log floor biases the low-dose image; use a smaller pixel size or a higher N0",
                    100 * starved, n0_val, geometry.pixel_mm, geometry.pixel_mm * vol.shape[-1])
    return LowDoseResult(
        fd_hu=np.stack([r.fd_hu for r in res]),
        ld_hu=np.stack([r.ld_hu for r in res]),
        sino_fd=np.stack([r.sino_fd for r in res]),
        sino_ld=np.stack([r.sino_ld for r in res]),
        n0=n0_val,
        geometry=geometry,
        info={"seed": seed, "uid": uid, "electronic_sd": electronic_sd, "starved_fraction": starved},
    )


def reproject_volume(hu: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Sinograms ``(Z, D, V)`` of an already reconstructed volume (when raw data are not available)."""
    return np.stack([forward_project(s, geometry) for s in np.asarray(hu, dtype=np.float64)]).astype(np.float32)
