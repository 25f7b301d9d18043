"""A small DICOM writer for the synthetic data (DX/CR radiographs and CT slices) with pydicom.

Files are Explicit VR Little Endian with a correct file meta group and deterministic UIDs derived
from ``(seed, uid)``. Each file is written atomically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from medbench.utils.files import atomic_path

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_STUDY_DATE = "20240101"


def make_uid(*keys: object) -> str:
    """A deterministic DICOM UID (``2.25.<128-bit int>``, as for UUID-derived UIDs) from ``keys``."""
    h = hashlib.sha256("\x1f".join(str(k) for k in keys).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(h, 'big')}"


def radiograph_sop_uid(seed: int, uid: str) -> str:
    """SOPInstanceUID that :func:`write_radiograph` gives image ``uid`` written with ``seed``."""
    return make_uid("medbench-synth", seed, uid, "sop")


def ct_series_uid(seed: int, series_key: str) -> str:
    """SeriesInstanceUID that :func:`write_ct_slice` gives series ``series_key`` written with ``seed``."""
    return make_uid("medbench-synth-ct", seed, series_key, "series")


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDBENCH_SYNTH"
    return meta


def _base(sop_class: str, sop_uid: str, patient: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientName = f"SYNTH^{patient['patient_id']}"
    ds.PatientID = str(patient["patient_id"])
    ds.PatientBirthDate = ""
    ds.PatientSex = str(patient.get("sex", ""))
    age = patient.get("age")
    ds.PatientAge = f"{int(age):03d}Y" if age is not None else ""
    ds.StudyID = "1"
    ds.InstanceCreationDate = _dt.date(2024, 1, 1).strftime("%Y%m%d")
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray, *, bits_stored: int, signed: bool, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 1 if signed else 0
    arr = np.ascontiguousarray(stored.astype("<i2" if signed else "<u2"))
    ds.PixelData = arr.tobytes()


def _save(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def write_radiograph(
    path: str | Path,
    image01: np.ndarray,
    *,
    uid: str,
    seed: int,
    patient: dict[str, Any],
    manufacturer: str,
    model: str,
    modality: str = "DX",
    monochrome1: bool = False,
    pixel_spacing_mm: float = 0.4,
    study_key: object = None,
) -> tuple[Path, str]:
    """Write a [0, 1] image as a 12-bit DX/CR file; returns ``(path, SOPInstanceUID)``.

    Stored values are ``round(4095 * x)`` (MONOCHROME2) or ``4095 - round(4095 * x)``
    (MONOCHROME1), so a reader inverting by ``2**BitsStored - 1 - v`` gets the same image back.
    """
    if modality not in ("DX", "CR"):
        raise ValueError(f"modality must be DX or CR (got {modality!r})")
    sop_class = DX_PRESENTATION_STORAGE if modality == "DX" else CR_STORAGE
    sop_uid = radiograph_sop_uid(seed, uid)
    ds = _base(sop_class, sop_uid, patient)
    key = study_key if study_key is not None else uid
    ds.StudyInstanceUID = make_uid("medbench-synth", seed, key, "study")
    ds.SeriesInstanceUID = make_uid("medbench-synth", seed, uid, "series")
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"] if modality == "DX" else ["ORIGINAL", "PRIMARY"]
    spacing = [f"{pixel_spacing_mm:.4f}", f"{pixel_spacing_mm:.4f}"]
    ds.PixelSpacing = spacing
    ds.ImagerPixelSpacing = spacing
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageComments = f"medbench synthetic {uid}"
    q = np.rint(np.clip(image01, 0.0, 1.0) * 4095.0).astype(np.int32)
    if monochrome1:
        q = 4095 - q
    ds.WindowCenter = "2047.5"
    ds.WindowWidth = "4096"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values = less X-ray intensity reaching the detector (MONOCHROME1 storage here)
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    _set_pixels(ds, q, bits_stored=12, signed=False, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2")
    return _save(ds, path), sop_uid


def write_ct_slice(
    path: str | Path,
    hu: np.ndarray,
    *,
    series_key: str,
    index: int,
    n_slices: int,
    seed: int,
    patient: dict[str, Any],
    manufacturer: str,
    model: str,
    origin: tuple[float, float, float],
    orientation: tuple[float, ...],
    pixel_spacing_mm: float,
    slice_thickness_mm: float,
    signed: bool,
) -> tuple[Path, str]:
    """Write one CT slice (HU) with stored int16 (intercept 0) or uint16 (intercept -1024, 12 bits)."""
    sop_uid = make_uid("medbench-synth-ct", seed, series_key, index)
    ds = _base(CT_STORAGE, sop_uid, patient)
    ds.StudyInstanceUID = make_uid("medbench-synth-ct", seed, series_key, "study")
    ds.SeriesInstanceUID = ct_series_uid(seed, series_key)
    ds.FrameOfReferenceUID = make_uid("medbench-synth-ct", seed, series_key, "for")
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(index) + 1
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    pos = np.asarray(origin, float) + normal * float(index) * float(slice_thickness_mm)
    ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.SliceLocation = f"{float(np.dot(pos, normal)):.4f}"
    ds.SliceThickness = f"{slice_thickness_mm:.4f}"
    ds.SpacingBetweenSlices = f"{slice_thickness_mm:.4f}"
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6f}", f"{pixel_spacing_mm:.6f}"]
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.ImagesInAcquisition = int(n_slices)
    if signed:
        ds.RescaleIntercept = "0"
        stored = np.clip(np.rint(hu), -32768, 32767)
        _set_pixels(ds, stored, bits_stored=16, signed=True, photometric="MONOCHROME2")
    else:
        ds.RescaleIntercept = "-1024"
        stored = np.clip(np.rint(hu + 1024.0), 0, 4095)
        _set_pixels(ds, stored, bits_stored=12, signed=False, photometric="MONOCHROME2")
    return _save(ds, path), sop_uid


def is_complete_dicom(path: str | Path) -> bool:
    """True when ``path`` exists and parses as DICOM with pixel data (cheap header check)."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size < 132:
        return False
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=False, specific_tags=["Rows", "Columns", "BitsAllocated", "PixelData"])
        return "PixelData" in ds and len(ds.PixelData) >= int(ds.Rows) * int(ds.Columns) * 2
    except Exception:  # noqa: BLE001 - any parse failure means "not complete"
        return False
