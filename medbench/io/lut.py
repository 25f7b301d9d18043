"""Plain array functions for the DICOM grey-level pipeline: bit masking, rescale, windowing.

Order of operations (DICOM PS3.3 C.11): stored values -> modality LUT (RescaleSlope/Intercept,
e.g. to HU) -> VOI LUT or window -> presentation (MONOCHROME1 shown inverted).
"""

from __future__ import annotations

import numpy as np

from medbench.errors import InputError


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value representable in ``bits_stored`` bits."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def mask_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep only the low ``bits_stored`` bits of integer pixels (sign-extended when ``signed``).

    Bits above BitsStored may hold overlays or garbage; this clears them. It is idempotent, so it
    is safe whether or not the decoder already did it.
    """
    if arr.dtype.kind not in "iu":
        return arr
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    container = arr.dtype.itemsize * 8
    if bits_stored <= 0 or bits_stored >= container:
        return arr
    if signed:
        signed_dtype = np.dtype(f"i{arr.dtype.itemsize}")
        shift = container - bits_stored
        as_signed = arr.view(signed_dtype) if arr.dtype != signed_dtype else arr
        return (as_signed << shift) >> shift
    return arr & np.array((1 << bits_stored) - 1, dtype=arr.dtype)


def per_frame(values: np.ndarray, ndim_image: int) -> np.ndarray:
    """Reshape per-frame parameters ``(F,)`` to broadcast over ``(F, H, W[, C])`` stacks."""
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * ndim_image)


def rescale(arr: np.ndarray, slope: float | np.ndarray, intercept: float | np.ndarray) -> np.ndarray:
    """Modality LUT ``slope * stored + intercept`` in float64 (exact for integer HU)."""
    return np.asarray(arr, dtype=np.float64) * slope + intercept


def invert(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """Mirror ``x`` inside ``[lo, hi]`` (MONOCHROME1 -> larger values brighter)."""
    return (lo + hi) - x


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI window mapped to [0, 1] (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID).

    Raises:
        InputError: ``width`` is not positive (below 1 for LINEAR).
    """
    x = np.asarray(x, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise InputError(f"window width must be > 0 for SIGMOID, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise InputError(f"window width must be > 0, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise InputError(f"window width must be >= 1 for LINEAR, got {width}")
    if width == 1:  # a threshold at center - 0.5
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def to_unit(pixels: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Scale pixels to float32 in [0, 1].

    Args:
        pixels: Any real array (e.g. :func:`medbench.io.read_dicom` output, HU for CT).
        window: ``(center, width)``: values below ``center - width/2`` map to 0, above
            ``center + width/2`` to 1, linear between. ``None``: min-max over the finite values
            (a constant image gives zeros).

    Returns:
        float32 array of the same shape; NaN/inf become 0 (min-max) or are clipped (window).
    """
    x = np.asarray(pixels, dtype=np.float64)
    if window is not None:
        center, width = (float(v) for v in window)
        if not width > 0:
            raise InputError(f"window width must be > 0, got {width}")
        y = (x - (center - width / 2.0)) / width
        y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(y, 0.0, 1.0).astype(np.float32)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.float32)
    lo = float(x[finite].min())
    hi = float(x[finite].max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    y = np.where(finite, (x - lo) / (hi - lo), 0.0)
    return np.clip(y, 0.0, 1.0).astype(np.float32)
