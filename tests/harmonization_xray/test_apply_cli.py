"""`medbench harmonize apply` on real and synthetic DICOMs: valid output, inputs untouched, resume."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import torch
from typer.testing import CliRunner

from harmonization.xray.gdce import GDCEConfig, load_predictors, save_predictor
from harmonization.xray.predictor import CurvePredictor
from medbench.cli import app
from medbench.io import read_dicom, scan

WIDTHS = (4, 8, 8, 8, 16)


def _model(path: Path, bias: float, vendors=("*",), reference: str = "") -> Path:
    preds = {}
    for v in vendors:
        p = CurvePredictor(input_size=32, widths=WIDTHS)
        with torch.no_grad():
            p.head[-1].bias.fill_(bias)  # a constant brightening curve, a = tanh(bias)
        preds[v] = p
    return save_predictor(preds, path, GDCEConfig(input_size=32, widths=WIDTHS), reference=reference)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_real_chest_xray_goes_through_apply_and_ingest(tmp_path, pydicom_data_dir):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom_data_dir / "RG1_UNCR.dcm", src / "RG1_UNCR.dcm")
    before = _sha(src / "RG1_UNCR.dcm")
    model = _model(tmp_path / "model.pt", bias=0.5)
    res = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out",
                                   str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert _sha(src / "RG1_UNCR.dcm") == before
    out = tmp_path / "out" / "RG1_UNCR.dcm"
    ds_in, ds_out = pydicom.dcmread(src / "RG1_UNCR.dcm"), pydicom.dcmread(out)
    assert ds_out.SOPInstanceUID != ds_in.SOPInstanceUID and ds_out.SeriesInstanceUID != ds_in.SeriesInstanceUID
    assert "GDCE" in ds_out.DerivationDescription
    manifest = scan(tmp_path / "out", workers=1, progress=False).manifest
    assert manifest.loc[0, "status"] == "ok"
    x_in, x_out = read_dicom(src / "RG1_UNCR.dcm").pixels, read_dicom(out).pixels
    s_lo, s_hi = 0.0, 2.0 ** int(ds_in.BitsStored) - 1  # MONOCHROME1: read_dicom gives s_lo + s_hi - v
    center = s_lo + s_hi - float(ds_in.WindowCenter)  # the DICOM window, mirrored like the pixels
    lo, hi = center - float(ds_in.WindowWidth) / 2, center + float(ds_in.WindowWidth) / 2
    assert lo < x_in.min() and x_in.max() < hi  # the whole image lies inside the window here
    u_in, u_out = (x_in - lo) / (hi - lo), (x_out - lo) / (hi - lo)
    a = float(np.tanh(0.5))
    expected = u_in.astype(np.float64)
    for _ in range(8):
        expected = expected + a * expected * (1 - expected)
    assert np.abs(u_out - expected).max() < 2e-3  # the curve, at full resolution, lungs still darker
    again = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out",
                                     str(tmp_path / "out"), "--workers", "1"])
    assert again.exit_code == 0 and "skipped" in again.output


def test_per_vendor_models_pick_the_curve_by_manufacturer(tmp_path, synthetic_cxr_dir):
    import pandas as pd

    labels = pd.read_csv(Path(synthetic_cxr_dir) / "labels.csv")
    vendors = sorted(labels["vendor"].unique())
    ref, other = vendors[0], vendors[1:]
    model = _model(tmp_path / "m.pt", bias=0.3, vendors=other, reference=ref)
    preds, reference = load_predictors(model)
    assert reference == ref and sorted(preds) == sorted(other)
    src = Path(synthetic_cxr_dir) / "images"
    res = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out",
                                   str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    log = pd.read_csv(tmp_path / "out" / "harmonize_log.csv")
    assert (log["status"] == "written").all()
    for _, row in log.head(12).iterrows():
        desc = pydicom.dcmread(row["output"]).DerivationDescription
        vendor = pydicom.dcmread(row["path"]).Manufacturer
        assert ("unchanged" in desc) == (vendor == ref)


def test_unknown_vendor_is_reported_not_crashed(tmp_path, synthetic_cxr_dir):
    model = _model(tmp_path / "m.pt", bias=0.3, vendors=("SomeOtherVendor",), reference="Nobody")
    src = Path(synthetic_cxr_dir) / "images"
    res = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out",
                                   str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 1
    assert "no GDCE curve for Manufacturer" in res.output
