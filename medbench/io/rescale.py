"""16-bit storage of float pixel values: RescaleSlope/Intercept that round-trip to stored precision.

The slope and intercept used for quantisation are the values a header holds after the 16-character
DS formatting, so nothing is lost between what is computed and what is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.valuerep import format_number_as_ds

from medbench.errors import InputError
from medbench.io import lut


@dataclass(frozen=True)
class Rescale:
    """How float values map to stored 16-bit integers: ``value = slope * stored + intercept``."""

    slope: float
    intercept: float
    signed: bool

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.signed else np.uint16)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Stored integers for ``values`` (rounded to nearest, clipped to the 16-bit range)."""
        info = np.iinfo(self.dtype)
        stored = np.rint((np.asarray(values, dtype=np.float64) - self.intercept) / self.slope)
        return np.clip(stored, info.min, info.max).astype(self.dtype)

    def restore(self, stored: np.ndarray) -> np.ndarray:
        """The values a reader gets back from ``stored``."""
        return lut.rescale(stored, self.slope, self.intercept)


def _ds_float(value: float) -> float:
    """``value`` as it survives a round trip through a 16-character DS string."""
    return float(format_number_as_ds(float(value)))


_GRID_STEPS = (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 1000)


def choose_rescale(values: np.ndarray) -> Rescale:
    """Pick the 16-bit storage that keeps ``values`` to the best precision.

    Values on a grid (integers, halves, tenths, ... 1/1000) are stored exactly with slope
    ``1/steps``: as int16 with intercept 0 when they fit, else uint16 with the minimum as
    intercept. Anything else spreads ``[floor(min), max]`` over 0..65535 (error <= slope / 2).

    Raises:
        InputError: Non-finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        raise InputError("pixel values to write must be finite and non-empty (got NaN/inf or an empty array)")
    lo, hi = float(v.min()), float(v.max())
    sample = v.reshape(-1)[:: max(1, v.size // 4096)]
    for steps in _GRID_STEPS:  # values on a grid of 1/steps (integers first): store them exactly
        if (hi - lo) * steps > 65535:
            break
        probe = sample * steps  # cheap rejection on a sample before touching every value
        if not np.allclose(probe, np.rint(probe), rtol=0.0, atol=1e-6):
            continue
        scaled = v * steps
        n = np.rint(scaled)
        if not np.allclose(scaled, n, rtol=0.0, atol=1e-6):
            continue
        slope = 1.0 / steps
        if n.min() >= -32768 and n.max() <= 32767:
            return Rescale(slope, 0.0, True)
        intercept = float(n.min()) / steps
        if _ds_float(intercept) == intercept:
            return Rescale(slope, intercept, False)
    intercept = float(np.floor(lo)) if abs(lo) < 1e15 else _ds_float(lo)
    span = hi - intercept
    if span <= 0:
        return Rescale(1.0, intercept, False)
    exact = span / 65535.0
    slope = _ds_float(exact)
    bump = 1e-15
    while slope * 65535.0 < span:  # DS formatting rounded down: nudge up until it no longer does
        bump *= 10.0
        slope = _ds_float(exact * (1.0 + bump))
    return Rescale(slope, intercept, False)


def _fixed_rescale(values: np.ndarray, slope: float, intercept: float) -> Rescale:
    slope, intercept = _ds_float(slope), _ds_float(intercept)
    if slope == 0:
        raise InputError("rescale slope must be non-zero")
    stored = np.rint((np.asarray(values, dtype=np.float64) - intercept) / slope)
    if stored.min() >= -32768 and stored.max() <= 32767:
        return Rescale(slope, intercept, True)
    if stored.min() >= 0 and stored.max() <= 65535:
        return Rescale(slope, intercept, False)
    raise InputError(f"rescale ({slope}, {intercept}) does not fit the values in 16 bits; pick a larger slope")


def _resolve_rescale(values: np.ndarray, rescale: tuple[float, float] | Rescale | None) -> Rescale:
    if rescale is None:
        return choose_rescale(values)
    if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
        raise InputError("pixel values to write must be finite (got NaN/inf)")
    if isinstance(rescale, Rescale):
        return rescale
    return _fixed_rescale(values, *rescale)
