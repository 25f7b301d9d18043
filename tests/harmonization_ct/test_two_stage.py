"""The bundled two-stage model on held-out phantoms at N0 = 2.5e4 against FBP and tuned baselines.

The model (harmonization/ct/weights/two_stage.pt) was trained by
``medbench denoise train --out RUN --epochs 10 --iters 100`` (24 volumes x 8 slices of split "train",
64 px, 5 mm pixels, 180 views); these phantoms come from split "test". Classical baselines get
their strength from a PSNR grid search on a separate validation phantom (split "val").
"""

from __future__ import annotations

import pytest

from harmonization.ct.denoisers import WEIGHTS_DIR, create_denoiser
from harmonization.ct.evaluation import compare, make_cases, summarise, tune_classical

pytestmark = pytest.mark.xdist_group("two_stage")  # one worker builds the shared summary


@pytest.fixture(scope="module")
def summary():
    assert (WEIGHTS_DIR / "two_stage.pt").stat().st_size < 5_000_000
    val = make_cases(1, 8, n0=2.5e4, split="val")
    test = make_cases(2, 8, n0=2.5e4, split="test")
    dens = {"fbp": create_denoiser("fbp"), **tune_classical(["gaussian", "bilateral", "nlm"], val),
            "two_stage": create_denoiser("two_stage")}
    return summarise(compare(dens, test)).set_index("denoiser")


def test_two_stage_gains_3db_over_fbp(summary) -> None:
    assert summary.loc["two_stage", "psnr"] >= summary.loc["fbp", "psnr"] + 3.0
    assert summary.loc["two_stage", "ssim"] > summary.loc["fbp", "ssim"]
    assert summary.loc["two_stage", "noise_sd"] < 0.6 * summary.loc["fbp", "noise_sd"]


@pytest.mark.parametrize("baseline", ["gaussian", "bilateral", "nlm"])
def test_two_stage_beats_tuned_baselines(summary, baseline: str) -> None:
    assert summary.loc["two_stage", "psnr"] > summary.loc[baseline, "psnr"]
    assert summary.loc["two_stage", "rmse"] < summary.loc[baseline, "rmse"]


def test_two_stage_keeps_resolution(summary) -> None:
    # MTF50 of the slice-averaged slanted edge, relative to the noise-free full-dose FBP
    assert summary.loc["two_stage", "mtf50_ratio"] > 0.9
    assert summary.loc["fbp", "mtf50_ratio"] == pytest.approx(1.0, abs=0.1)  # the measurement itself
