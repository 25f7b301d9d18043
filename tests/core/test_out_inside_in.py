"""Output folders inside input folders are left out of the input scan; stale temp files are removed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medbench.cli import app

runner = CliRunner()


def _dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


def _stale(folder: Path) -> Path:
    """A hidden temp file named as ``atomic_path`` names them, as a killed run leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / ".harmonize_log.csv.ab12_XYZ.tmp"
    p.write_bytes(b"half written")
    return p


@pytest.fixture()
def ct_folder(tmp_path: Path) -> Path:
    from medbench.data.synthetic import write_ct_series_dataset

    write_ct_series_dataset(tmp_path / "set", 1, n_slices=2, size=32, progress=False)
    return tmp_path / "set" / "ct-000"


def test_ingest_out_inside_input_is_not_scanned(tmp_path: Path, ct_folder: Path) -> None:
    out = ct_folder / "run"
    n_inputs = len(_dicoms(ct_folder))
    stale = _stale(out)
    for _ in range(2):
        res = runner.invoke(app, ["ingest", str(ct_folder), "--out", str(out), "--no-progress", "-j", "1"])
        assert res.exit_code == 0, res.output
        assert not stale.exists()
    import pandas as pd

    man, q = pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(out / "quarantine.parquet")
    assert len(man) == n_inputs and len(q) == 0  # its own parquet/csv outputs were not quarantined
    assert not any(str(out) in p for p in man["path"])


def test_out_equal_to_input_is_refused(ct_folder: Path) -> None:
    from medbench.cli import main

    res = runner.invoke(app, ["ingest", str(ct_folder), "--out", str(ct_folder), "--no-progress"])
    assert res.exit_code != 0 and "is the input folder" in str(res.exception)
    with pytest.raises(SystemExit) as exc:
        import sys

        argv, sys.argv = sys.argv, ["medbench", "denoise", "apply", str(ct_folder), "--out", str(ct_folder),
                                    "--denoiser", "gaussian"]
        try:
            main()
        finally:
            sys.argv = argv
    assert exc.value.code == 2


def test_denoise_apply_out_inside_input_does_not_grow(ct_folder: Path) -> None:
    out = ct_folder / "denoised"
    n_inputs = len(_dicoms(ct_folder))
    for _ in range(3):
        stale = _stale(out)
        res = runner.invoke(app, ["denoise", "apply", str(ct_folder), "--out", str(out), "--denoiser", "gaussian",
                                  "--allow-noise-increase"])
        assert res.exit_code == 0, (res.output, res.exception)
        assert len(_dicoms(out)) == n_inputs  # one derived series, not 8 -> 16 -> 24
        assert not stale.exists()


def test_harmonize_apply_out_inside_input_does_not_grow(tmp_path: Path, synthetic_cxr_dir: Path) -> None:
    from harmonization.xray.gdce import GDCEConfig, save_predictor
    from harmonization.xray.predictor import CurvePredictor

    widths = (4, 8, 8, 8, 16)
    model = save_predictor({"*": CurvePredictor(input_size=32, widths=widths)}, tmp_path / "m.pt",
                           GDCEConfig(input_size=32, widths=widths))
    src = tmp_path / "in"
    src.mkdir()
    for p in _dicoms(Path(synthetic_cxr_dir) / "images")[:3]:
        shutil.copy(p, src / p.name)
    out = src / "harmonized"
    for _ in range(2):
        stale = _stale(out)
        res = runner.invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out", str(out),
                                  "--workers", "1"])
        assert res.exit_code == 0, (res.output, res.exception)
        assert len(_dicoms(out)) == 3
        assert not stale.exists()


def test_remove_stale_temps_only_removes_atomic_temp_names(tmp_path: Path) -> None:
    from medbench.utils.files import atomic_path, remove_stale_temps

    (tmp_path / "a").mkdir()
    stale = tmp_path / "a" / ".model.pt.k3j_9Qz1.tmp"
    stale.write_text("x")
    kept = [tmp_path / ".hidden", tmp_path / "x.tmp", tmp_path / ".x.tmp", tmp_path / "data.csv"]
    for p in kept:
        p.write_text("x")
    with atomic_path(tmp_path / "real.csv") as tmp:  # the names atomic_path really uses
        name = tmp.name
    left = tmp_path / name  # as a kill between write and rename would leave it
    left.write_text("y")
    assert remove_stale_temps(tmp_path) == 2
    assert not stale.exists() and not left.exists() and all(p.exists() for p in kept)
    assert remove_stale_temps(tmp_path / "missing") == 0
