"""The uid-aware transform pipeline of the data path, built on MONAI.

Data path: table -> patient-grouped split (:mod:`medbench.data.splits`) -> ``ImageDataset`` (reads
with :func:`medbench.io.images.read_image`, windowing by the DICOM VOI or a user window, then
:func:`resize` with an optional aspect-preserving pad) -> a transform pipeline.

Pipeline steps are MONAI dictionary transforms: each takes and returns ``{"image": (C, H, W)
tensor in [0, 1], "uid": str}``, so a random step can seed itself by ``(seed, uid, epoch)``
(:func:`medbench.utils.rng.derive_seed`): an image gets the same draw whatever the worker count,
batch order or resume point, and a different draw per uid and per epoch. A uid-aware transform
says so with ``uid_aware = True``; a plain ``f(image) -> image`` (an Albumentations adapter, a
lambda) is wrapped by :class:`ImageOnly`. Confounders plug in as transforms too
(``confounders.injection.ConfounderTransform``). The datasets call ``set_epoch`` on their
transform when the engine starts an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from medbench.errors import InputError
from medbench.utils.rng import derive_seed

Data = dict[str, Any]
TensorFn = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class UidTransform(Protocol):
    """A transform of ``{"image", "uid"}`` dicts; random ones seed by ``(seed, uid, epoch)``."""

    uid_aware: bool

    def __call__(self, data: Data) -> Data: ...


def _plain(t: Any) -> torch.Tensor:
    """A plain float tensor (MONAI returns MetaTensors)."""
    if hasattr(t, "as_tensor"):
        t = t.as_tensor()
    return torch.as_tensor(t).float()


def apply_transform(transform: Any, image: torch.Tensor, uid: str) -> torch.Tensor:
    """Apply ``transform`` to one image: uid-aware ones get ``{"image", "uid"}``, others the tensor."""
    if transform is None:
        return image
    if getattr(transform, "uid_aware", False):
        return _plain(transform({"image": image, "uid": str(uid)})["image"])
    return transform(image)


def set_epoch(transform: Any, epoch: int) -> None:
    """Tell ``transform`` (and the steps of a :class:`Pipeline`) which epoch is running."""
    fn = getattr(transform, "set_epoch", None)
    if callable(fn):
        fn(int(epoch))


class ImageOnly:
    """A plain ``f(image) -> image`` as a pipeline step (it sees no uid)."""

    uid_aware = True

    def __init__(self, fn: TensorFn) -> None:
        self.fn = fn

    def __call__(self, data: Data) -> Data:
        return {**data, "image": self.fn(data["image"])}

    def set_epoch(self, epoch: int) -> None:
        set_epoch(self.fn, epoch)

    def __repr__(self) -> str:
        return f"ImageOnly({self.fn!r})"


class Pipeline:
    """Steps applied in order through ``monai.transforms.Compose``.

    Args:
        steps: uid-aware transforms or plain ``f(image) -> image`` callables (wrapped in
            :class:`ImageOnly`).
    """

    uid_aware = True

    def __init__(self, steps: Sequence[Any]) -> None:
        from monai.transforms import Compose

        for s in steps:
            if not callable(s):
                raise InputError(f"pipeline step {s!r} is not callable: pass transforms or functions")
        self.steps = [s if getattr(s, "uid_aware", False) else ImageOnly(s) for s in steps]
        self._compose = Compose(self.steps, map_items=False)

    def __call__(self, data: Data) -> Data:
        if "uid" not in data:
            raise InputError("a uid-aware pipeline needs {'image', 'uid'}: call it through a medbench dataset")
        return self._compose(dict(data))

    def set_epoch(self, epoch: int) -> None:
        for s in self.steps:
            set_epoch(s, epoch)

    def __repr__(self) -> str:
        return f"Pipeline({self.steps!r})"


class RandomAffine:
    """Training augmentation: rotation, shift, shear, zoom (MONAI ``RandAffine``) and a horizontal
    flip (``RandFlip``), drawn from a generator seeded by ``(seed, uid, epoch)``.

    Args:
        rotation: Maximum rotation in degrees (uniform in ``[-rotation, rotation]``).
        shift: Maximum shift as a fraction of the height/width.
        shear: Maximum shear coefficient (MONAI's unit: the off-diagonal of the shear matrix).
        zoom: Scale factors drawn per axis from ``[1 - zoom, 1 + zoom]``.
        flip: Flip left-right with probability 0.5.
        seed: Base seed.
        padding_mode: Pixels brought in from outside: "border" (nearest edge value, as Keras'
            ``fill_mode="nearest"``), "zeros" or "reflection".
    """

    uid_aware = True

    def __init__(self, *, rotation: float = 10.0, shift: float = 0.1, shear: float = 0.1, zoom: float = 0.1,
                 flip: bool = True, seed: int = 0, padding_mode: str = "border") -> None:
        for name, v in (("rotation", rotation), ("shift", shift), ("shear", shear), ("zoom", zoom)):
            if not (math.isfinite(float(v)) and float(v) >= 0):
                raise InputError(f"RandomAffine {name} must be a finite number >= 0; got {v!r}")
        if zoom >= 1:
            raise InputError(f"RandomAffine zoom must be < 1; got {zoom}")
        if padding_mode not in ("border", "zeros", "reflection"):
            raise InputError(f"padding_mode {padding_mode!r}: use border, zeros or reflection")
        self.rotation, self.shift, self.shear, self.zoom = float(rotation), float(shift), float(shear), float(zoom)
        self.flip, self.seed, self.padding_mode = bool(flip), int(seed), padding_mode
        self.epoch = 0
        self._affine: dict[tuple[int, int], Any] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _for_size(self, hw: tuple[int, int]) -> Any:
        from monai.transforms import RandAffine

        if hw not in self._affine:
            self._affine[hw] = RandAffine(
                prob=1.0, rotate_range=(math.radians(self.rotation),), shear_range=(self.shear, self.shear),
                translate_range=(self.shift * hw[0], self.shift * hw[1]), scale_range=(self.zoom, self.zoom),
                mode="bilinear", padding_mode=self.padding_mode)
        return self._affine[hw]

    def __call__(self, data: Data) -> Data:
        from monai.transforms import RandFlip

        img = data["image"]
        if img.ndim != 3:
            raise InputError(f"RandomAffine takes one image (C, H, W); got shape {tuple(img.shape)}")
        state = np.random.RandomState(derive_seed(self.seed, "augment", data["uid"], self.epoch) % 2**32)
        affine = self._for_size((int(img.shape[-2]), int(img.shape[-1])))
        affine.set_random_state(state=state)
        out = _plain(affine(img.float()))
        if self.flip:
            flip = RandFlip(prob=0.5, spatial_axis=1)
            flip.set_random_state(state=state)
            out = _plain(flip(out))
        return {**data, "image": out.clamp_(0.0, 1.0).to(img.dtype)}

    def __repr__(self) -> str:
        return (f"RandomAffine(rotation={self.rotation}, shift={self.shift}, shear={self.shear}, zoom={self.zoom}, "
                f"flip={self.flip}, seed={self.seed}, padding_mode={self.padding_mode!r})")


def size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as ``(h, w)`` (None stays None)."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise InputError(f"size must be a positive number of pixels (got {size})")
    return (h, w)


def resize(image: torch.Tensor, size: int | tuple[int, int] | None, *, pad: bool = False) -> torch.Tensor:
    """Resize a ``(C, H, W)`` image (bilinear, antialiased).

    Args:
        image: The image.
        size: Target ``(h, w)`` (an int: square); None keeps the size.
        pad: Keep the aspect ratio: scale by ``min(h / H, w / W)`` and centre the result on a
            zero (black) canvas with MONAI ``SpatialPad``; False stretches to ``(h, w)``.
    """
    hw = size_hw(size)
    if hw is None or tuple(image.shape[-2:]) == hw:
        return image
    if not pad:
        return F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0]
    from monai.transforms import SpatialPad

    h0, w0 = int(image.shape[-2]), int(image.shape[-1])
    scale = min(hw[0] / h0, hw[1] / w0)
    inner = (min(hw[0], max(1, round(h0 * scale))), min(hw[1], max(1, round(w0 * scale))))
    if inner != (h0, w0):
        image = F.interpolate(image[None], size=inner, mode="bilinear", align_corners=False, antialias=True)[0]
    return _plain(SpatialPad(spatial_size=hw, mode="constant", value=0.0)(image))


def train_transforms(*, seed: int = 0, rotation: float = 10.0, shift: float = 0.1, shear: float = 0.1,
                     zoom: float = 0.1, flip: bool = True, extra: Sequence[Any] = ()) -> Pipeline:
    """The default training pipeline: :class:`RandomAffine` then any ``extra`` steps."""
    return Pipeline([RandomAffine(rotation=rotation, shift=shift, shear=shear, zoom=zoom, flip=flip, seed=seed),
                     *extra])
