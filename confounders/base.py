"""The :class:`Confounder` base class, its registry and presets.

A confounder maps a batch ``(B, C, H, W)`` of float images in [0, 1] plus one uid per sample to a
batch of the same shape, on the input's device. Randomness comes from ``(seed, confounder name,
uid)`` only, so a sample gets the same artifact whatever the batch, order or worker count.
Geometric parameters are given in pixels of a reference image (``ref_size``, 1024 by default, the
native NIH ChestX-ray14 size) and scale with the actual image size.

Example:
    >>> tag = create_confounder("tag", text="R")
    >>> out = tag(images, uids)                    # torch, batched
    >>> arr = tag.apply_numpy(img_hw, "uid-1")     # numpy, one image
    >>> tfm = tag.as_dict_transform(["image"])     # MONAI-style dict transform
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from confounders.taxonomy import MiccatPath, validate_path
from medbench.errors import InputError, UnknownNameError
from medbench.registry import Registry, did_you_mean
from medbench.utils.rng import torch_generator

logger = logging.getLogger(__name__)



class ConfounderProtocol(Protocol):
    """The contract of a ``CONFOUNDERS`` entry (a class; the registry checks these members).

    ``entry(seed=..., ref_size=..., **params)`` builds it; calling it maps a float batch
    ``(B, C, H, W)`` in [0, 1] and one uid per image to a batch of the same shape and device in
    [0, 1], with randomness from ``(seed, name, uid)`` only. :class:`Confounder` implements it.
    """

    name: ClassVar[str]
    miccat: ClassVar[MiccatPath]
    deterministic: ClassVar[bool]
    per_pixel: ClassVar[bool]

    def __call__(self, images: torch.Tensor, uids: Sequence[str], *, inplace: bool = False) -> torch.Tensor: ...

    def apply_numpy(self, images: np.ndarray, uids: str | Sequence[str]) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


#: Modules whose import registers the built-in injectors (imported on the first lookup).
BUILTIN_MODULES = ("confounders.synthetic",)
CONFOUNDERS: Registry[type[Confounder]] = Registry("confounder", builtins=BUILTIN_MODULES,
                                                   protocol=ConfounderProtocol, entry="class")

_RANGE_TOL = 1e-4
_CHUNK_ELEMS = 1 << 18  # elements per CPU work chunk (1 MiB of float32, one core's L2)


def register_confounder(name: str):
    """Class decorator: register a :class:`Confounder` subclass under ``name``; checks its MICCAT path."""

    def deco(cls: type[Confounder]) -> type[Confounder]:
        validate_path(cls.miccat)
        cls.name = name
        return CONFOUNDERS.register(name)(cls)

    return deco


def create_confounder(name: str, **kwargs: Any) -> Confounder:
    """Instantiate the confounder registered as ``name`` (or a preset name) with ``kwargs``.

    Unknown names raise :class:`medbench.errors.UnknownNameError` with close matches.
    """
    load_builtin_confounders()
    if name in PRESETS and name not in CONFOUNDERS:
        base, params = PRESETS[name]
        return CONFOUNDERS.create(base, **{**params, **kwargs})
    if name not in CONFOUNDERS:  # search both registries for the "did you mean" hint
        raise UnknownNameError(
            f"unknown confounder {name!r}: {did_you_mean(name, CONFOUNDERS.names() + list(PRESETS))}"
        )
    return CONFOUNDERS.create(name, **kwargs)


def load_builtin_confounders() -> None:
    """Import the modules that register the built-in injectors (idempotent; errors propagate)."""
    CONFOUNDERS.load_builtins()


# Presets of the papers' settings: name -> (registered confounder, parameters).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # Source Matters (Juodelyte et al. 2024): "R", white, sans-serif light, size 64,
    # top-left corner at (200, 200) on the 1024x1024 image.
    "paper-tag": ("tag", {"text": "R", "size": 64.0, "position": (200.0, 200.0), "ref_size": 1024,
                          "intensity": 1.0, "font": "sans-light"}),
    # Ideal disk of diameter 500 frequency bins in the centred 2-D FFT at 1024 px:
    # radius 250 bins = 250/512 of Nyquist.
    "paper-lowpass": ("lowpass", {"kind": "ideal", "cutoff": 250.0 / 512.0}),
    # The authors' HU/uint8 recipe (include_noise.py): confounded images get the lower photon
    # count (1.5e7 against 2e7 for the rest); the clean test set gets none.
    "paper-noise": ("hu-poisson", {"n0": 1.5e7}),
    "paper-noise-reference": ("hu-poisson", {"n0": 2.0e7}),
}


def _check_layout(images: Any, uids: Sequence[str], argname: str) -> None:
    """Type, shape, dtype and uid-count checks (no pass over the pixels)."""
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"{argname} must be a torch.Tensor (B, C, H, W); got {type(images).__name__} "
            "(use apply_numpy for numpy arrays)"
        )
    if images.ndim != 4:
        raise InputError(
            f"{argname} must have shape (B, C, H, W); got {tuple(images.shape)} "
            "(add batch/channel dims with images[None] / images[:, None])"
        )
    if not images.is_floating_point():
        raise InputError(f"{argname} must be a float tensor in [0, 1]; got {images.dtype} (divide by the max)")
    if isinstance(uids, str) or len(uids) != images.shape[0]:
        n = 1 if isinstance(uids, str) else len(uids)
        raise InputError(f"uids must be a sequence of {images.shape[0]} strings, one per image; got {n}")


def _check_range(images: torch.Tensor, argname: str) -> None:
    """Reject NaN/inf and values outside [0, 1] (one read pass)."""
    if images.numel():
        lo_t, hi_t = torch.aminmax(images)  # one pass; NaN propagates, inf shows as a bound
        lo, hi = float(lo_t), float(hi_t)
        if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
            raise InputError(f"{argname} contains NaN or inf values: clean or impute them first")
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise InputError(
                f"{argname} must lie in [0, 1]; got [{lo:.4g}, {hi:.4g}] (rescale, e.g. medbench.io.dicom.to_unit)"
            )


_MADV_HUGEPAGE = 14  # Linux <sys/mman.h>
_HUGE = 1 << 21


@functools.cache
def _libc_madvise() -> Any:
    """libc's ``madvise`` (None where the symbol is missing)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - no libc symbol
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def _new_output(images: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor like ``images``; large CPU buffers are advised onto transparent huge
    pages (Linux), as ``THP_MEM_ALLOC_ENABLE=1`` would do for every torch allocation.

    A fresh 64 MB batch otherwise costs one page fault per 4 KiB on first write, which on a VM is
    several times the cost of the copy itself; the advice only changes the page size.
    """
    out = torch.empty_like(images)
    storage = out.untyped_storage()
    nbytes = storage.nbytes()
    if out.device.type != "cpu" or nbytes < 4 * _HUGE or not sys.platform.startswith("linux"):
        return out
    madvise = _libc_madvise()
    if madvise is not None:
        ptr = storage.data_ptr()
        start, end = (ptr + _HUGE - 1) & ~(_HUGE - 1), (ptr + nbytes) & ~(_HUGE - 1)
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # advisory: failure just keeps 4 KiB pages
    return out


def check_fraction(value: float, argname: str) -> float:
    """Validate a number in [0, 1]."""
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise InputError(f"{argname} must lie in [0, 1]; got {value!r}")
    return v


def check_positive(value: float, argname: str) -> float:
    v = float(value)
    if not (v > 0 and np.isfinite(v)):
        raise InputError(f"{argname} must be a positive finite number; got {value!r}")
    return v


class Confounder:
    """Base class: subclasses set ``miccat`` and implement :meth:`apply`.

    Args:
        seed: Base seed; each sample's randomness comes from ``(seed, name, uid)``.
        ref_size: Reference image size (pixels) in which geometric parameters are given.
    """

    name: ClassVar[str] = "confounder"
    miccat: ClassVar[MiccatPath] = ()
    #: True when the artifact does not depend on the uid (no per-sample randomness).
    deterministic: ClassVar[bool] = True
    #: True when :meth:`apply` works in place without full-size temporaries (no CPU chunking).
    in_place_apply: ClassVar[bool] = False
    #: True when outputs of in-range inputs stay in [0, 1] (no final clamp needed).
    keeps_range: ClassVar[bool] = False
    #: Elements per CPU chunk: temporaries of a chunk should fit in cache.
    chunk_elems: ClassVar[int] = _CHUNK_ELEMS
    #: True when the artifact is defined per pixel of the image it is given (noise): the audit
    #: applies it at the working size instead of at ``ref_size`` (see ``confounders.audit.inject``).
    per_pixel: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0, ref_size: int = 1024) -> None:
        self.seed = int(seed)
        self.ref_size = int(check_positive(ref_size, "ref_size"))

    # -- public API ---------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, uids: Sequence[str], *, inplace: bool = False) -> torch.Tensor:
        """Return the confounded batch (B, C, H, W) in [0, 1].

        Args:
            images: Float batch in [0, 1] on any device.
            uids: One id per image; each image's randomness comes from ``(seed, name, uid)``.
            inplace: Write into ``images`` instead of a copy (saves a full-batch allocation).
        """
        _check_layout(images, uids, "images")
        ulist = [str(u) for u in uids]
        B = images.shape[0]
        cpu = images.device.type == "cpu"
        # Copy path on CPU: validate each chunk just before it is processed (it is then in cache) and
        # write the result straight into the new output, so the input is read from memory once and
        # the output written once. In place the whole batch is checked first: nothing is touched
        # before the input is known to be valid.
        chunk_check = cpu and not inplace
        if not chunk_check:
            _check_range(images, "images")
        out = images if inplace else _new_output(images)
        if B == 0:
            return out
        # On CPU work in cache-sized chunks of whole images: small temporaries are reused by the
        # allocator instead of page-faulting fresh full-batch buffers. On GPU one launch per op.
        whole = not cpu or (inplace and self.in_place_apply)
        step = B if whole else max(1, self.chunk_elems // max(1, images[0].numel()))
        for s in range(0, B, step):
            src = images[s : s + step]
            dst = src if inplace else out[s : s + step]
            if chunk_check:
                try:
                    _check_range(src, "images")
                except InputError:
                    _check_range(images, "images")  # report the whole batch's range
                    raise
            self.apply_into(src, dst, ulist[s : s + step])
            if not self.keeps_range:
                dst.clamp_(0.0, 1.0)
        return out

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        """Write the confounded ``src`` chunk into ``dst`` (same shape; ``dst is src`` in place).

        The default copies ``src`` into ``dst`` and calls :meth:`apply` on it; subclasses override
        this to read ``src`` and write ``dst`` directly (one pass fewer). The caller clamps.
        """
        if dst is not src:
            dst.copy_(src)
        res = self.apply(dst, uids)
        if res is not dst:
            dst.copy_(res)
        return dst

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:  # pragma: no cover
        """Subclass hook on a validated chunk: may write into ``images`` (already the output
        buffer) and return it, or return a new tensor; the caller clamps to [0, 1]."""
        raise NotImplementedError

    def apply_numpy(self, images: np.ndarray, uids: str | Sequence[str]) -> np.ndarray:
        """Apply to numpy images: ``(H, W)`` or ``(C, H, W)`` with one uid, or batched
        ``(B, H, W)``/``(B, C, H, W)`` with a uid sequence. Returns float32 of the same shape."""
        arr = np.asarray(images)
        single = isinstance(uids, str)
        if single:
            if arr.ndim not in (2, 3):
                raise InputError(f"images for one uid must be (H, W) or (C, H, W); got {arr.shape}")
            x = arr[None, None] if arr.ndim == 2 else arr[None]
            ulist = [uids]
        else:
            if arr.ndim not in (3, 4):
                raise InputError(f"batched images must be (B, H, W) or (B, C, H, W); got {arr.shape}")
            x = arr[:, None] if arr.ndim == 3 else arr
            ulist = list(uids)
        out = self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), ulist).numpy()
        return out.reshape(arr.shape)

    def as_dict_transform(self, keys: Sequence[str] | str, *, uid_key: str = "uid",
                          flag_key: str | None = None) -> ConfounderDict:
        """A MONAI-style dict transform applying this confounder to ``keys`` (see :class:`ConfounderDict`)."""
        return ConfounderDict(self, keys, uid_key=uid_key, flag_key=flag_key)

    def params(self) -> dict[str, Any]:
        """Constructor parameters (for configs and reports)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ---------------------------------------------------------------
    def scale(self, images: torch.Tensor) -> tuple[float, float]:
        """(y, x) factors from reference pixels to this image's pixels."""
        h, w = images.shape[-2:]
        return h / self.ref_size, w / self.ref_size

    def generator(self, uid: str, device: torch.device) -> torch.Generator:
        """Generator for one sample on ``device`` seeded by ``(seed, name, uid)``."""
        return torch_generator(self.seed, self.name, uid, device=device)

    def uniform(self, uids: Sequence[str], n: int, device: torch.device) -> torch.Tensor:
        """(B, n) uniform numbers in [0, 1), row i from sample i's own generator (on CPU, then moved)."""
        rows = [torch.rand(n, generator=torch_generator(self.seed, self.name, "u", u)) for u in uids]
        return torch.stack(rows).to(device)


class ConfounderDict:
    """Dict transform: applies a confounder to ``data[key]`` for each key, using ``data[uid_key]``.

    Items may hold a ``(C, H, W)``/``(H, W)`` tensor or numpy array. If ``flag_key`` is given, only
    items whose ``data[flag_key]`` is truthy are confounded (the audit marks the chosen samples).
    """

    def __init__(self, confounder: Confounder, keys: Sequence[str] | str, *, uid_key: str = "uid",
                 flag_key: str | None = None) -> None:
        self.confounder = confounder
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.uid_key = uid_key
        self.flag_key = flag_key

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if self.uid_key not in d:
            raise InputError(f"dict item has no {self.uid_key!r} entry: add the sample uid to each item")
        if self.flag_key is not None and not bool(d.get(self.flag_key, False)):
            return d
        uid = str(d[self.uid_key])
        for key in self.keys:
            if key not in d:
                raise InputError(f"dict item has no {key!r} entry (keys: {sorted(d)})")
            x = d[key]
            if isinstance(x, torch.Tensor):
                if x.ndim not in (2, 3):
                    raise InputError(f"{key!r} must be (C, H, W) or (H, W); got {tuple(x.shape)}")
                xb = x[None, None] if x.ndim == 2 else x[None]
                d[key] = self.confounder(xb.float(), [uid]).reshape(x.shape)
            else:
                d[key] = self.confounder.apply_numpy(np.asarray(x), uid)
        return d
