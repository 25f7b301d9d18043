"""The ordering / intensity / context manifest columns against pydicom's full read of each file."""

from __future__ import annotations

import math
from pathlib import Path

import pydicom
import pytest

from medbench.io.manifest import scan, scan_file


def _expected(path: str) -> dict:
    """The columns computed from pydicom's fully parsed dataset (an independent reader)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)

    def text(kw: str) -> str:
        val = ds.get(kw)
        if val is None or val == "":
            return ""
        vals = list(val) if isinstance(val, pydicom.multival.MultiValue) else [val]
        return "\\".join(str(v).strip() for v in vals)

    def num(kw: str) -> float:
        t = text(kw).split("\\")[0]
        return float(t) if t else math.nan

    inst = text("InstanceNumber").split("\\")[0]
    bits = ds.get("BitsStored")
    return {
        "instance_number": int(float(inst)) if inst else None,
        "image_position": text("ImagePositionPatient"),
        "slice_thickness": num("SliceThickness"),
        "rescale_slope": num("RescaleSlope"),
        "rescale_intercept": num("RescaleIntercept"),
        "window_center": text("WindowCenter"),
        "window_width": text("WindowWidth"),
        "bits_stored": int(bits) if bits is not None else None,
        "body_part": text("BodyPartExamined"),
        "study_date": text("StudyDate"),
        "image_type": text("ImageType"),
        "presentation_intent": text("PresentationIntentType"),
        "transfer_syntax_name": ds.file_meta.TransferSyntaxUID.name if "TransferSyntaxUID" in ds.file_meta else None,
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_new_columns_match_pydicom_on_pydicom_data(pydicom_data_files: list[str]) -> None:
    checked: dict[str, int] = {}
    n_ok = 0
    for path in pydicom_data_files:
        for fast in (True, False):
            row = scan_file(path, fast=fast)
            if row["status"] != "ok":
                break
            exp = _expected(path)
            if exp["transfer_syntax_name"] is None:  # no file meta: the name of the syntax medbench inferred
                exp["transfer_syntax_name"] = pydicom.uid.UID(row["transfer_syntax"]).name
            for key, want in exp.items():
                assert _same(row[key], want), (path, fast, key, row[key], want)
                if want not in ("", None) and not (isinstance(want, float) and math.isnan(want)):
                    checked[key] = checked.get(key, 0) + 1
        else:
            n_ok += 1
    assert n_ok >= 60
    # every column was compared against a real, present value (both scan paths, so counts are even)
    assert min(checked.get(k, 0) for k in _expected(pydicom_data_files[0])) >= 2, checked


def test_known_values_of_ct_small(ct_small_path: str) -> None:
    row = scan_file(ct_small_path)
    ds = pydicom.dcmread(ct_small_path)
    assert row["instance_number"] == int(ds.InstanceNumber)
    assert row["image_position"] == "\\".join(str(v) for v in ds.ImagePositionPatient)
    assert row["slice_thickness"] == pytest.approx(float(ds.SliceThickness))
    assert row["rescale_slope"] == float(ds.RescaleSlope) and row["rescale_intercept"] == float(ds.RescaleIntercept)
    assert row["transfer_syntax"] == ds.file_meta.TransferSyntaxUID
    assert row["transfer_syntax_name"] == "Explicit VR Little Endian"


def test_modality_and_body_part_filters_skip_with_a_reason(pydicom_data_dir: Path, tmp_path: Path) -> None:
    import shutil

    names = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "US1_UNCR.dcm"]
    for name in names:
        src = pydicom_data_dir / name
        if not src.exists():
            from pydicom.data import get_testdata_file

            src = Path(get_testdata_file(name))
        shutil.copy(src, tmp_path / name)
    modalities = {n: str(pydicom.dcmread(tmp_path / n, stop_before_pixels=True).Modality) for n in names}
    res = scan(tmp_path, workers=1, progress=False, modality=["CR", "DX"])
    kept = {Path(p).name for p in res.manifest["path"]}
    assert kept == {n for n, m in modalities.items() if m in ("CR", "DX")}
    skipped = res.quarantine[res.quarantine["status"] == "skipped"]
    assert {Path(p).name for p in skipped["path"]} == set(names) - kept
    assert (skipped["reason"] == "filtered").all()
    assert skipped["message"].str.contains("modality").all()
    # resuming without the filter brings the skipped files back (their rows are not reused as skipped)
    res.save(tmp_path / "run")
    again = scan(tmp_path, workers=1, progress=False, resume_from=tmp_path / "run")
    assert {Path(p).name for p in again.manifest["path"]} == set(names)
    # a body-part filter keeps only files whose BodyPartExamined matches (case-insensitive)
    parts = {n: str(pydicom.dcmread(tmp_path / n, stop_before_pixels=True).get("BodyPartExamined", "")) for n in names}
    want = next(p for p in parts.values() if p)
    res2 = scan(tmp_path, workers=1, progress=False, body_part=[want.lower()])
    assert {Path(p).name for p in res2.manifest["path"]} == {n for n, p in parts.items() if p.upper() == want.upper()}
