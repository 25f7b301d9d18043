"""Folder scan: every bundled file ingested or quarantined, corrupt inputs, determinism, CLI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medbench.errors import InputError, MedbenchError
from medbench.io import read_dicom, scan
from medbench.io.manifest import (
    MANIFEST_COLUMNS,
    QUARANTINE_REASONS,
    ScanResult,
    parse_age,
    scan_file,
)
from medbench.utils.files import hash_id

_EXPECTED_QUARANTINE = {  # files the test data ships broken or without an image on purpose
    "MR_truncated.dcm": "truncated",
    "rtplan.dcm": "no_pixel_data",
    "JPEG-lossy.dcm": "undecodable",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
}


def _check_every_file(files: list[str], decode: bool, reread_below: int = 1 << 40) -> dict[str, str]:
    """Scan each file; ok files (when decoding) must also give finite pixels from read_dicom."""
    outcome: dict[str, str] = {}
    for path in files:
        row = scan_file(path, decode=decode)
        if row["status"] == "ok":
            if decode and Path(path).stat().st_size < reread_below:
                pixels = read_dicom(path).pixels
                assert np.isfinite(pixels).all() and pixels.size > 0, path
            outcome[Path(path).name] = "ok"
        else:
            assert row["reason"] in QUARANTINE_REASONS and row["reason"] != "error", (path, row)
            assert row["message"], path
            outcome[Path(path).name] = row["reason"]
    return outcome


def test_every_pydicom_test_file_ingested_or_quarantined(pydicom_test_files: list[str]) -> None:
    outcome = _check_every_file(pydicom_test_files, decode=True)
    assert sum(v == "ok" for v in outcome.values()) >= 80
    for name, reason in _EXPECTED_QUARANTINE.items():
        if name in outcome:
            assert outcome[name] == reason, name
    assert outcome["CT_small.dcm"] == "ok"


def test_every_pydicom_data_file_header_scan(pydicom_data_files: list[str]) -> None:
    outcome = _check_every_file(pydicom_data_files, decode=False)
    assert outcome["RG1_UNCR.dcm"] == "ok" and outcome["RG1_J2KR.dcm"] == "ok"
    assert outcome["emri_small_jpeg_2k_lossless_too_short.dcm"] == "truncated"
    assert sum(v == "ok" for v in outcome.values()) >= 60


@pytest.mark.slow
def test_every_pydicom_data_file_decodes(pydicom_data_files: list[str]) -> None:
    # scan_file(decode=True) decodes every file; re-read the small ones independently as well
    outcome = _check_every_file(pydicom_data_files, decode=True, reread_below=2_000_000)
    assert outcome["RG1_J2KR.dcm"] == "ok" and outcome["color3d_jpeg_baseline.dcm"] == "ok"


@pytest.fixture()
def messy_folder(tmp_path: Path, ct_small_path: str, make_dicom) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(ct_small_path, root / "good.dcm")
    data = Path(ct_small_path).read_bytes()
    (root / "sub" / "truncated.dcm").write_bytes(data[: len(data) - 5000])
    (root / "random.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    make_dicom(root / "nopixels.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    make_dicom(root / "unknown_ts.dcm", np.zeros((4, 4), np.uint16), transfer_syntax="1.2.3.4.5.6")
    # native pixel data under a compressed transfer syntax: patch the UID in the written file meta
    native = make_dicom(root / "wrong_ts.dcm", np.zeros((4, 4), np.uint16)).read_bytes()
    old_ts, new_ts = b"1.2.840.10008.1.2.1\x00", pydicom.uid.RLELossless.encode() + b"\x00"
    assert native.count(old_ts) == 1 and len(old_ts) == len(new_ts)
    (root / "wrong_ts.dcm").write_bytes(native.replace(old_ts, new_ts))
    make_dicom(root / "short_pixels.dcm", np.zeros((4, 4), np.uint16), pixel_bytes=b"\0" * 20)
    from PIL import Image

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "photo.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / ".hidden").write_text("skipped")
    return root


def test_corrupt_inputs_get_distinct_reasons(messy_folder: Path, tree_hash) -> None:
    before = tree_hash(messy_folder)
    result = scan(messy_folder, workers=2, progress=False)
    reasons = dict(zip(result.quarantine["path"].map(lambda p: Path(p).name), result.quarantine["reason"]))
    assert reasons == {
        "truncated.dcm": "truncated",
        "random.dcm": "not_dicom",
        "nopixels.dcm": "no_pixel_data",
        "unknown_ts.dcm": "unsupported_syntax",
        "wrong_ts.dcm": "inconsistent",
        "short_pixels.dcm": "truncated",
        "broken.png": "undecodable",
    }
    assert list(result.manifest.columns) == MANIFEST_COLUMNS
    m = result.manifest.set_index(result.manifest["path"].map(lambda p: Path(p).name))
    assert set(m.index) == {"good.dcm", "photo.png"}
    assert m.loc["photo.png", "format"] == "png" and m.loc["photo.png", "modality"] == "OT"
    assert m.loc["photo.png", "rows"] == 8
    ref = pydicom.dcmread(messy_folder / "good.dcm", stop_before_pixels=True)
    good = m.loc["good.dcm"]
    assert good["sop_uid"] == ref.SOPInstanceUID and good["series_uid"] == ref.SeriesInstanceUID
    assert good["patient_hash"] == hash_id(str(ref.PatientID)) and str(ref.PatientID) not in good.values
    assert good["modality"] == "CT" and good["manufacturer"] == str(ref.Manufacturer)
    assert good["rows"] == 128 and good["pixel_spacing"] == pytest.approx(float(ref.PixelSpacing[0]))
    assert good["transfer_syntax"] == ref.file_meta.TransferSyntaxUID
    assert tree_hash(messy_folder) == before  # inputs untouched


def test_rescan_is_identical_and_saved_tables_roundtrip(messy_folder: Path, tmp_path: Path) -> None:
    first = scan(messy_folder, workers=2, progress=False)
    second = scan(messy_folder, workers=1, progress=False)
    pd.testing.assert_frame_equal(first.manifest, second.manifest)
    pd.testing.assert_frame_equal(first.quarantine, second.quarantine)
    assert first.manifest["path"].is_monotonic_increasing
    first.save(tmp_path / "run")
    loaded = ScanResult.load(tmp_path / "run")
    pd.testing.assert_frame_equal(loaded.manifest, first.manifest, check_dtype=False)
    csv = pd.read_csv(tmp_path / "run" / "quarantine.csv")
    assert sorted(csv["reason"]) == sorted(first.quarantine["reason"])


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        scan(tmp_path / "empty", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        scan(tmp_path / "nope", progress=False)


def test_cli_ingest(messy_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from typer.testing import CliRunner

    from medbench.cli import app, main

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["ingest", str(messy_folder), "--out", str(run), "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Quarantine reasons" in result.output and "unsupported_syntax" in result.output
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert len(manifest) == 2 and (run / "quarantine.csv").exists() and (run / "quarantine.parquet").exists()
    direct = scan(messy_folder, workers=1, progress=False).manifest
    pd.testing.assert_frame_equal(manifest, direct, check_dtype=False)

    (tmp_path / "empty").mkdir()
    failed = CliRunner().invoke(app, ["ingest", str(tmp_path / "empty"), "--out", str(run)])
    assert isinstance(failed.exception, MedbenchError)
    monkeypatch.setattr(sys, "argv", ["medbench", "ingest", str(tmp_path / "empty"), "--out", str(run)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "no files" in capsys.readouterr().err


def test_parse_age() -> None:
    assert parse_age("045Y") == 45.0
    assert parse_age("006M") == pytest.approx(0.5)
    assert parse_age("014D") == pytest.approx(14 / 365.25)
    assert parse_age("58") == 58.0
    assert np.isnan(parse_age("")) and np.isnan(parse_age(None)) and np.isnan(parse_age("abcY"))


def test_executor_and_scheduler_reach_map_items(messy_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medbench.io.manifest as manifest_module

    seen: dict[str, object] = {}
    real = manifest_module.map_items

    def spy(fn, items, **kwargs):
        seen.update(kwargs)
        return real(fn, items, workers=1, progress=False)

    monkeypatch.setattr(manifest_module, "map_items", spy)
    result = scan(messy_folder, workers=3, executor="dask", scheduler="tcp://10.0.0.1:8786", progress=False)
    assert seen["executor"] == "dask" and seen["scheduler"] == "tcp://10.0.0.1:8786" and seen["workers"] == 3
    assert len(result.manifest) == 2


def test_resume_rescans_only_changed_files(messy_folder: Path, tmp_path: Path, ct_small_path: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import medbench.io.manifest as manifest_module

    run = tmp_path / "run"
    scan(messy_folder, workers=1, progress=False).save(run)
    (messy_folder / "random.dcm").unlink()
    shutil.copy(ct_small_path, messy_folder / "random.dcm")  # was junk, now a good file
    shutil.copy(ct_small_path, messy_folder / "sub" / "new.dcm")
    scanned: list[str] = []
    real = manifest_module.map_items

    def spy(fn, items, **kwargs):
        scanned.extend(items)
        return real(fn, items, **kwargs)

    monkeypatch.setattr(manifest_module, "map_items", spy)
    resumed = scan(messy_folder, workers=1, progress=False, resume_from=run)
    assert sorted(Path(p).name for p in scanned) == ["new.dcm", "random.dcm"]
    fresh = scan(messy_folder, workers=1, progress=False)
    pd.testing.assert_frame_equal(resumed.manifest, fresh.manifest)
    pd.testing.assert_frame_equal(resumed.quarantine, fresh.quarantine)
    scanned.clear()
    scan(messy_folder, workers=1, progress=False, resume_from=run, decode=True)  # header rows not enough
    assert len(scanned) == len(fresh.manifest) + len(fresh.quarantine)
