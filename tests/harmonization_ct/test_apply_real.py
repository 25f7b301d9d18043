"""`denoise apply` on real CT (pydicom-data's 693 head slice): geometry guard, noise guard, derived metadata.

pydicom-data holds one 693 slice in three encodings (693_UNCR, 693_UNCI, 693_J2KR; same series and
position); the uncompressed 693_UNCR.dcm is used.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from harmonization.ct.apply import denoise_batch, flat_tissue_noise, geometry_mismatch
from harmonization.ct.denoisers import create_denoiser
from medbench.errors import InputError


def _flat_boxes(img: np.ndarray, box: int = 16, n: int = 20) -> list[tuple[int, int]]:
    """The test's own flat soft-tissue ROIs: boxes of brain-like tissue with the lowest SD."""
    cands = []
    for r in range(0, img.shape[0] - box, box):
        for c in range(0, img.shape[1] - box, box):
            t = img[r:r + box, c:c + box]
            if t.min() > -20 and t.max() < 100:
                cands.append((float(t.std()), r, c))
    cands.sort()
    return [(r, c) for _, r, c in cands[:n]]


@pytest.fixture(scope="module")
def denoised_693(pydicom_data_dir: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    src_dir = tmp_path_factory.mktemp("ct693")
    shutil.copy(pydicom_data_dir / "693_UNCR.dcm", src_dir / "693_UNCR.dcm")
    out = tmp_path_factory.mktemp("den693")
    table = denoise_batch(src_dir, out, progress=False)  # default: two_stage (bundled 64-px, 5 mm weights)
    assert list(table["status"]) == ["written"], table["error"].tolist()
    folder = Path(table["output"][0])
    return src_dir / "693_UNCR.dcm", next(folder.glob("*.dcm")), folder


def test_apply_693_keeps_thickness_marks_derived_and_does_not_add_noise(denoised_693) -> None:
    src_path, out_path, folder = denoised_693
    src, out = pydicom.dcmread(src_path), pydicom.dcmread(out_path)
    assert float(out.SliceThickness) == float(src.SliceThickness) == 5.0
    assert list(out.ImageType)[0] == "DERIVED"
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert out.SeriesDescription != src.SeriesDescription and "derived" in out.SeriesDescription
    assert int(out.SeriesNumber) != int(src.SeriesNumber)
    before = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
    after = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
    boxes = _flat_boxes(before)
    assert len(boxes) >= 10
    sd_before = np.median([before[r:r + 16, c:c + 16].std() for r, c in boxes])
    sd_after = np.median([after[r:r + 16, c:c + 16].std() for r, c in boxes])
    assert sd_after <= sd_before, (sd_before, sd_after)
    info = json.loads((folder / "done.json").read_text())
    assert info["denoiser"] == "nlm" and "two_stage -> nlm" in info["fallback"]  # 0.48 mm, 512 px != 5 mm, 64 px
    assert np.isfinite(info["noise_sd_before"]) and info["noise_sd_after"] <= info["noise_sd_before"]


def test_geometry_mismatch_of_the_bundled_model() -> None:
    den = create_denoiser("two_stage")
    assert geometry_mismatch(den, "two_stage", 5.0, (64, 64)) == ""
    assert "pixel size" in geometry_mismatch(den, "two_stage", 0.48, (64, 64))
    assert "matrix" in geometry_mismatch(den, "two_stage", 5.0, (512, 512))
    assert geometry_mismatch(create_denoiser("nlm"), "nlm", 0.48, (512, 512)) == ""


class _AddsNoise:
    """A stand-in denoiser that adds white noise of 10 HU."""

    def __call__(self, hu: np.ndarray, **_: object) -> np.ndarray:
        return hu + np.random.default_rng(0).normal(0.0, 10.0, hu.shape)

    def params(self) -> dict[str, object]:
        return {}


class _Series:
    def __init__(self, hu: np.ndarray) -> None:
        self.hu, self.spacing, self.paths = hu, (5.0, 1.0, 1.0), ["fake.dcm"]


def test_noise_increase_is_refused_or_warned(caplog) -> None:
    from harmonization.ct.apply import _denoise_volume

    rng = np.random.default_rng(1)
    vol = (40.0 + rng.normal(0.0, 3.0, (1, 96, 96))).astype(np.float32)  # flat soft tissue, 3 HU noise
    with pytest.raises(InputError, match="raises the noise SD"):
        _denoise_volume(_AddsNoise(), "noisy", _Series(vol), None, False)
    with caplog.at_level(logging.WARNING):
        _, _, info = _denoise_volume(_AddsNoise(), "noisy", _Series(vol), None, False, allow_noise_increase=True)
    # independent: SD of N(0, 3) + N(0, 10) is sqrt(109) ~ 10.4 HU; boxes of 144 px give ~6% spread
    assert info["noise_sd_before"] == pytest.approx(3.0, rel=0.15)
    assert info["noise_sd_after"] == pytest.approx(np.sqrt(109.0), rel=0.15)
    assert "noise_warning" in info


def test_flat_tissue_noise_is_nan_with_a_reason_when_there_is_no_soft_tissue() -> None:
    sd, boxes, reason = flat_tissue_noise(np.full((1, 64, 64), -1000.0))
    assert np.isnan(sd) and len(boxes) == 0 and "no flat soft tissue" in reason


def test_starved_detector_warning(caplog) -> None:
    from harmonization.ct.phantoms import make_phantom_volume
    from harmonization.ct.simulate import Geometry, simulate_low_dose, starved_fraction

    vol, _ = make_phantom_volume(1, size=64, seed=0, uid="starve")
    with caplog.at_level(logging.WARNING, logger="harmonization.ct.simulate"):
        res = simulate_low_dose(vol, n0=2.5e4, geometry=Geometry(n_views=60, pixel_mm=20.0))  # 1.28 m FOV
    # independent: expected counts from the line integrals of the noise-free sinogram
    frac = float(np.mean(2.5e4 * np.exp(-res.sino_fd.astype(np.float64)) < 1))
    assert frac > 0.01 and starved_fraction(res.sino_fd, 2.5e4) == pytest.approx(frac)
    assert any("fewer than 1 photon" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harmonization.ct.simulate"):
        simulate_low_dose(vol, n0=2.5e4, geometry=Geometry(n_views=60, pixel_mm=350 / 64))
    assert not any("fewer than 1 photon" in r.message for r in caplog.records)
