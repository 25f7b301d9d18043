"""Registry of CT denoisers: HU volume ``(Z, H, W)`` (or one ``(H, W)`` slice) in, HU out.

Classical: ``fbp`` (identity, the low-dose baseline), ``gaussian``, ``bilateral``, ``nlm``, ``bm3d``
(optional ``bm3d`` package). Learned: ``redcnn`` and ``two_stage`` (from checkpoints; the bundled
small ones by default). What a caller must do differently for an entry is declared on its class
(``learned``, ``square_only``, ``trainer``; see :class:`DenoiserProtocol`), never by its name. Classical entries carry parameter ``axes`` (their product is ``grid``) from
which :func:`tune` picks the setting with the best PSNR on a validation phantom (a fair baseline).
When the best value lies on the edge of an axis, :func:`tune` extends that axis geometrically (up
to ``max_extend`` times) and warns if the optimum is still at the edge.

Example:
    >>> den = create_denoiser("nlm", h_hu=20.0)
    >>> out = den(ld_hu)
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from harmonization.ct.simulate import DEFAULT_FILTER
from medbench.errors import InputError
from medbench.registry import Registry
from medbench.utils.optional import optional_import

log = logging.getLogger(__name__)



class DenoiserProtocol(Protocol):
    """The contract of a ``DENOISERS`` entry (a class; :class:`Denoiser` implements it).

    ``entry(**settings)`` builds it; calling it on HU ``(Z, H, W)`` or ``(H, W)`` returns float32
    HU of the same shape, with optional context ``sinograms``, ``n0``, ``pixel_mm``.

    Attributes:
        learned: Built from a checkpoint (``entry(checkpoint=PATH or None for the bundled one,
            progress=bool)``), trained at one geometry (``_model.geometry``/``_model.meta``
            pixel size and matrix, checked by ``denoise apply``) and denoising whole volumes.
        square_only: Needs square slices (it re-projects them).
        trainer: ``"module:function"`` that trains it (``medbench denoise train --model NAME``;
            called as ``fn(data, cfg, out_dir, run=run)``), or None; ``trainer_outputs`` are the
            per-stage checkpoints it writes, ``history_key`` the loss its history records.
        grid: Settings swept by :func:`tune` (classical entries).
    """

    name: ClassVar[str]
    learned: ClassVar[bool]
    square_only: ClassVar[bool]
    trainer: ClassVar[str | None]
    grid: ClassVar[tuple[dict[str, float], ...]]

    def __call__(self, hu: np.ndarray, **context: Any) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


DENOISERS: Registry[type[Denoiser]] = Registry("denoiser", protocol=DenoiserProtocol, entry="class")
WEIGHTS_DIR = Path(__file__).parent / "weights"


def create_denoiser(name: str, **kwargs: Any) -> Denoiser:
    """Instantiate the denoiser registered under ``name``."""
    return DENOISERS.create(name, **kwargs)


def _product(axes: dict[str, tuple[float, ...] | list[float]]) -> tuple[dict[str, float], ...]:
    keys = list(axes)
    return tuple(dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys)))


class Denoiser:
    """Base class: validates input, never modifies it, returns float32 HU of the same shape.

    Subclasses implement :meth:`_denoise_slice` (2-D) or override :meth:`_denoise_volume`.
    ``axes`` maps each tunable constructor keyword to its candidate values (increasing, positive);
    ``grid`` is their product, swept by :func:`tune`.
    """

    name: ClassVar[str] = "base"
    axes: ClassVar[dict[str, tuple[float, ...]]] = {}
    limits: ClassVar[dict[str, tuple[float, float]]] = {}  # bounds for extending an axis
    grid: ClassVar[tuple[dict[str, float], ...]] = ()
    learned: ClassVar[bool] = False
    square_only: ClassVar[bool] = False
    trainer: ClassVar[str | None] = None
    trainer_outputs: ClassVar[tuple[str, ...]] = ()  # per-stage checkpoints the trainer writes (run outputs)
    history_key: ClassVar[str] = "loss"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.axes:
            cls.grid = _product(cls.axes)

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
    axes = {"sigma_px": (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)}

    def __init__(self, sigma_px: float = 1.0) -> None:
        self.sigma_px = float(sigma_px)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(hu.astype(np.float64), self.sigma_px, mode="nearest")


@DENOISERS.register("bilateral")
class Bilateral(Denoiser):
    """Bilateral filter (scikit-image): range SD ``sigma_hu`` HU, spatial SD ``sigma_px`` pixels."""

    name = "bilateral"
    axes = {"sigma_hu": (10.0, 20.0, 40.0, 80.0, 160.0, 320.0), "sigma_px": (0.5, 1.0, 2.0, 4.0, 6.0)}
    # Beyond ~6 px the window (6 sigma + 1 wide) makes it slow, and it degenerates to a range filter.
    limits = {"sigma_px": (0.25, 6.0)}

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
    """Non-local means (scikit-image): filtering parameter ``h_hu`` for a noise SD ``sigma_hu``.

    With ``h_hu=None`` (the default) each slice's noise SD is estimated (scikit-image's wavelet
    estimator, :func:`estimate_noise_hu`) and ``h = h_factor * sigma`` with ``sigma`` passed too,
    scikit-image's recommended use, so low-noise slices are not over-smoothed. :func:`tune` sweeps
    a fixed ``h_hu`` instead.
    """

    name = "nlm"
    axes = {"h_hu": (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0)}

    def __init__(self, h_hu: float | None = None, sigma_hu: float = 0.0, patch_size: int = 5,
                 patch_distance: int = 6, h_factor: float = 0.8) -> None:
        self.h_hu = None if h_hu is None else float(h_hu)
        self.sigma_hu = float(sigma_hu)
        self.patch_size = int(patch_size)
        self.patch_distance = int(patch_distance)
        self.h_factor = float(h_factor)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        h, sigma = self.h_hu, self.sigma_hu
        if h is None:
            sigma = estimate_noise_hu(hu)
            h = self.h_factor * sigma
            log.debug("nlm: estimated noise SD %.2f HU -> h %.2f HU", sigma, h)
        x = hu.astype(np.float64) / 1000.0
        y = denoise_nl_means(x, patch_size=self.patch_size, patch_distance=self.patch_distance,
                             h=h / 1000.0, sigma=sigma / 1000.0, fast_mode=True)
        return y * 1000.0


def estimate_noise_hu(hu: np.ndarray, body_hu: float = -500.0) -> float:
    """Noise SD (HU) of a slice by scikit-image's wavelet estimator, on the bounding box of the body.

    Padding and air outside the body (below ``body_hu``) are excluded where possible because they
    are often noise-free and would bias the estimate low.
    """
    from skimage.restoration import estimate_sigma

    img = np.asarray(hu, dtype=np.float64)
    rows, cols = np.nonzero(img > body_hu)
    if rows.size > 64:
        img = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return float(estimate_sigma(img, channel_axis=None))


def fbp_noise_psd(shape: tuple[int, int], filter_name: str = DEFAULT_FILTER) -> np.ndarray:
    """Shape of the noise power spectrum of parallel-beam FBP, normalised to mean 1 (FFT layout).

    Back-projecting filtered white projection noise gives a radial NPS ``|f| W(|f|)^2`` (``W``:
    the apodisation of the ramp, scikit-image's filter names, up to the detector Nyquist frequency
    0.5 cycles/pixel), times ``sinc(f)^4`` for the linear interpolation of the back-projector.
    Non-stationarity (noise varying with the attenuation along each ray) is ignored: the SD scales
    the whole spectrum.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    u = np.clip(f / 0.5, 0.0, 1.0)  # fraction of the detector Nyquist frequency
    windows = {
        "ramp": np.ones_like(u),
        "shepp-logan": np.sinc(u / 2.0),
        "cosine": np.cos(np.pi * u / 2.0),
        "hamming": 0.54 + 0.46 * np.cos(np.pi * u),
        "hann": 0.5 + 0.5 * np.cos(np.pi * u),
    }
    if filter_name not in windows:
        raise InputError(f"unknown FBP filter {filter_name!r}: choose one of {sorted(windows)}")
    psd = f * windows[filter_name] ** 2 * np.sinc(f) ** 4
    psd[0, 0] = psd[psd > 0].min()  # keep the DC term finite and small
    return psd / psd.mean()


