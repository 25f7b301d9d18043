"""Registry of CT denoisers: HU volume ``(Z, H, W)`` (or one ``(H, W)`` slice) in, HU out.

Classical: ``fbp`` (identity, the low-dose baseline), ``gaussian``, ``bilateral``, ``nlm``, ``bm3d``
(optional ``bm3d`` package). Learned: ``redcnn`` and ``two_stage`` (from checkpoints; the bundled
small ones by default). Classical entries carry a parameter ``grid`` from which :func:`tune` picks
the setting with the best PSNR on a validation phantom (a fair baseline).

Example:
    >>> den = create_denoiser("nlm", h_hu=20.0)
    >>> out = den(ld_hu)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medbench.errors import InputError
from medbench.registry import Registry
from medbench.utils.optional import optional_import

log = logging.getLogger(__name__)

DENOISERS: Registry[type[Denoiser]] = Registry("denoiser")
WEIGHTS_DIR = Path(__file__).parent / "weights"


def create_denoiser(name: str, **kwargs: Any) -> Denoiser:
    """Instantiate the denoiser registered under ``name``."""
    return DENOISERS.create(name, **kwargs)


class Denoiser:
    """Base class: validates input, never modifies it, returns float32 HU of the same shape.

    Subclasses implement :meth:`_denoise_slice` (2-D) or override :meth:`_denoise_volume`.
    ``grid`` lists constructor keyword sets swept by :func:`tune`.
    """

    name: ClassVar[str] = "base"
    grid: ClassVar[tuple[dict[str, float], ...]] = ()

    def __call__(self, hu: np.ndarray, **context: Any) -> np.ndarray:
        """Denoise ``hu`` ((Z, H, W) or (H, W)); ``context`` may hold ``sinograms``, ``n0``, ``pixel_mm``."""
        arr = np.asarray(hu)
        if arr.ndim not in (2, 3) or min(arr.shape[-2:]) < 8:
            raise InputError(f"{self.name}: expected HU of shape (Z, H, W) or (H, W), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"{self.name}: input contains NaN/inf; fill them (e.g. -1000 HU) first")
        vol = np.array(arr[None] if arr.ndim == 2 else arr, dtype=np.float32, copy=True)
        out = self._denoise_volume(vol, **context).astype(np.float32)
        return out[0] if arr.ndim == 2 else out

    def _denoise_volume(self, vol: np.ndarray, **context: Any) -> np.ndarray:
        return np.stack([self._denoise_slice(s) for s in vol])

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The constructor settings (for reports)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@DENOISERS.register("fbp")
class Identity(Denoiser):
    """No denoising: the filtered back-projection itself (the low-dose baseline)."""

    name = "fbp"

    def _denoise_volume(self, vol: np.ndarray, **context: Any) -> np.ndarray:
        return vol


@DENOISERS.register("gaussian")
class Gaussian(Denoiser):
    """In-plane Gaussian smoothing with SD ``sigma_px`` pixels."""

    name = "gaussian"
    grid = tuple({"sigma_px": s} for s in (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5))

    def __init__(self, sigma_px: float = 1.0) -> None:
        self.sigma_px = float(sigma_px)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(hu.astype(np.float64), self.sigma_px, mode="nearest")


@DENOISERS.register("bilateral")
class Bilateral(Denoiser):
    """Bilateral filter (scikit-image): range SD ``sigma_hu`` HU, spatial SD ``sigma_px`` pixels."""

    name = "bilateral"
    grid = tuple({"sigma_hu": c, "sigma_px": s} for c in (10.0, 20.0, 40.0, 80.0) for s in (0.7, 1.0, 1.5))

    def __init__(self, sigma_hu: float = 60.0, sigma_px: float = 1.5) -> None:
        self.sigma_hu = float(sigma_hu)
        self.sigma_px = float(sigma_px)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_bilateral

        # scikit-image's colour LUT expects non-negative values: map [-1024, 2976] HU to [0, 1].
        x = (hu.astype(np.float64) + 1024.0) / 4000.0
        y = denoise_bilateral(x, sigma_color=self.sigma_hu / 4000.0, sigma_spatial=self.sigma_px,
                              mode="edge")
        return y * 4000.0 - 1024.0


@DENOISERS.register("nlm")
class NonLocalMeans(Denoiser):
    """Non-local means (scikit-image): filtering parameter ``h_hu`` for a noise SD ``sigma_hu``."""

    name = "nlm"
    grid = tuple({"h_hu": h} for h in (10.0, 20.0, 30.0, 40.0, 60.0))

    def __init__(self, h_hu: float = 30.0, sigma_hu: float = 0.0, patch_size: int = 5,
                 patch_distance: int = 6) -> None:
        self.h_hu = float(h_hu)
        self.sigma_hu = float(sigma_hu)
        self.patch_size = int(patch_size)
        self.patch_distance = int(patch_distance)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        x = hu.astype(np.float64) / 1000.0
        y = denoise_nl_means(x, patch_size=self.patch_size, patch_distance=self.patch_distance,
                             h=self.h_hu / 1000.0, sigma=self.sigma_hu / 1000.0, fast_mode=True)
        return y * 1000.0


@DENOISERS.register("bm3d")
class BM3D(Denoiser):
    """BM3D (the ``bm3d`` package, optional extra ``ct``) for white noise of SD ``sigma_hu``."""

    name = "bm3d"
    grid = tuple({"sigma_hu": s} for s in (10.0, 20.0, 30.0, 45.0, 60.0))

    def __init__(self, sigma_hu: float = 30.0) -> None:
        self.sigma_hu = float(sigma_hu)
        self._bm3d = optional_import("bm3d", extra="ct", purpose="the BM3D denoiser")

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        x = hu.astype(np.float64) / 1000.0
        return np.asarray(self._bm3d.bm3d(x, sigma_psd=self.sigma_hu / 1000.0), np.float64) * 1000.0


def _checkpoint_path(checkpoint: str | Path | None, default_name: str) -> Path:
    if checkpoint is not None:
        return Path(checkpoint)
    path = WEIGHTS_DIR / default_name
    if not path.exists():
        raise InputError(f"no checkpoint given and the bundled {path} is missing: "
                         "train one with `medbench denoise train` and pass --checkpoint")
    return path


@DENOISERS.register("redcnn")
class REDCNNDenoiser(Denoiser):
    """RED-CNN from a checkpoint (default: the bundled small model for 64-px phantoms, N0 = 2.5e4)."""

    name = "redcnn"

    def __init__(self, checkpoint: str | Path | None = None, progress: bool = False) -> None:
        from harmonization.ct.learned import REDCNNModel

        self.checkpoint = str(_checkpoint_path(checkpoint, "redcnn.pt"))
        self.progress = progress
        self._model = REDCNNModel.from_checkpoint(self.checkpoint)

    def _denoise_volume(self, vol: np.ndarray, **context: Any) -> np.ndarray:
        return self._model.denoise(vol, progress=self.progress)


@DENOISERS.register("two_stage")
class TwoStageDenoiser(Denoiser):
    """Two-stage cross-domain denoiser (projection + image networks) from a checkpoint.

    Args:
        checkpoint: Path of ``two_stage.pt`` (default: the bundled small model, N0 = 2.5e4).
        n0: Photon count for the noise prior (default: the training value).
        progress: Show progress bars.

    Call with ``sinograms=(Z, D, V)`` when the low-dose projections are known; otherwise the
    images are re-projected. ``pixel_mm`` sets the line-integral scale (default: training geometry).
    """

    name = "two_stage"

    def __init__(self, checkpoint: str | Path | None = None, n0: float | None = None,
                 progress: bool = False) -> None:
        from harmonization.ct.learned import TwoStageModel

        self.checkpoint = str(_checkpoint_path(checkpoint, "two_stage.pt"))
        self._model = TwoStageModel.from_checkpoint(self.checkpoint)
        self.n0 = float(n0) if n0 is not None else self._model.n0
        self.progress = progress

    def _denoise_volume(self, vol: np.ndarray, **context: Any) -> np.ndarray:
        return self._model.denoise(vol, sinograms=context.get("sinograms"), n0=context.get("n0") or self.n0,
                                   pixel_mm=context.get("pixel_mm"), progress=self.progress)


def tune(name: str, ld: np.ndarray, ref: np.ndarray, *, grid: tuple[dict[str, float], ...] | None = None,
         window: tuple[float, float] = (-160.0, 240.0)) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """Pick the setting of a classical denoiser that maximises PSNR against ``ref`` (validation data).

    Returns:
        ``(best keyword set, [(keyword set, PSNR), ...])``.
    """
    from harmonization.ct.quality import psnr

    cls = DENOISERS.get(name)
    grid = grid or cls.grid
    if not grid:
        raise InputError(f"denoiser {name!r} has no parameter grid to tune; pass grid=")
    scores = [(dict(kw), psnr(cls(**kw)(ld), ref, window=window)) for kw in grid]
    best, best_psnr = max(scores, key=lambda t: t[1])
    log.info("tuned %s: %s (PSNR %.2f dB)", name, best, best_psnr)
    return best, scores
