"""``medbench denoise simulate|train|apply|evaluate`` end to end on DICOM (synthetic series, real CT slice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medbench.cli import app

runner = CliRunner()
GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def _invoke(*args: str) -> None:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)


@pytest.fixture(scope="module")
def synthetic_series(tmp_path_factory) -> Path:
    from medbench.data.synthetic import write_ct_series_dataset

    root = tmp_path_factory.mktemp("ctset")
    write_ct_series_dataset(root, 1, n_slices=3, size=64, progress=False)
    return root / "ct-000"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


def _by_position(files: list[Path]) -> list[pydicom.Dataset]:
    ds = [pydicom.dcmread(p) for p in files]
    return sorted(ds, key=lambda d: float(d.ImagePositionPatient[2]))


def _check_geometry(src: list[pydicom.Dataset], out: list[pydicom.Dataset]) -> None:
    assert len(src) == len(out)
    for a, b in zip(src, out):
        for tag in GEOMETRY_TAGS:
            np.testing.assert_allclose(np.asarray(a.get(tag), float), np.asarray(b.get(tag), float), atol=1e-4,
                                       err_msg=tag)
        assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID


def test_apply_two_stage_on_synthetic_series(synthetic_series, tmp_path) -> None:
    from medbench.io import read_series

    out = tmp_path / "den"
    # This series is not low-dose (7 HU of texture), so the bundled low-dose model adds ~3 HU of
    # noise there and the noise guard would refuse it; this test is about geometry and HU.
    _invoke("denoise", "apply", str(synthetic_series), "--out", str(out), "--allow-noise-increase")
    folders = [p.parent for p in out.rglob("done.json")]
    assert len(folders) == 1
    src, res = read_series(synthetic_series), read_series(folders[0])
    assert res.hu.shape == src.hu.shape
    assert res.hu.min() >= -1024.5 and res.hu.max() < 3072
    # HU preserved: denoising a noise-free series keeps soft tissue and air where they were
    body = (src.hu > -50) & (src.hu < 100)
    assert abs(float(np.median(res.hu[body] - src.hu[body]))) < 15.0
    assert abs(float(np.median(res.hu[src.hu < -990])) + 1000.0) < 20.0
    out_ds = _by_position(_files(folders[0]))
    _check_geometry(_by_position(_files(synthetic_series)), out_ds)
    assert "two_stage" in str(out_ds[0].get("DerivationDescription", ""))
    # re-running skips the finished series
    stamp = [p.stat().st_mtime_ns for p in _files(folders[0])]
    _invoke("denoise", "apply", str(synthetic_series), "--out", str(out), "--allow-noise-increase")
    assert [p.stat().st_mtime_ns for p in _files(folders[0])] == stamp


def test_apply_on_real_ct_slice(pydicom_data_dir, tmp_path) -> None:
    from medbench.io import read_dicom

    src = pydicom_data_dir / "693_UNCR.dcm"
    raw = src.read_bytes()
    out = tmp_path / "real"
    _invoke("denoise", "apply", str(src), "--out", str(out), "--n0", "1e5")
    assert src.read_bytes() == raw  # input untouched
    files = _files(out)
    assert len(files) == 1
    before, after = read_dicom(src).pixels, read_dicom(files[0]).pixels
    assert after.shape == before.shape == (512, 512)
    pad = before < -1024
    np.testing.assert_array_equal(after[pad], before[pad])  # outside-FOV padding kept as is
    assert after[~pad].min() >= -1024.5 and after[~pad].max() <= before.max() + 200
    tissue = (before > -100) & (before < 100)
    assert abs(float(np.median(after[tissue] - before[tissue]))) < 10.0
    _check_geometry([pydicom.dcmread(src)], [pydicom.dcmread(files[0])])


def test_apply_classical_with_param(synthetic_series, tmp_path) -> None:
    _invoke("denoise", "apply", str(synthetic_series), "--out", str(tmp_path), "--denoiser", "gaussian",
            "--param", "sigma_px=1.5")
    ds = pydicom.dcmread(_files(tmp_path)[0])
    assert "gaussian" in str(ds.DerivationDescription) and "1.5" in str(ds.DerivationDescription)


def test_simulate_series_adds_noise_and_keeps_hu(synthetic_series, tmp_path) -> None:
    from medbench.io import read_series

    _invoke("denoise", "simulate", str(synthetic_series), "--out", str(tmp_path), "--n0", "2e4", "--views", "120")
    folder = next(tmp_path.rglob("done.json")).parent
    src, ld = read_series(synthetic_series), read_series(folder)
    from harmonization.ct.quality import fov_mask

    fov = np.broadcast_to(fov_mask(src.hu.shape[1:]), src.hu.shape)
    assert abs(float(ld.hu[fov].mean() - src.hu[fov].mean())) < 5.0  # FBP keeps the mean HU
    flat = np.abs(src.hu - 40) < 1
    assert 5.0 < float((ld.hu - src.hu)[flat].std()) < 300.0  # and adds noise
    _check_geometry(_by_position(_files(synthetic_series)), _by_position(_files(folder)))
    meta = json.loads((folder / "done.json").read_text())
    assert meta["n0"] == 2e4 and meta["n_views"] == 120


def test_simulate_synthetic_and_train_tiny(tmp_path) -> None:
    _invoke("denoise", "simulate", "--synthetic", "1", "--slices", "2", "--size", "32", "--out", str(tmp_path / "s"),
            "--workers", "1")
    assert len(_files(tmp_path / "s" / "phantom-000" / "low_dose")) == 2
    _invoke("denoise", "train", "--out", str(tmp_path / "t"), "--n-volumes", "1", "--slices", "3", "--size", "32",
            "--views", "48", "--epochs", "1", "--iters", "2", "--batch-size", "2", "--patch", "16",
            "--proj-width", "4", "--proj-depth", "3", "--img-width", "4", "--img-depth", "3")
    from harmonization.ct.learned import TwoStageModel

    model = TwoStageModel.from_checkpoint(tmp_path / "t" / "two_stage.pt")
    assert model.geometry.n_views == 48 and model.n0 == 2.5e4


def test_evaluate_writes_table_and_report(tmp_path) -> None:
    _invoke("denoise", "evaluate", "--out", str(tmp_path), "--n-volumes", "1", "--slices", "3",
            "--denoisers", "fbp,gaussian,two_stage")
    import pandas as pd

    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["denoiser"]) == ["fbp", "gaussian", "two_stage"]
    assert summary.set_index("denoiser").loc["two_stage", "psnr"] > summary.set_index("denoiser").loc["fbp", "psnr"]
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img") >= 2 and "two_stage" in html
    assert json.loads((tmp_path / "metrics.json").read_text())["n0"] == 2.5e4


def test_bad_input_is_reported(tmp_path) -> None:
    res = runner.invoke(app, ["denoise", "apply", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "does not exist" in str(res.exception)


def test_simulate_synthetic_pixel_size(tmp_path) -> None:
    """Default: a 350 mm field of view (350/size mm pixels); --pixel-mm overrides it."""
    for extra, expected in (((), 350.0 / 32), (("--pixel-mm", "0.8"), 0.8)):
        out = tmp_path / f"s{len(extra)}"
        _invoke("denoise", "simulate", "--synthetic", "1", "--slices", "1", "--size", "32", "--views", "48",
                "--out", str(out), "--workers", "1", *extra)
        ds = pydicom.dcmread(_files(out / "phantom-000" / "low_dose")[0])
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([expected, expected], rel=1e-5)


def test_simulate_filter_option(tmp_path) -> None:
    """--filter picks the FBP filter (default shepp-logan, the authors'); it is a recorded setting, so a
    re-run of the folder with another filter is refused; an unknown name is an input error."""
    out = tmp_path / "s"
    args = ("denoise", "simulate", "--synthetic", "1", "--slices", "1", "--size", "32", "--views", "48",
            "--out", str(out), "--workers", "1")
    _invoke(*args)
    assert "shepp-logan" in (out / "settings.yaml").read_text()
    res = runner.invoke(app, [*args, "--filter", "ramp"])
    assert res.exit_code != 0 and "ramp" in str(res.exception)
    _invoke(*args, "--filter", "ramp", "--restart")
    assert "ramp" in (out / "settings.yaml").read_text()
    res = runner.invoke(app, [*args, "--filter", "ram-lak", "--restart"])
    assert res.exit_code != 0 and "FBP filter" in str(res.exception)
