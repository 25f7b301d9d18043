"""Written radiograph DICOM: valid headers, MONOCHROME1 inversion, labels.csv, resume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import UID

from medbench.data.synthetic import (
    cxr_records,
    make_cxr,
    read_labels,
    render_cxr,
    write_cxr_dataset,
)


def test_labels_csv_and_headers(synthetic_cxr_dir: Path) -> None:
    df = pd.read_csv(synthetic_cxr_dir / "labels.csv")
    assert {"path", "uid", "patient_id", "label", "sex", "age", "vendor"} <= set(df.columns)
    assert len(df) == 56 and df["uid"].is_unique
    assert df["patient_id"].nunique() < len(df)  # some patients have several images
    _, meta = make_cxr(56, size=16, seed=0)  # metadata does not depend on size
    pd.testing.assert_frame_equal(df[list(meta.columns)], meta, check_dtype=False)
    assert set(df["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    for row in df.itertuples():
        ds = pydicom.dcmread(row.path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == row.sop_uid
        assert UID(ds.SOPInstanceUID).is_valid and UID(ds.SeriesInstanceUID).is_valid
        expected_class = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}
        assert ds.SOPClassUID == expected_class[ds.Modality]
        assert ds.PatientID == row.patient_id and ds.PatientSex == row.sex
        assert ds.PatientAge == f"{row.age:03d}Y"
        assert ds.ViewPosition == "PA" and ds.Manufacturer == row.vendor and ds.ManufacturerModelName
        assert ds.PhotometricInterpretation == row.photometric
        mono1 = row.photometric == "MONOCHROME1"
        assert ds.PresentationLUTShape == ("INVERSE" if mono1 else "IDENTITY")
        assert ds.PixelIntensityRelationshipSign == (1 if mono1 else -1)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert (ds.Rows, ds.Columns) == (128, 128)
        assert float(ds.PixelSpacing[0]) == pytest.approx(430.0 / 128, rel=1e-3)
        assert ds.pixel_array.max() <= 4095
    # raw file starts with the DICM preamble
    assert Path(df["path"][0]).read_bytes()[128:132] == b"DICM"


def test_pixels_match_in_memory_images_and_monochrome1_inverts(synthetic_cxr_dir: Path) -> None:
    df = read_labels(synthetic_cxr_dir)
    recs = {r.uid: r for r in cxr_records(56, seed=0)}
    n_mono1 = 0
    for row in df.itertuples():
        ds = pydicom.dcmread(row.path)
        stored = ds.pixel_array.astype(np.int64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            n_mono1 += 1
            stored = (2**ds.BitsStored - 1) - stored  # independent inversion
        expected = np.rint(render_cxr(recs[row.uid], size=128, seed=0) * 4095).astype(np.int64)
        np.testing.assert_array_equal(stored, expected)
    assert n_mono1 >= 3


def test_monochrome1_twin_through_medbench_io(tmp_path: Path) -> None:
    from medbench.io import dicom as io
    img, meta = make_cxr(1, size=64, seed=9)
    from medbench.data.dicom_out import write_radiograph

    common = dict(uid="x", seed=0, patient=meta.iloc[0].to_dict(), manufacturer="RefVendor", model="m")
    p2, _ = write_radiograph(tmp_path / "m2.dcm", img[0], monochrome1=False, **common)
    p1, _ = write_radiograph(tmp_path / "m1.dcm", img[0], monochrome1=True, **common)
    a, b = io.read_dicom(p2).pixels, io.read_dicom(p1).pixels
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a / 4095.0, img[0], atol=0.5 / 4095 + 1e-6)


def test_resume_skips_complete_files_and_rewrites_missing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    df1 = write_cxr_dataset(out, 6, size=32, seed=4, progress=False)
    paths = [Path(p) for p in df1["path"]]
    before = {p: p.read_bytes() for p in paths}
    old = 1_000_000_000
    for p in paths:
        os.utime(p, (old, old))
    paths[2].unlink()
    paths[4].write_bytes(before[paths[4]][:200])  # a truncated file is redone
    df2 = write_cxr_dataset(out, 8, size=32, seed=4, progress=False)
    assert len(df2) == 8 and df2.iloc[:6].equals(df1)
    for i, p in enumerate(paths):
        assert p.read_bytes() == before[p]
        if i in (2, 4):
            assert p.stat().st_mtime > old
        else:
            assert p.stat().st_mtime == old  # untouched
    assert len(pd.read_csv(out / "labels.csv")) == 8
    assert not list(out.rglob("*.tmp"))


def test_vendor_restriction_and_fraction(tmp_path: Path) -> None:
    df = write_cxr_dataset(tmp_path, 20, size=16, seed=1, vendors=["VendorSig"], monochrome1_fraction=1.0, progress=False)
    assert set(df["vendor"]) == {"VendorSig"} and set(df["photometric"]) == {"MONOCHROME1"}


def test_refuses_to_mix_settings_and_follows_a_moved_folder(tmp_path: Path) -> None:
    from medbench.data.dataset import ImageDataset
    from medbench.errors import InputError

    out = tmp_path / "a"
    write_cxr_dataset(out, 3, size=16, seed=1, progress=False)
    with pytest.raises(InputError, match="size: 16 -> 32"):
        write_cxr_dataset(out, 3, size=32, seed=1, progress=False)
    moved = out.rename(tmp_path / "b")
    table = read_labels(moved)
    assert all(Path(p).is_file() and Path(p).parent.parent == moved for p in table["path"])
    ds = ImageDataset.from_folder(moved, size=16)
    assert len(ds) == 3 and ds[2][0].shape == (1, 16, 16)
