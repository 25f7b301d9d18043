"""The frequency bands of the spectral study (Lu et al. 2024): defined once, used everywhere.

A band is a ring ``lo <= r <= hi`` of the 2-D spectrum, with ``r = sqrt(fy^2 + fx^2)`` the radial
frequency in **cycles per pixel** (``fy, fx`` from ``numpy.fft.fftfreq``; Nyquist = 0.5 per axis).
This is the unit of :func:`transferability.spectral.radial_psd` and of the shortcut experiment's
patterns (:func:`transferability.spectral.band_limited_pattern`).

The frequency-pattern confounder (:class:`confounders.frequency.FrequencyPattern`, "the spectral
study's frequency shortcut") measures radii as fractions of Nyquist per axis,
``r_N = sqrt((fy / 0.5)^2 + (fx / 0.5)^2) = 2 r``; it takes the same bands through
:meth:`FrequencyBand.nyquist_fraction`, so a "mid" pattern injected by an audit and a "mid"
pattern of the shortcut experiment cover the same frequencies.

History: the two packages used to define their own tables. Low and high agreed once the units
were converted ((0.02, 0.12) and (0.6, 0.9) of Nyquist = (0.01, 0.06) and (0.3, 0.45) cycles/pixel);
mid differed ((0.25, 0.45) of Nyquist = (0.125, 0.225) cycles/pixel against (0.12, 0.2)). The
design notes give no band edges and the authors' code at hand (DovileDo/transferability-in-medical-
imaging) has no spectral part, so the spectral study's table, which owns the experiment, is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple


class FrequencyBand(NamedTuple):
    """A ring band ``(lo, hi)`` in cycles per pixel (unpacks as ``lo, hi = band``)."""

    lo: float
    hi: float

    def nyquist_fraction(self) -> tuple[float, float]:
        """The band as fractions of the Nyquist frequency (the confounders' unit): ``2 lo, 2 hi``."""
        return (2.0 * self.lo, 2.0 * self.hi)


#: The low / mid / high bands of the frequency-shortcut patterns, in cycles per pixel (read-only).
BANDS: Mapping[str, FrequencyBand] = MappingProxyType({
    "low": FrequencyBand(0.01, 0.06),
    "mid": FrequencyBand(0.12, 0.2),
    "high": FrequencyBand(0.3, 0.45),
})

__all__ = ["BANDS", "FrequencyBand"]
