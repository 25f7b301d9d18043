"""Vendor curves: monotone maps of [0, 1] into [0, 1], exact inverses, the documented shapes."""

from __future__ import annotations

import numpy as np
import pytest

from medbench.data.synthetic import VENDOR_CURVES, VENDOR_INVERSES, VENDORS, apply_vendor_look
from medbench.errors import InputError

X = np.linspace(0.0, 1.0, 2001, dtype=np.float32)


@pytest.mark.parametrize("name", sorted(VENDOR_CURVES))
def test_curve_monotone_in_unit_interval(name: str) -> None:
    y = VENDOR_CURVES[name](X)
    assert y.shape == X.shape
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.all(np.diff(y.astype(np.float64)) >= 0)
    assert y[-1] - y[0] > 0.5  # not a degenerate constant


def test_required_curves_and_formulas() -> None:
    assert {"identity", "power0.6", "log", "inverse_s", "sigmoid"} <= set(VENDOR_CURVES)
    np.testing.assert_allclose(VENDOR_CURVES["identity"](X), X)
    np.testing.assert_allclose(VENDOR_CURVES["power0.6"](X), X.astype(np.float64) ** 0.6, atol=1e-6)
    np.testing.assert_allclose(VENDOR_CURVES["log"](X), np.log1p(9 * X.astype(np.float64)) / np.log(10.0), atol=1e-6)


def test_inverse_s_shape() -> None:
    f = VENDOR_CURVES["inverse_s"]
    assert f(np.array([0.0]))[0] == pytest.approx(0.0, abs=1e-7)
    assert f(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-7)
    assert f(np.array([0.5]))[0] == pytest.approx(0.5, abs=1e-7)
    h = 1e-3
    slope = lambda x: (f(np.array([x + h]))[0] - f(np.array([x - h]))[0]) / (2 * h)  # noqa: E731
    assert slope(0.5) < 0.8 < 1.4 < slope(0.02) and slope(0.98) > 1.4  # flat middle, steep ends


def test_sigmoid_does_not_fix_endpoints_and_is_s_shaped() -> None:
    f = VENDOR_CURVES["sigmoid"]
    assert f(np.array([0.0]))[0] == pytest.approx(0.1, abs=1e-6)
    assert f(np.array([1.0]))[0] == pytest.approx(0.9, abs=1e-6)
    x = np.array([0.1, 0.5, 0.9])
    z = 10 * (x - 0.5)
    lg = 1 / (1 + np.exp(-z))
    lo, hi = 1 / (1 + np.exp(5)), 1 / (1 + np.exp(-5))
    np.testing.assert_allclose(f(x), 0.1 + 0.8 * (lg - lo) / (hi - lo), atol=1e-6)
    d = np.diff(f(X).astype(np.float64))
    assert d[1000] > 5 * d[10]  # steepest in the middle


@pytest.mark.parametrize("name", sorted(VENDOR_INVERSES))
def test_inverses_compose_to_identity(name: str) -> None:
    f, g = VENDOR_CURVES[name], VENDOR_INVERSES[name]
    np.testing.assert_allclose(g(f(X)), X, atol=2e-4)
    y = f(X)
    np.testing.assert_allclose(f(g(y)), y, atol=2e-4)


def test_vendor_table_and_noise_before_the_curve() -> None:
    for name, look in VENDORS.items():
        assert look.curve in VENDOR_CURVES, name
        assert 0 < look.noise < 0.05
    assert VENDORS["RefVendor"].curve == "identity"
    # vendors differ by their processing curve only: one detector, one noise level
    assert len({look.noise for look in VENDORS.values()}) == 1
    x = np.full((128, 128), 0.5, dtype=np.float32)
    y = apply_vendor_look(x, "VendorLog", np.random.default_rng(0))
    expected_mean = np.log1p(4.5) / np.log(10.0)
    assert abs(float(y.mean()) - expected_mean) < 0.002
    # noise added to the linear signal, then shaped by the curve: SD = noise * curve'(0.5)
    slope = 9.0 / (5.5 * np.log(10.0))
    assert float(y.std()) == pytest.approx(VENDORS["VendorLog"].noise * slope, rel=0.05)
    # the inverse curve gives back exactly the reference look's noisy linear signal
    ref = apply_vendor_look(x, "RefVendor", np.random.default_rng(0))
    np.testing.assert_allclose(VENDOR_INVERSES["log"](y), ref, atol=2e-4)
    np.testing.assert_array_equal(apply_vendor_look(x, "VendorLog"), VENDOR_CURVES["log"](x))  # no rng: no noise
    with pytest.raises(InputError, match="vendor"):
        apply_vendor_look(x, "VendorPw")
