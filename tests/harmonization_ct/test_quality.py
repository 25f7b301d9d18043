"""Image-quality metrics checked against independent formulas and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from harmonization.ct.quality import (
    edge_mtf,
    fov_mask,
    image_quality,
    mtf50,
    noise_sd,
    nps_2d,
    psnr,
    radial_nps,
    rmse,
    ssim,
)
from medbench.errors import InputError


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.uniform(-300, 400, size=(2, 40, 40))
    return ref + rng.normal(0, 40, size=ref.shape), ref


def test_psnr_rmse_match_numpy_formulas(pair) -> None:
    x, ref = pair
    lo, hi = -160.0, 240.0
    m = np.broadcast_to(fov_mask((40, 40)), x.shape)
    d = np.clip(x, lo, hi)[m] - np.clip(ref, lo, hi)[m]
    mse = np.mean(d**2)
    assert rmse(x, ref, window=(lo, hi)) == pytest.approx(np.sqrt(mse), rel=1e-12)
    assert psnr(x, ref, window=(lo, hi)) == pytest.approx(10 * np.log10(400.0**2 / mse), rel=1e-12)
    # raw HU without window, full mask
    full = np.ones((40, 40), bool)
    assert rmse(x, ref, window=None, mask=full) == pytest.approx(np.sqrt(np.mean((x - ref) ** 2)))
    assert psnr(ref, ref) == float("inf")


def test_ssim_matches_skimage(pair) -> None:
    from skimage.metrics import structural_similarity

    x, ref = pair
    lo, hi = -160.0, 240.0
    full = np.ones((40, 40), bool)
    ours = ssim(x[0], ref[0], window=(lo, hi), mask=full)
    theirs = structural_similarity(np.clip(x[0], lo, hi), np.clip(ref[0], lo, hi), data_range=hi - lo,
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisier = ref + 3 * (x - ref)
    assert ssim(noisier, ref) < ssim(x, ref) < 0.99


def _gaussian_edge(s: float, angle_deg: float, shape=(40, 32), x0: float = 15.3) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    t = np.deg2rad(angle_deg)
    d = (xx - x0) * np.cos(t) - (yy - shape[0] / 2) * np.sin(t)
    return 40.0 + 360.0 * 0.5 * (1 + erf(d / (np.sqrt(2) * s)))


@pytest.mark.parametrize("s_px", [0.8, 1.5, 2.5])
@pytest.mark.parametrize("angle", [-6.0, 4.0])
def test_mtf50_of_gaussian_edge_matches_analytic(s_px: float, angle: float) -> None:
    px = 0.5  # mm
    img = _gaussian_edge(s_px, angle)
    s_mm = s_px * px
    analytic = np.sqrt(np.log(2) / (2 * np.pi**2 * s_mm**2))
    for roi in (img, img.T, img[:, ::-1]):  # vertical, horizontal and falling edges
        res = edge_mtf(roi, pixel_mm=px)
        assert res.mtf50 == pytest.approx(analytic, rel=0.02)
        assert abs(abs(res.angle_deg) - abs(angle)) < 0.2
        # the whole curve follows exp(-2 pi^2 s^2 f^2) up to where it is 5%
        f = res.freqs
        ok = np.exp(-2 * np.pi**2 * s_mm**2 * f**2) > 0.05
        np.testing.assert_allclose(res.mtf[ok], np.exp(-2 * np.pi**2 * s_mm**2 * f[ok] ** 2), atol=0.02)


def test_mtf_detects_blur_and_errors() -> None:
    sharp = edge_mtf(_gaussian_edge(0.8, 5.0)).mtf50
    blurred = edge_mtf(_gaussian_edge(1.6, 5.0)).mtf50
    assert blurred == pytest.approx(sharp / 2, rel=0.03)
    with pytest.raises(InputError):
        edge_mtf(np.full((20, 20), 7.0))
    assert np.isnan(mtf50(np.array([0.0, 1.0]), np.array([1.0, 0.9])))


def test_noise_sd_and_nps_integral() -> None:
    rng = np.random.default_rng(1)
    px = 0.7
    noise = rng.normal(0, 12.0, size=(30, 32, 32))
    nps, fy, fx = nps_2d(noise, pixel_mm=px)
    df = (fy[1] - fy[0]) * (fx[1] - fx[0])
    # Parseval: the NPS integrates to the (mean-removed) pixel variance
    centred = noise - noise.mean(axis=(1, 2), keepdims=True)
    assert nps.sum() * df == pytest.approx(centred.var(axis=(1, 2)).mean(), rel=1e-9)
    # white noise: flat NPS at sigma^2 dx dy
    f, prof = radial_nps(nps, fy, fx)
    assert np.nanmean(prof[1:]) == pytest.approx(144.0 * px * px, rel=0.05)
    # correlated (smoothed) noise puts its power at low frequencies
    from scipy.ndimage import gaussian_filter

    smooth = np.stack([gaussian_filter(n, 1.5) for n in noise])
    f2, prof2 = radial_nps(*nps_2d(smooth, pixel_mm=px))
    assert prof2[1] > 5 * prof2[-1]
    img = np.zeros((2, 32, 32))
    img[:, 5:15, 5:15] = rng.normal(0, 9.0, size=(2, 10, 10))
    expected = np.mean([img[z, 5:15, 5:15].std(ddof=1) for z in range(2)])
    assert noise_sd(img, [(5, 5, 10, 10)]) == pytest.approx(expected)
    with pytest.raises(InputError):
        noise_sd(img, [(30, 30, 10, 10)])


def test_image_quality_bundle(pair) -> None:
    x, ref = pair
    q = image_quality(x, ref, flat_rois=[(10, 10, 8, 8)])
    assert set(q) == {"psnr", "ssim", "rmse", "noise_sd"}
    assert q["noise_sd"] == pytest.approx(noise_sd(x - ref, [(10, 10, 8, 8)]))
