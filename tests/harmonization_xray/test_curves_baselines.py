"""GDCE curve properties, the predictor, and the classical baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import exposure

from harmonization.xray.baselines import HARMONIZERS, create_harmonizer
from harmonization.xray.curves import (
    apply_curve,
    curve_values,
    fit_curve_to_map,
    fixed_points_error,
    is_monotone,
)
from harmonization.xray.predictor import CurvePredictor
from medbench.data.vendors import VENDOR_CURVES, VENDOR_INVERSES
from medbench.errors import InputError, UnknownNameError

params = st.lists(st.floats(-1.0, 1.0), min_size=8, max_size=8)


def test_zero_parameters_are_the_identity():
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    assert torch.equal(apply_curve(x, torch.zeros(3, 8, dtype=torch.float64)), x)


@settings(max_examples=60, deadline=None)
@given(params)
def test_curve_is_monotone_and_fixes_0_and_1(a):
    assert is_monotone(a)
    assert fixed_points_error(a) < 1e-12
    v = curve_values(a, 257)
    assert v.min() >= 0.0 and v.max() <= 1.0


def test_curve_matches_explicit_iteration():
    a = np.array([0.3, -0.2, 0.9, -1.0, 0.0, 0.5, -0.7, 0.1])
    x = np.linspace(0, 1, 11)
    ref = x.copy()
    for ai in a:
        ref = ref + ai * ref * (1 - ref)
    assert np.allclose(curve_values(a, 11), ref, atol=1e-12)


def test_gradients_flow_to_parameters_and_inputs():
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    a = torch.zeros(2, 8, requires_grad=True)
    apply_curve(x, torch.tanh(a)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("curve", ["power0.6", "log", "inverse_s"])
def test_family_can_invert_the_fixed_point_vendor_curves(curve):
    x = np.linspace(0, 1, 257)
    a, rmse = fit_curve_to_map(VENDOR_CURVES[curve](x), x, steps=600)
    assert rmse < 0.01, f"{curve}: best achievable RMSE {rmse:.4f}"
    assert np.sqrt(np.mean((curve_values(a, 257) - VENDOR_INVERSES[curve](x)) ** 2)) < 0.01


def test_family_cannot_invert_a_sigmoid_that_moves_the_end_points():
    """Documented limit: the sigmoid look maps [0, 1] onto [0.1, 0.9]; GDCE keeps 0 and 1 fixed."""
    x = np.linspace(0, 1, 257)
    _, rmse = fit_curve_to_map(VENDOR_CURVES["sigmoid"](x), x, steps=600)
    assert rmse > 0.03
    hm = create_harmonizer("histmatch").fit(x.reshape(1, 1, -1).repeat(4, 0)[:, 0][:, None, :])
    out = hm.transform(VENDOR_CURVES["sigmoid"](x)[None, None, :])[0, 0]
    assert np.sqrt(np.mean((out - x) ** 2)) < 0.01  # histogram matching undoes it


def test_predictor_shapes_range_and_identity_start():
    net = CurvePredictor(input_size=32, widths=(4, 8, 8, 8, 16))
    x = torch.rand(3, 1, 40, 50)
    a = net(x)
    assert a.shape == (3, 8) and torch.all(a.abs() <= 1)
    assert torch.allclose(net.harmonize(x), x)  # zero-initialised last layer -> identity


@pytest.mark.parametrize("name", [n for n, cls in HARMONIZERS.items() if not cls.needs])
def test_every_baseline_maps_into_unit_range(name):
    rng = np.random.default_rng(0)
    ref = rng.random((4, 24, 24)).astype(np.float32)
    h = create_harmonizer(name).fit(ref)
    out = h.transform(rng.random((3, 24, 24)).astype(np.float32) ** 2)
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1 + 1e-6
    with pytest.raises(InputError):
        h.transform(np.full((1, 4, 4), np.nan, np.float32))


def test_baselines_against_independent_computations():
    rng = np.random.default_rng(1)
    img = (rng.random((1, 32, 32)) ** 3).astype(np.float32)
    assert np.allclose(create_harmonizer("histeq").transform(img)[0], exposure.equalize_hist(img[0]), atol=1e-6)
    mm = create_harmonizer("minmax").transform(img)[0]
    assert np.allclose(mm, (img[0] - img.min()) / (img.max() - img.min()), atol=1e-6)
    z = create_harmonizer("zscore", k=3.0).transform(img)[0]
    ref = np.clip(0.5 + (img[0] - img[0].mean()) / img[0].std() / 6.0, 0, 1)
    assert np.allclose(z, ref, atol=1e-5)
    refs = (rng.random((5, 32, 32)) ** 0.5).astype(np.float32)
    matched = create_harmonizer("histmatch").fit(refs).transform(img)[0]
    assert abs(np.median(matched) - np.median(refs)) < 0.02  # takes the reference distribution
    assert np.all(np.diff(matched.ravel()[np.argsort(img.ravel())]) >= -1e-6)  # monotone in input
    with pytest.raises(UnknownNameError, match="histmatch"):
        create_harmonizer("histmach")
