"""Every registered denoiser: HU in, HU out, input untouched, deterministic, and it removes noise."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from harmonization.ct.denoisers import DENOISERS, create_denoiser, tune
from harmonization.ct.quality import noise_sd, psnr
from medbench.errors import InputError, MissingDependencyError, UnknownNameError


@pytest.mark.parametrize("name", DENOISERS.names())
def test_every_denoiser(name: str, small_case) -> None:
    den = create_denoiser(name)
    n = 1 if name == "bm3d" else None  # BM3D is slow on CPU: one slice is enough here
    ld, fd = small_case.sim.ld_hu[:n], small_case.sim.fd_hu[:n]
    before = ld.copy()
    ctx = {"sinograms": small_case.sim.sino_ld[:n], "n0": small_case.sim.n0,
           "pixel_mm": small_case.sim.geometry.pixel_mm}
    out = den(ld, **ctx)
    np.testing.assert_array_equal(ld, before)  # input never modified
    assert out.shape == ld.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(den(ld, **ctx), out, atol=1e-3)  # deterministic (BM3D: float noise)
    rois = small_case.info.flat_rois
    err_ld = noise_sd(ld - fd, rois)
    err_out = noise_sd(out - fd, rois)
    if name == "fbp":
        np.testing.assert_array_equal(out, ld)
    else:
        assert err_out < 0.85 * err_ld, (name, err_out, err_ld)
        # HU are kept: the mean of flat soft tissue does not drift
        r, c, h, w = rois[0]
        assert abs(out[:, r:r + h, c:c + w].mean() - fd[:, r:r + h, c:c + w].mean()) < 10.0
    if name != "two_stage":  # one slice in, one slice out
        assert den(ld[0]).shape == ld.shape[1:]


def test_tune_picks_best_psnr(small_case) -> None:
    ld, fd = small_case.sim.ld_hu, small_case.sim.fd_hu
    grid = ({"sigma_px": 0.3}, {"sigma_px": 0.6}, {"sigma_px": 2.5})
    best, scores = tune("gaussian", ld, fd, grid=grid)
    from scipy.ndimage import gaussian_filter

    manual = [psnr(np.stack([gaussian_filter(s.astype(np.float64), g["sigma_px"], mode="nearest") for s in ld]), fd)
              for g in grid]
    np.testing.assert_allclose([s for _, s in scores], manual, rtol=1e-6)
    assert best == grid[int(np.argmax(manual))]


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean"):
        create_denoiser("gausian")
    with pytest.raises(InputError):
        create_denoiser("gaussian")(np.zeros((4, 4, 4, 4)))
    with pytest.raises(InputError):
        create_denoiser("gaussian")(np.full((16, 16), np.nan))
    with pytest.raises(InputError, match="checkpoint"):
        create_denoiser("two_stage", checkpoint="/nonexistent/model.pt")


def test_bm3d_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(MissingDependencyError, match=r"medbench\[ct\]"):
        create_denoiser("bm3d")
