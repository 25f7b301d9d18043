"""`medbench harmonize fit` end to end on generated DICOMs, then `harmonize apply` with its model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from harmonization.xray.gdce import load_predictors
from harmonization.xray.predictor import CurvePredictor
from medbench.cli import app
from medbench.data.synthetic import write_cxr_dataset
from medbench.errors import InputError, UnknownNameError


@pytest.fixture(scope="module")
def vendor_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("harmonize_fit_data")
    # the reference classifier learns the lesion from ~350 reference training images (70 % of ~500)
    write_cxr_dataset(out, 600, size=64, seed=1, vendors={"RefVendor": 0.85, "VendorLog": 0.15},
                      monochrome1_fraction=0.2, progress=False)
    return out


@pytest.mark.slow
def test_harmonize_fit_then_apply(tmp_path: Path, vendor_data: Path) -> None:
    run = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "harmonize", "fit", "--manifest", str(vendor_data / "labels.csv"), "--reference", "RefVendor",
        "--out", str(run), "--size", "64", "--steps", "30", "--epochs", "20", "--feature-source", "random",
        "--baselines", "zscore", "--feature-weight", "10",
    ])
    assert res.exit_code == 0, res.output
    preds, reference = load_predictors(run / "model.pt")
    assert torch.load(run / "model.pt", weights_only=True)["config"]["lambda_feat"] == 10.0
    assert reference == "RefVendor" and set(preds) == {"*"}
    assert isinstance(preds["*"], CurvePredictor)
    results = pd.read_csv(run / "results.csv")
    assert set(results["method"]) == {"none", "gdce", "zscore"}
    auc = results.set_index(["method", "vendor"])["auc"]
    # the reference classifier learned the task on its own vendor ...
    assert auc["none", "reference"] > 0.8, results.to_string()
    # ... loses it on the log look, and GDCE gives (most of) it back
    assert auc["none", "VendorLog"] < auc["none", "reference"] - 0.05, results.to_string()
    assert auc["gdce", "VendorLog"] > auc["none", "VendorLog"] + 0.05, results.to_string()
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "GDCE" in html and html.count("<img") >= 3  # curves, histograms before and after

    labels = pd.read_csv(vendor_data / "labels.csv")
    vendor_of = dict(zip(labels["path"].map(lambda p: Path(p).name), labels["vendor"], strict=True))
    subset = tmp_path / "subset"  # a few files of each vendor are enough for apply
    subset.mkdir()
    for vendor in ("RefVendor", "VendorLog"):
        for name in [k for k, v in vendor_of.items() if v == vendor][:8]:
            shutil.copy(vendor_data / "images" / name, subset / name)
    out = tmp_path / "harmonised"
    res = CliRunner().invoke(app, ["harmonize", "apply", str(subset), "--model",
                                   str(run / "model.pt"), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    log = pd.read_csv(out / "harmonize_log.csv")
    assert len(log) == 16 and (log["status"] == "written").all()
    for _, row in log.iterrows():
        desc = pydicom.dcmread(row["output"]).DerivationDescription
        assert ("unchanged" in desc) == (vendor_of[Path(row["path"]).name] == "RefVendor"), desc


def test_unknown_baseline_fails_before_training(tmp_path: Path, synthetic_cxr_dir: Path) -> None:
    from harmonization.xray.fit_job import fit_harmonizer

    table = pd.read_csv(synthetic_cxr_dir / "labels.csv")
    with pytest.raises(UnknownNameError, match="did you mean .histmatch"):
        fit_harmonizer(table, tmp_path / "run", vendor_column="Manufacturer", reference="RefVendor",
                       baselines=("histmatc",), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_harmonizer_that_needs_the_fit_job_is_refused_as_a_baseline(tmp_path: Path, synthetic_cxr_dir: Path) -> None:
    from harmonization.xray.fit_job import fit_harmonizer

    table = pd.read_csv(synthetic_cxr_dir / "labels.csv")
    with pytest.raises(InputError, match="'gdce': it needs labelled_source_images, reference_classifier"):
        fit_harmonizer(table, tmp_path / "run", vendor_column="Manufacturer", reference="RefVendor",
                       baselines=("histmatch", "gdce"), progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()  # refused before any training
