"""Classical intensity harmonization baselines, as fitted transforms on grey images in [0, 1].

Two kinds:
- per-image normalisations (min-max, DICOM window, z-score, histogram equalisation, CLAHE): they
  change every image, the reference vendor's too, so a downstream classifier must be trained on
  normalised reference images (``maps_to_reference = False``);
- maps onto the reference look (histogram matching to the reference vendor's mean histogram,
  z-score to the reference statistics, and GDCE): reference images pass (almost) unchanged and the
  reference classifier is used as it is (``maps_to_reference = True``).

Every entry is registered in ``HARMONIZERS`` (GDCE in :mod:`harmonization.xray.gdce_harmonizer`);
``create_harmonizer(name, **kw)`` builds one. :class:`HarmonizerProtocol` is the contract.
``load_harmonizer(path)`` reads a fitted model file back through the registry (the entry named by
the file's ``"harmonizer"`` key; files without it are GDCE models), which ``harmonize apply`` uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from medbench.errors import InputError
from medbench.registry import Registry
from medbench.runs.checkpoint import load_checkpoint


class HarmonizerProtocol(Protocol):
    """The contract of a ``HARMONIZERS`` entry (a class; :class:`Harmonizer` implements it).

    ``entry(**settings)`` builds it, ``fit(reference_images)`` fits it, ``transform(images)``
    maps grey ``(N, H, W)`` images in [0, 1] to the same shape in [0, 1].

    Attributes:
        maps_to_reference: True when reference images pass (almost) unchanged, so the reference
            classifier is used as it is; False for per-image normalisations (retrained on them).
        needs: Inputs beyond reference images that fitting needs (empty for the baselines; GDCE:
            a reference classifier and labelled source-vendor images, given by ``harmonize fit``).
        label: Short name written into the headers of derived images (``harmonize apply``).
        reference: The vendor whose images pass unchanged ("" when none is named).

    ``from_state(state, path)`` rebuilds a fitted entry from its model file (a weights-only dict,
    see :func:`load_harmonizer`); ``check_vendor(vendor, where)`` raises :class:`InputError` when
    the fitted entry has nothing for images of ``vendor``; ``transform`` takes the images' vendor
    (ignored by per-image normalisations).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    maps_to_reference: bool
    needs: ClassVar[frozenset[str]]
    reference: str

    def fit(self, reference: np.ndarray) -> Any: ...

    def transform(self, images: np.ndarray, vendor: str | None = None) -> np.ndarray: ...

    def check_vendor(self, vendor: str, where: str) -> None: ...

    @classmethod
    def from_state(cls, state: dict[str, Any], path: Path) -> Any: ...


#: Modules whose import registers the built-in harmonizers (imported on the first lookup).
BUILTIN_MODULES = ("harmonization.xray.baselines", "harmonization.xray.gdce_harmonizer")
HARMONIZERS: Registry[Any] = Registry("harmonizer", builtins=BUILTIN_MODULES, protocol=HarmonizerProtocol,
                                      entry="class")


