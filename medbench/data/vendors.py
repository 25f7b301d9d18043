"""Vendor "looks": monotone intensity curves on [0, 1] and the detector noise of each Manufacturer.

Physics. A digital radiograph is first a *linear* detector signal (proportional to the
transmitted dose, here displayed so that larger = more attenuation). Its noise - quantum
(Poisson) noise of the X-ray photons plus detector electronics - is born in that linear signal.
Only then does the vendor's image processing apply its non-linear intensity curve (gamma,
logarithmic, contrast "S"/inverse-S look-up tables). A vendor look is therefore applied as::

    y = curve(clip(x + detector_noise, 0, 1))

and not as ``curve(x) + noise``: the curve shapes the noise together with the anatomy.

Why it matters. Vendors here differ only by their processing curve (the premise of GDCE, which
learns a global curve per image): every Manufacturer has the same detector noise SD, so the
exact inverse curve maps a vendor's image back onto the reference look *including its noise*
(with the same uid and seed, onto the very same pixels). With post-curve noise of a different SD
per vendor, the inverse curve would amplify that noise (up to 2.6x for the log look near 1) and
no global intensity curve could undo the difference, putting the reference AUC out of GDCE's
reach for reasons that have nothing to do with intensity dynamics.

``VENDOR_CURVES`` maps a curve name to a vectorised monotone map of [0, 1] into [0, 1];
``VENDOR_INVERSES`` holds exact inverses where they exist (the sigmoid is inverted on its range
[0.1, 0.9] and clipped outside). ``VENDORS`` maps a Manufacturer name to ``(curve, noise)``, the
noise being the SD of the Gaussian detector noise added to the linear signal before the curve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Curve = Callable[[np.ndarray], np.ndarray]

_LOG_K = 9.0
_INVS_A = 0.7  # share of the linear term in the inverse-S cubic (0.7: mild enough for the
# GDCE curve family to invert it within RMSE 0.005; stronger inverse-S looks need an S-shaped inverse
# that 8 quadratic steps cannot follow)
_SIG_GAIN = 10.0
_SIG_LO, _SIG_HI = 0.1, 0.9


def _logistic(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


_L_LO = float(_logistic(np.asarray(-0.5 * _SIG_GAIN)))
_L_HI = float(_logistic(np.asarray(0.5 * _SIG_GAIN)))


def identity(x: np.ndarray) -> np.ndarray:
    """The reference look: ``x``."""
    return np.asarray(x, dtype=np.float32).copy()


def power06(x: np.ndarray) -> np.ndarray:
    """Gamma-like brightening: ``x ** 0.6``."""
    return np.power(np.clip(x, 0.0, 1.0), 0.6).astype(np.float32)


def power06_inv(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`power06`."""
    return np.power(np.clip(y, 0.0, 1.0), 1.0 / 0.6).astype(np.float32)


def log_curve(x: np.ndarray) -> np.ndarray:
    """Logarithmic look: ``log1p(k x) / log1p(k)`` with k = 9."""
    return (np.log1p(_LOG_K * np.clip(x, 0.0, 1.0)) / np.log1p(_LOG_K)).astype(np.float32)


def log_curve_inv(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`log_curve`."""
    return (np.expm1(np.clip(y, 0.0, 1.0) * np.log1p(_LOG_K)) / _LOG_K).astype(np.float32)


def inverse_s(x: np.ndarray) -> np.ndarray:
    """Inverse-S look, steep at both ends and flat in the middle, fixing 0 and 1.

    ``f(x) = (1 + a t + (1 - a) t**3) / 2`` with ``t = 2x - 1`` and ``a = 0.7``.
    """
    t = 2.0 * np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) - 1.0
    return (0.5 * (1.0 + t * (_INVS_A + (1.0 - _INVS_A) * (t * t)))).astype(np.float32)


def inverse_s_inv(y: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`inverse_s` (Cardano's formula for the one real root)."""
    s = 2.0 * np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0) - 1.0
    p = _INVS_A / (1.0 - _INVS_A)
    q = -s / (1.0 - _INVS_A)
    disc = np.sqrt(q * q / 4.0 + p**3 / 27.0)
    t = np.cbrt(-q / 2.0 + disc) + np.cbrt(-q / 2.0 - disc)
    return np.clip(0.5 * (t + 1.0), 0.0, 1.0).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """S-shaped logistic look mapping [0, 1] onto [0.1, 0.9] (does not fix 0 and 1).

    ``0.1 + 0.8 * (L(10 (x - 0.5)) - L(-5)) / (L(5) - L(-5))`` with ``L`` the logistic function.
    """
    z = _SIG_GAIN * (np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) - 0.5)
    s = (_logistic(z) - _L_LO) / (_L_HI - _L_LO)
    return (_SIG_LO + (_SIG_HI - _SIG_LO) * s).astype(np.float32)