@DENOISERS.register("bm3d")
class BM3D(Denoiser):
    """BM3D (the ``bm3d`` package, optional extra ``ct``) for FBP noise of SD ``sigma_hu``.

    Args:
        sigma_hu: Noise SD in HU (the total power of the spectrum).
        psd: ``"fbp"`` (default): the noise power spectrum of parallel-beam FBP with
            ``filter_name`` (:func:`fbp_noise_psd`), as the ``bm3d`` package accepts for correlated
            noise; ``"white"``: one white-noise SD (the classic, mismatched for CT).
        filter_name: The FBP filter of the images (scikit-image name); default: the simulation
            geometry's default (:data:`harmonization.ct.simulate.DEFAULT_FILTER`, Shepp-Logan).
            Pass the filter the images were reconstructed with when it differs.
    """

    name = "bm3d"
    axes = {"sigma_hu": (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)}

    def __init__(self, sigma_hu: float = 30.0, psd: str = "fbp", filter_name: str = DEFAULT_FILTER) -> None:
        if psd not in ("fbp", "white"):
            raise InputError(f"bm3d psd={psd!r}: choose 'fbp' (FBP noise spectrum) or 'white'")
        self.sigma_hu = float(sigma_hu)
        self.psd = psd
        self.filter_name = filter_name
        self._bm3d = optional_import("bm3d", extra="ct", purpose="the BM3D denoiser")
        if psd == "fbp" and not hasattr(np, "trapz"):
            # bm4d (under bm3d) integrates a full PSD with np.trapz, removed in NumPy 2.4; same function.
            np.trapz = np.trapezoid  # type: ignore[attr-defined]

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        x = hu.astype(np.float64) / 1000.0
        var = (self.sigma_hu / 1000.0) ** 2
        if self.psd == "white":
            arg: Any = self.sigma_hu / 1000.0
        else:  # bm3d's convention: PSD = E|FFT(noise)|^2, i.e. variance * M * N for white noise
            arg = fbp_noise_psd(x.shape, self.filter_name) * var * x.size
        return np.asarray(self._bm3d.bm3d(x, sigma_psd=arg), np.float64) * 1000.0


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
    learned = True
    trainer = "harmonization.ct.training:train_redcnn"
    trainer_outputs = ("redcnn_last.pt",)
    history_key = "redcnn"

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
    learned = True
    square_only = True
    trainer = "harmonization.ct.training:train_two_stage"
    trainer_outputs = ("projection_last.pt", "image_last.pt")
    history_key = "image"

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


