"""Synthetic confounder injectors (batched, torch-native, deterministic per ``(seed, uid)``).

Importing this module registers every injector in :data:`CONFOUNDERS`. The implementations live in
small modules by kind: :mod:`confounders.tags`, :mod:`confounders.frequency`,
:mod:`confounders.noise`, :mod:`confounders.artifacts`.
"""

from __future__ import annotations

from confounders.artifacts import Collimation, DrainLine, JpegCompression, VendorCurve, vendor_curve
from confounders.base import (
    CONFOUNDERS,
    PRESETS,
    Confounder,
    ConfounderDict,
    create_confounder,
    register_confounder,
)
from confounders.frequency import BANDS, FrequencyPattern, LowPass, band_pattern, lowpass_mask
from confounders.noise import GaussianNoise, HUPoissonNoise, PoissonNoise
from confounders.tags import LateralityMarker, TextBlock, TextTag, render_glyph

__all__ = [
    "BANDS",
    "CONFOUNDERS",
    "PRESETS",
    "Collimation",
    "Confounder",
    "ConfounderDict",
    "DrainLine",
    "FrequencyPattern",
    "GaussianNoise",
    "JpegCompression",
    "LateralityMarker",
    "LowPass",
    "PoissonNoise",
    "HUPoissonNoise",
    "TextBlock",
    "TextTag",
    "VendorCurve",
    "band_pattern",
    "create_confounder",
    "lowpass_mask",
    "register_confounder",
    "render_glyph",
    "vendor_curve",
]