def _check(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise InputError(f"expected grey images (N, H, W) or (H, W), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("images contain NaN/inf: fix the decoding before harmonising")
    return x


class Harmonizer:
    """Base class: ``fit(reference_images)`` then ``transform(images)`` -> images in [0, 1]."""

    name = "base"
    label = "base"
    maps_to_reference = False
    needs: ClassVar[frozenset[str]] = frozenset()
    reference = ""

    def fit(self, reference: np.ndarray) -> Harmonizer:
        return self

    def transform(self, images: np.ndarray, vendor: str | None = None) -> np.ndarray:
        x = _check(images)
        return np.stack([self._one(im) for im in x]).astype(np.float32)

    def check_vendor(self, vendor: str, where: str) -> None:
        """Every vendor is handled alike (per-image normalisations)."""

    @classmethod
    def from_state(cls, state: dict[str, Any], path: Path) -> Harmonizer:
        """Rebuild a fitted entry from its model file; entries without model files refuse."""
        raise InputError(f"{path}: the {cls.name!r} harmonizer is not read from model files; pass a "
                         "model.pt written by `medbench harmonize fit`")

    def _one(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.transform(images)


@HARMONIZERS.register("minmax")
class MinMax(Harmonizer):
    """Per-image min-max stretch to [0, 1]."""

    name = "minmax"

    def _one(self, image: np.ndarray) -> np.ndarray:
        lo, hi = float(image.min()), float(image.max())
        return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


@HARMONIZERS.register("window")
class Window(Harmonizer):
    """Linear window (center, width) clipped to [0, 1].

    Three sources of the window, in order: an explicit ``center``/``width``; the DICOM VOI window
    (``dicom=True``: the images were already mapped through each file's own WindowCenter/Width by
    :func:`harmonization.xray.pipeline.load_images`, so the window is the identity plus clipping
    on them); else a per-image percentile stretch (``percentiles``), a fallback for files
    without a window. ``harmonize fit`` uses ``dicom=True`` when every image has a DICOM window.
    """

    name = "window"

    def __init__(self, center: float | None = None, width: float | None = None,
                 percentiles: tuple[float, float] = (1.0, 99.0), dicom: bool = False) -> None:
        self.center, self.width, self.percentiles, self.dicom = center, width, percentiles, dicom

    def _one(self, image: np.ndarray) -> np.ndarray:
        if self.center is not None and self.width is not None:
            lo, hi = self.center - self.width / 2, self.center + self.width / 2
        elif self.dicom:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = np.percentile(image, self.percentiles)
        return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


@HARMONIZERS.register("zscore")
class ZScore(Harmonizer):
    """Per-image z-score, mapped back to [0, 1] as ``0.5 + z / (2 k)`` (k = 3 SDs) and clipped.

    With ``to_reference=True`` the image is given the reference vendor's mean and SD instead
    (a map onto the reference look).
    """

    name = "zscore"

    def __init__(self, k: float = 3.0, to_reference: bool = False) -> None:
        self.k = k
        self.to_reference = to_reference
        self.maps_to_reference = to_reference
        self.ref_mean, self.ref_std = 0.5, 1.0 / (2 * k)

    def fit(self, reference: np.ndarray) -> ZScore:
        if self.to_reference:
            ref = _check(reference)
            self.ref_mean = float(ref.mean(axis=(1, 2)).mean())
            self.ref_std = float(ref.std(axis=(1, 2)).mean())
        return self

    def _one(self, image: np.ndarray) -> np.ndarray:
        z = (image - image.mean()) / max(float(image.std()), 1e-6)
        return np.clip(self.ref_mean + z * self.ref_std, 0.0, 1.0)


@HARMONIZERS.register("histeq")
class HistEq(Harmonizer):
    """Global histogram equalisation (scikit-image)."""

    name = "histeq"

    def __init__(self, nbins: int = 256) -> None:
        self.nbins = nbins

    def _one(self, image: np.ndarray) -> np.ndarray:
        from skimage import exposure

        return exposure.equalize_hist(image, nbins=self.nbins)


@HARMONIZERS.register("clahe")
class Clahe(Harmonizer):
    """Contrast-limited adaptive histogram equalisation (scikit-image)."""

    name = "clahe"

    def __init__(self, clip_limit: float = 0.01, kernel_size: int | None = None) -> None:
        self.clip_limit, self.kernel_size = clip_limit, kernel_size

    def _one(self, image: np.ndarray) -> np.ndarray:
        from skimage import exposure

        return exposure.equalize_adapthist(np.clip(image, 0, 1), clip_limit=self.clip_limit,
                                           kernel_size=self.kernel_size)


@HARMONIZERS.register("histmatch")
class HistogramMatch(Harmonizer):
    """Match each image's histogram to the reference vendor's mean histogram (quantile mapping)."""

    name = "histmatch"
    maps_to_reference = True

    def __init__(self, n_quantiles: int = 512) -> None:
        self.n_quantiles = n_quantiles
        self.ref_quantiles: np.ndarray | None = None

    def fit(self, reference: np.ndarray) -> HistogramMatch:
        ref = _check(reference)
        q = np.linspace(0.0, 1.0, self.n_quantiles)
        # the mean histogram's quantile function = the pooled reference pixels' quantiles
        self.ref_quantiles = np.quantile(ref.reshape(-1), q).astype(np.float64)
        return self

    def _one(self, image: np.ndarray) -> np.ndarray:
        if self.ref_quantiles is None:
            raise InputError("histmatch must be fitted on reference-vendor images first (call fit)")
        flat = image.reshape(-1)
        order = np.argsort(flat, kind="stable")
        ranks = np.empty(flat.size, dtype=np.float64)
        ranks[order] = (np.arange(flat.size) + 0.5) / flat.size
        q = np.linspace(0.0, 1.0, self.n_quantiles)
        return np.interp(ranks, q, self.ref_quantiles).reshape(image.shape)


#: The model-file key naming the harmonizer that wrote it (absent: a GDCE model, the only writer so far).
MODEL_KEY = "harmonizer"
DEFAULT_MODEL = "gdce"


def load_harmonizer(path: str | os.PathLike[str]) -> Harmonizer:
    """The fitted harmonizer in the model file ``path``, built by its ``HARMONIZERS`` entry.

    Raises:
        InputError: the file is missing, unreadable, or names an entry that is not read from files.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"GDCE model {p} not found: train one with `medbench harmonize fit`")
    state = load_checkpoint(p, fix="train a GDCE model with `medbench harmonize fit`")
    return HARMONIZERS.get(str(state.get(MODEL_KEY, DEFAULT_MODEL))).from_state(state, p)


def create_harmonizer(name: str, **kwargs: Any) -> Harmonizer:
    """Build a registered harmonizer by name ("did you mean" on typos)."""
    return HARMONIZERS.create(name, **kwargs)