def _axes_of(grid: tuple[dict[str, float], ...]) -> dict[str, list[float]]:
    keys = list(grid[0])
    return {k: sorted({float(g[k]) for g in grid}) for k in keys}


def grid_edges(best: dict[str, float], scores: list[tuple[dict[str, float], float]]) -> list[str]:
    """Parameters whose tuned value is the smallest or largest tried (with >= 2 values tried)."""
    axes = _axes_of(tuple(kw for kw, _ in scores))
    return [k for k, vals in axes.items() if len(vals) >= 2 and float(best[k]) in (vals[0], vals[-1])]


def _step_out(vals: list[float], low: bool) -> float:
    a, b = (vals[0], vals[1]) if low else (vals[-1], vals[-2])
    if a > 0 and b > 0:
        return a * (a / b)  # geometric step, stays positive
    return a + (a - b)


def tune(name: str, ld: np.ndarray, ref: np.ndarray, *, grid: tuple[dict[str, float], ...] | None = None,
         window: tuple[float, float] = (-160.0, 240.0), extend: bool | None = None, max_extend: int = 4,
         fixed: dict[str, Any] | None = None) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """Pick the setting of a classical denoiser that maximises PSNR against ``ref`` (validation data).

    Args:
        name: Registered denoiser.
        ld, ref: Validation low-dose and reference HU.
        grid: Keyword sets to try (default: the class's ``axes`` product).
        window: HU window of the PSNR.
        extend: Extend an axis whose best value is on its edge, one geometric step at a time, up to
            ``max_extend`` steps per axis (default: on for the class grid, off for a given ``grid``).
        fixed: Constructor keywords held fixed (e.g. ``{"filter_name": "shepp-logan"}``).

    Returns:
        ``(best keyword set, [(keyword set, PSNR), ...])``. A ``UserWarning`` (and a log warning)
        names any parameter still on the edge of its tried values.
    """
    from harmonization.ct.quality import psnr

    cls = DENOISERS.get(name)
    extend = grid is None if extend is None else extend
    grid = grid or cls.grid
    if not grid:
        raise InputError(f"denoiser {name!r} has no parameter grid to tune; pass grid=")
    fixed = dict(fixed or {})
    done: dict[tuple, float] = {}
    keys = list(grid[0])

    def run(combos: tuple[dict[str, float], ...]) -> None:
        for kw in combos:
            key = tuple(float(kw[k]) for k in keys)
            if key not in done:
                done[key] = psnr(cls(**kw, **fixed)(ld), ref, window=window)

    run(grid)
    axes = _axes_of(grid)
    steps = dict.fromkeys(keys, 0)
    while True:
        key_best = max(done, key=done.__getitem__)
        best = dict(zip(keys, key_best, strict=True))
        grew = False
        for k, vals in axes.items():
            if not extend or len(vals) < 2 or steps[k] >= max_extend:
                continue
            if best[k] in (vals[0], vals[-1]):
                new = _step_out(vals, low=best[k] == vals[0])
                lo, hi = cls.limits.get(k, (0.0, math.inf))
                if not math.isfinite(new) or new <= lo or new > hi:
                    continue
                axes[k] = sorted({*vals, new})
                steps[k] += 1
                grew = True
                log.info("tune %s: %s=%g on the grid edge, trying %g", name, k, best[k], new)
        if not grew:
            break
        run(_product({k: tuple(v) for k, v in axes.items()}))
    scores = [(dict(zip(keys, key, strict=True)), val) for key, val in done.items()]
    edges = grid_edges(best, scores)
    if edges:
        msg = (f"tune {name}: best {best} is on the edge of the tried values for {edges}; the optimum may "
               "lie outside the grid: widen it (grid=...)")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    log.info("tuned %s: %s (PSNR %.2f dB)", name, best, done[key_best])
    return best, scores