def sigmoid_inv(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`sigmoid` on [0.1, 0.9]; values outside are clipped to that range first."""
    y = np.clip(np.asarray(y, dtype=np.float64), _SIG_LO, _SIG_HI)
    s = (y - _SIG_LO) / (_SIG_HI - _SIG_LO)
    lval = np.clip(_L_LO + s * (_L_HI - _L_LO), 1e-12, 1 - 1e-12)
    z = np.log(lval / (1.0 - lval))
    return np.clip(z / _SIG_GAIN + 0.5, 0.0, 1.0).astype(np.float32)


VENDOR_CURVES: dict[str, Curve] = {
    "identity": identity,
    "power0.6": power06,
    "log": log_curve,
    "inverse_s": inverse_s,
    "sigmoid": sigmoid,
}

VENDOR_INVERSES: dict[str, Curve] = {
    "identity": identity,
    "power0.6": power06_inv,
    "log": log_curve_inv,
    "inverse_s": inverse_s_inv,
    "sigmoid": sigmoid_inv,
}


class VendorLook(NamedTuple):
    """A Manufacturer's look: curve name (key of ``VENDOR_CURVES``) and the SD of the Gaussian
    detector noise added to the linear signal before the curve."""

    curve: str
    noise: float


DETECTOR_NOISE = 0.010  # SD of the linear-domain detector noise, the same for every vendor

VENDORS: dict[str, VendorLook] = {
    "RefVendor": VendorLook("identity", DETECTOR_NOISE),
    "VendorPow": VendorLook("power0.6", DETECTOR_NOISE),
    "VendorLog": VendorLook("log", DETECTOR_NOISE),
    "VendorInvS": VendorLook("inverse_s", DETECTOR_NOISE),
    "VendorSig": VendorLook("sigmoid", DETECTOR_NOISE),
}

# Manufacturer -> (ManufacturerModelName, Modality)
VENDOR_MODELS: dict[str, tuple[str, str]] = {
    "RefVendor": ("RefDR 1000", "DX"),
    "VendorPow": ("PowerView X3", "DX"),
    "VendorLog": ("LogCR 7", "CR"),
    "VendorInvS": ("InvS Digital 2", "DX"),
    "VendorSig": ("SigmaCR Plus", "CR"),
}

# Default mix when a vendor is not forced (probabilities, summing to 1).
DEFAULT_VENDOR_MIX: dict[str, float] = {
    "RefVendor": 0.4,
    "VendorPow": 0.15,
    "VendorLog": 0.15,
    "VendorInvS": 0.15,
    "VendorSig": 0.15,
}


def check_vendor(name: str) -> VendorLook:
    """Return the look of Manufacturer ``name`` or raise InputError listing the known names."""
    from medbench.errors import InputError
    from medbench.registry import did_you_mean

    try:
        return VENDORS[name]
    except KeyError:
        raise InputError(
            f"unknown vendor {name!r} (argument `vendor`): {did_you_mean(name, list(VENDORS))}"
        ) from None


def apply_vendor_look(
    x: np.ndarray, vendor: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Add ``vendor``'s detector noise to a linear image in [0, 1] (when ``rng`` is given), then
    apply its curve: ``curve(clip(x + noise, 0, 1))``.

    Args:
        x: Linear (reference-look) image, values in [0, 1].
        vendor: Manufacturer name (key of ``VENDORS``).
        rng: Generator of the detector noise; ``None`` applies the curve alone (noise-free).

    Returns:
        float32 image of ``x``'s shape in [0, 1].
    """
    look = check_vendor(vendor)
    lin = np.asarray(x, dtype=np.float32)
    if rng is not None and look.noise > 0:
        lin = lin + rng.standard_normal(lin.shape, dtype=np.float32) * np.float32(look.noise)
    y = VENDOR_CURVES[look.curve](np.clip(lin, 0.0, 1.0))
    return np.clip(y, 0.0, 1.0).astype(np.float32)
