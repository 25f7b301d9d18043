"""Fixtures for medbench.io tests: bundled file paths and a raw pydicom file builder.

``make_dicom`` writes files with pydicom alone (not medbench's writer), so reader tests do not
depend on the code they check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


@pytest.fixture(scope="session")
def ct_small_path() -> str:
    from pydicom.data import get_testdata_file

    return str(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="session")
def rg1_paths(pydicom_data_dir: Path) -> tuple[str, str]:
    """The real MONOCHROME1 chest X-ray, uncompressed and JPEG 2000 lossless."""
    unc, j2k = pydicom_data_dir / "RG1_UNCR.dcm", pydicom_data_dir / "RG1_J2KR.dcm"
    if not unc.exists() or not j2k.exists():
        pytest.skip("RG1 files not in pydicom-data")
    return str(unc), str(j2k)


@pytest.fixture()
def make_dicom() -> Callable[..., Path]:
    """Write a small single-frame DICOM from a raw integer array and header keywords."""

    def make(path: Path, stored: np.ndarray, *, transfer_syntax: str = ExplicitVRLittleEndian,
             pixel_bytes: bytes | None = None, with_pixels: bool = True, **tags: Any) -> Path:
        stored = np.asarray(stored)
        ds = Dataset()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.PatientID = "P1"
        ds.Modality = "OT"
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = stored.dtype.itemsize * 8
        ds.BitsStored = stored.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
        for key, value in tags.items():
            setattr(ds, key, value)
        if with_pixels:
            ds.PixelData = pixel_bytes if pixel_bytes is not None else stored.astype(stored.dtype.newbyteorder("<")).tobytes()
            ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = transfer_syntax
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
        return path

    return make


def sha256_tree(folder: Path) -> dict[str, str]:
    """Hash of every file under ``folder`` (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def tree_hash() -> Callable[[Path], dict[str, str]]:
    return sha256_tree
