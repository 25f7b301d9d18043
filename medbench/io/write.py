"""Write derived images and CT series as DICOM, from a reference header or a fresh minimal one.

Pixels are stored as 16-bit integers with RescaleSlope/Intercept chosen so that reading back gives
the input to the stored precision: integer-valued input (HU) comes back exactly; other input comes
back as ``intercept + slope * round((x - intercept) / slope)`` (error at most ``slope / 2``).
The slope and intercept used for quantisation are the values written in the header (after the
16-character DS formatting), so nothing is lost between what is computed and what is stored.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medbench.errors import InputError
from medbench.io import lut
from medbench.io.rescale import Rescale, _resolve_rescale
from medbench.utils.files import atomic_path

logger = logging.getLogger(__name__)

_DROP_KEYWORDS = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ModalityLUTSequence", "VOILUTSequence",
    "LargestImagePixelValue", "SmallestImagePixelValue", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "SmallestPixelValueInSeries", "LargestPixelValueInSeries", "NumberOfFrames", "FrameIncrementPointer",
    "PlanarConfiguration", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
    "IconImageSequence", "PresentationLUTShape", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "PaletteColorLookupTableUID",
    "WindowCenterWidthExplanation", "VOILUTFunction", "SourceImageSequence",
)
_SLICE_KEYWORDS = ("ImagePositionPatient", "SliceLocation", "InstanceNumber")
#: Projection radiography: PresentationLUTShape is required (DX, MG, IO) or expected (CR) there.
_PROJECTION_MODALITIES = ("DX", "CR", "MG", "IO", "PX", "RG")
#: DX SOP classes (for presentation / for processing): the DX Image module requires Rescale
#: Slope 1 and Intercept 0 (PS3.3 C.8.11.3), so derived DX pixels are stored as real values.
_DX_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1")
#: Offset added to the source's SeriesNumber for a derived series (so it never looks like the original).
DERIVED_SERIES_OFFSET = 1000
_SINGLE_FRAME_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def _uid(uid_key: str | None, *parts: object) -> str:
    if uid_key is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(uid_key), *(str(p) for p in parts)])


def new_header(
    *, modality: str = "OT", sop_class: str = SecondaryCaptureImageStorage, uid_key: str | None = None
) -> Dataset:
    """A fresh minimal valid image header (patient/study/series/equipment/image modules).

    Args:
        modality: The Modality value.
        sop_class: SOP Class UID (Secondary Capture by default; CT Image Storage for CT).
        uid_key: Make the Study/Frame-of-reference UIDs deterministic from this key.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = _uid(uid_key, "study")
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = ""
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if sop_class == SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"
    if sop_class == CTImageStorage:
        ds.FrameOfReferenceUID = _uid(uid_key, "frame_of_reference")
        ds.PositionReferenceIndicator = ""
        ds.KVP = ""
        ds.AcquisitionNumber = ""
    return ds


def _load_reference(source: Any) -> Dataset | None:
    """Header of ``source`` (path, Dataset, DicomImage, CTSeries or None), deep-copied."""
    if source is None:
        return None
    if isinstance(source, Dataset):
        return copy.deepcopy(source)
    dataset = getattr(source, "dataset", None)
    if isinstance(dataset, Dataset):
        return copy.deepcopy(dataset)
    datasets = getattr(source, "datasets", None)
    if datasets:
        return copy.deepcopy(datasets[0])
    if isinstance(source, (str, os.PathLike)):
        try:
            return pydicom.dcmread(source, stop_before_pixels=True, force=True)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{source}: reference header cannot be read ({exc}); pass a DICOM file") from None
    raise InputError(f"reference must be a DICOM path, pydicom Dataset, DicomImage or CTSeries, got {type(source).__name__}")


def _strip(ds: Dataset) -> Dataset:
    """Remove pixel, LUT and multi-frame elements, overlays and file meta from a copied header."""
    for keyword in _DROP_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x60FF and t.group % 2 == 0]:
        del ds[tag]
    for tag in [t for t in ds.keys() if t.group == 0x0002]:
        del ds[tag]
    return ds


def _mirror_window(ds: Dataset) -> None:
    """Map WindowCenter of a MONOCHROME1 source onto the inverted (MONOCHROME2) values."""
    if "WindowCenter" not in ds:
        return
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    smin, smax = lut.stored_range(bits, signed)
    total = (smin + smax) * slope + 2 * intercept
    centers = ds.WindowCenter if isinstance(ds.WindowCenter, (list, pydicom.multival.MultiValue)) else [ds.WindowCenter]
    ds.WindowCenter = [format_number_as_ds(total - float(c)) for c in centers]


def _image_type(ds: Dataset) -> list[str]:
    old = ds.get("ImageType")
    rest = list(old)[2:] if old is not None and not isinstance(old, str) and len(old) > 2 else []
    return ["DERIVED", "SECONDARY", *[str(v) for v in rest]]


def _prepare(ref: Dataset | None, *, modality: str, uid_key: str | None) -> Dataset:
    if ref is None:
        sop = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
        return new_header(modality=modality, sop_class=sop, uid_key=uid_key)
    ds = ref
    source_sop = (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    multi = int(ds.get("NumberOfFrames") or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds
    was_mono1 = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    if was_mono1:
        _mirror_window(ds)
    _strip(ds)
    if multi or "Enhanced" in getattr(pydicom.uid.UID(source_sop[0]), "name", ""):
        ds.SOPClassUID = _SINGLE_FRAME_CLASS.get(str(ds.get("Modality", "")), SecondaryCaptureImageStorage)
        if ds.SOPClassUID == SecondaryCaptureImageStorage:
            ds.ConversionType = "WSD"
    ds.ImageType = _image_type(ds)
    if all(source_sop):
        item = Dataset()
        item.ReferencedSOPClassUID = source_sop[0]
        item.ReferencedSOPInstanceUID = source_sop[1]
        ds.SourceImageSequence = [item]
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray, rescale: Rescale, *, description: str,
                bits_stored: int = 16) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 1 if rescale.signed else 0
    ds.RescaleSlope = format_number_as_ds(rescale.slope)
    ds.RescaleIntercept = format_number_as_ds(rescale.intercept)
    if str(ds.get("Modality", "")) == "CT":
        ds.RescaleType = "HU"
    elif "RescaleType" not in ds:
        ds.RescaleType = "US"
    ds.DerivationDescription = description[:1024]
    ds.PixelData = np.ascontiguousarray(stored.astype(rescale.dtype.newbyteorder("<"))).tobytes()
    ds["PixelData"].VR = "OW"


def _save(ds: Dataset, out_path: str | os.PathLike[str]) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    with atomic_path(out_path) as tmp:
        ds.save_as(tmp, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return Path(out_path)


def _apply_tags(ds: Dataset, tags: Mapping[str, Any] | None) -> None:
    for keyword, value in (tags or {}).items():
        if pydicom.datadict.tag_for_keyword(keyword) is None:
            raise InputError(f"unknown DICOM keyword {keyword!r} in tags; use the standard keyword (e.g. 'PatientSex')")
        setattr(ds, keyword, value)


def _projection_bits(ref: Dataset | None, stored: np.ndarray, rescale: Rescale) -> int:
    """The source's BitsStored when the unsigned real values fit in it (so that a re-read
    normalises by the same stored range as the source), else 16."""
    if ref is None or rescale.signed or (rescale.slope, rescale.intercept) != (1.0, 0.0):
        return 16
    bits = int(ref.get("BitsStored") or 16)
    return bits if 1 <= bits <= 16 and int(stored.max(initial=0)) < 2**bits else 16


def _unit_rescale(ds: Dataset) -> bool:
    """True when ``ds`` stores real values (no rescale, or slope 1 and intercept 0)."""
    try:
        return float(ds.get("RescaleSlope", 1) or 1) == 1.0 and float(ds.get("RescaleIntercept", 0) or 0) == 0.0
    except (TypeError, ValueError):
        return False


def _mark_derived_series(ds: Dataset, series_description: str | None) -> None:
    """New SeriesDescription and SeriesNumber so that a derived series never looks like its source."""
    old = str(ds.get("SeriesDescription", "") or "").strip()
    text = series_description or (f"{old} [derived]" if old else "derived (medbench)")
    ds.SeriesDescription = text[:64]
    try:
        number = int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    ds.SeriesNumber = number + DERIVED_SERIES_OFFSET


def _mark_projection(ds: Dataset, was_mono1: bool) -> None:
    """Presentation elements of a MONOCHROME2 projection radiograph (PS3.3 C.8.11.3, C.11.6)."""
    ds.PresentationLUTShape = "IDENTITY"  # MONOCHROME2: larger stored value = brighter
    if was_mono1 and "PixelIntensityRelationshipSign" in ds:
        ds.PixelIntensityRelationshipSign = -int(ds.PixelIntensityRelationshipSign)
    if "RescaleType" in ds and str(ds.get("Modality", "")) == "DX":
        ds.RescaleType = "US"


def write_derived_image(
    pixels: np.ndarray,
    source: Any,
    out_path: str | os.PathLike[str],
    *,
    description: str,
    series_description: str | None = None,
    spacing: tuple[float, float] | None = None,
    modality: str | None = None,
    series_uid: str | None = None,
    rescale: tuple[float, float] | Rescale | None = None,
    tags: Mapping[str, Any] | None = None,
    uid_key: str | None = None,
    deidentify: Any = None,
) -> Path:
    """Write a 2-D image derived from ``source`` as a new DICOM instance (atomically).

    Args:
        pixels: ``(H, W)`` values in the source's output units, larger = brighter (as
            :func:`medbench.io.read_dicom` returns them; a MONOCHROME1 source is written as
            MONOCHROME2 with its window mirrored).
        source: Reference header: a DICOM path, pydicom Dataset, ``DicomImage`` or ``None`` for a
            fresh minimal header (Secondary Capture).
        out_path: File to write.
        description: DerivationDescription (what was done to the image).
        series_description: SeriesDescription of the derived series (default: the source's with
            " [derived]"); the SeriesNumber becomes the source's + ``DERIVED_SERIES_OFFSET``.
        spacing: ``(row, column)`` pixel spacing in mm; default: the source's, scaled when the
            image size changed.
        modality: Modality for a fresh header (default "OT"); ignored with a source.
        series_uid: SeriesInstanceUID to use (default: a new one).
        rescale: ``(slope, intercept)`` to force; default :func:`choose_rescale`, except for a DX
            source, whose IOD requires slope 1 and intercept 0: values are then stored as
            rounded real values (pass integer-valued pixels).
        tags: Extra elements by DICOM keyword, set last (e.g. ``{"PatientSex": "F"}``).
        uid_key: Derive the new UIDs deterministically from this key.
        deidentify: A :class:`medbench.io.deid.Deidentifier` (one per run): the written header
            follows the PS3.15 Basic Confidentiality Profile, UIDs remapped consistently.
            Default: the source header is kept, identity included.

    Projection radiographs (DX, CR, MG, ...) also get PresentationLUTShape IDENTITY, and with
    slope 1 / intercept 0 keep the source's BitsStored, so a re-read gives back the written values
    and the same stored range.

    Returns:
        The written path.
    """
    x = np.asarray(pixels)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"write_derived_image needs a 2-D (H, W) array, got shape {x.shape}; write volumes with write_ct_series")
    ref = _load_reference(source)
    src_modality = str(ref.get("Modality", "")) if ref is not None else ""
    was_mono1 = ref is not None and str(ref.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    projection = src_modality in _PROJECTION_MODALITIES
    if rescale is None and ref is not None and (str(ref.get("SOPClassUID", "")) in _DX_SOP_CLASSES
                                                or (projection and _unit_rescale(ref))):
        rescale = (1.0, 0.0)  # real values, as the source stores them
    chosen = _resolve_rescale(x, rescale)
    if projection and (chosen.slope, chosen.intercept) == (1.0, 0.0) and float(np.min(x)) >= -0.5:
        chosen = Rescale(1.0, 0.0, False)  # non-negative real values: unsigned, like the source
    old_shape = (int(ref.Rows), int(ref.Columns)) if ref is not None and "Rows" in ref else None
    old_spacing = _pixel_spacing(ref)
    ds = _prepare(ref, modality=modality or "OT", uid_key=uid_key)
    ds.SOPInstanceUID = _uid(uid_key, "sop", Path(out_path).name)
    ds.SeriesInstanceUID = series_uid or _uid(uid_key, "series")
    if spacing is None and old_spacing is not None:
        spacing = old_spacing
        if old_shape is not None and old_shape != x.shape:
            spacing = (old_spacing[0] * old_shape[0] / x.shape[0], old_spacing[1] * old_shape[1] / x.shape[1])
            logger.debug("%s: image resized %s -> %s, pixel spacing scaled", out_path, old_shape, x.shape)
    if spacing is not None:
        key = "PixelSpacing" if ref is None or "PixelSpacing" in ref or "ImagerPixelSpacing" not in ref else "ImagerPixelSpacing"
        setattr(ds, key, [format_number_as_ds(float(v)) for v in spacing])
    stored = chosen.quantize(x)
    _set_pixels(ds, stored, chosen, description=description,
                bits_stored=_projection_bits(ref, stored, chosen) if projection else 16)
    if projection:
        _mark_projection(ds, was_mono1)
    _mark_derived_series(ds, series_description)
    _apply_tags(ds, tags)
    if deidentify is not None:
        deidentify(ds)
    return _save(ds, out_path)


def _pixel_spacing(ds: Dataset | None) -> tuple[float, float] | None:
    from medbench.io.dicom import _spacing  # the one PixelSpacing reader

    return None if ds is None else _spacing(ds)


def write_ct_series(
    hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    reference: Any = None,
    spacing: tuple[float, float, float] | None = None,
    description: str,
    origin: Sequence[float] | None = None,
    direction: np.ndarray | None = None,
    series_uid: str | None = None,
    rescale: tuple[float, float] | Rescale | None = None,
    tags: Mapping[str, Any] | None = None,
    uid_key: str | None = None,
    prefix: str = "slice",
    deidentify: Any = None,
    series_description: str | None = None,
    series_number: int | None = None,
    slice_thickness: float | None = None,
) -> list[Path]:
    """Write a CT volume as one single-frame DICOM file per slice, geometry consistent throughout.

    Slice ``k`` gets ImagePositionPatient ``origin + k * dz * normal`` (normal = third column of
    ``direction``), the same ImageOrientationPatient, PixelSpacing ``(dy, dx)``,
    SpacingBetweenSlices ``dz``, SliceLocation (position along the normal) and InstanceNumber
    ``k + 1``; all slices share one new SeriesInstanceUID and one rescale. SliceThickness (the
    nominal reconstructed thickness, not the spacing) is kept from the reference; ``dz`` only when
    there is none. The series is marked as derived: ImageType DERIVED/SECONDARY, and, with a
    reference, a new SeriesDescription and SeriesNumber so it is not mistaken for the original.

    Args:
        hu: ``(Z, H, W)`` HU values.
        out_dir: Folder for ``{prefix}_{k:04d}.dcm`` files.
        reference: A ``CTSeries`` or a folder holding one series (per-slice headers reused when
            it has Z slices), a DICOM file or Dataset, or ``None`` for a fresh minimal CT header.
        spacing: ``(dz, dy, dx)`` mm; default the reference's (in-plane scaled if H/W changed) or 1 mm.
        description: DerivationDescription.
        origin: Position of the first slice's first pixel (x, y, z); default the reference's or 0.
        direction: 3x3 matrix with columns (row direction, column direction, slice normal), as
            ``CTSeries.direction``; default the reference's or identity.
        series_uid: SeriesInstanceUID (default new).
        rescale: ``(slope, intercept)`` to force; default :func:`choose_rescale` over the volume.
        tags: Extra elements by DICOM keyword, set on every slice.
        uid_key: Derive the new UIDs deterministically from this key.
        prefix: File name prefix.
        deidentify: A :class:`medbench.io.deid.Deidentifier` (one per run) applied to every slice.
        series_description: SeriesDescription (default: the reference's + " [medbench derived]",
            or "medbench derived").
        series_number: SeriesNumber (default: the reference's + 1000, or 1 without a reference).
        slice_thickness: SliceThickness in mm (default: the reference's, else ``dz``).

    Returns:
        The written paths, in slice order.
    """
    vol = np.asarray(hu)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise InputError(f"write_ct_series needs a (Z, H, W) volume, got shape {vol.shape}")
    if slice_thickness is not None and not slice_thickness > 0:
        raise InputError(f"slice_thickness must be positive (mm), got {slice_thickness}")
    chosen = _resolve_rescale(vol, rescale)
    if isinstance(reference, (str, os.PathLike)) and Path(reference).is_dir():
        from medbench.io.series import read_series

        reference = read_series(reference)
    ref_datasets = list(getattr(reference, "datasets", None) or [])
    base = _load_reference(reference)
    ref_spacing = getattr(reference, "spacing", None)
    ref_origin = getattr(reference, "origin", None)
    ref_direction = getattr(reference, "direction", None)
    if base is not None and ref_spacing is None:
        ref_spacing, ref_origin, ref_direction = _geometry_of(base)
    z, h, w = vol.shape
    if spacing is None:
        if ref_spacing is not None:
            dz, dy, dx = (float(v) for v in ref_spacing)
            if base is not None and "Rows" in base and (int(base.Rows), int(base.Columns)) != (h, w):
                dy, dx = dy * int(base.Rows) / h, dx * int(base.Columns) / w
        else:
            logger.warning("write_ct_series: no spacing and no reference; using 1 mm voxels")
            dz, dy, dx = 1.0, 1.0, 1.0
    else:
        dz, dy, dx = (float(v) for v in spacing)
    if min(dz, dy, dx) <= 0:
        raise InputError(f"spacing must be positive, got {(dz, dy, dx)}")
    org = np.asarray(origin if origin is not None else (ref_origin if ref_origin is not None else (0.0, 0.0, 0.0)), dtype=np.float64)
    mat = np.asarray(direction if direction is not None else (ref_direction if ref_direction is not None else np.eye(3)), dtype=np.float64)
    if mat.shape != (3, 3):
        raise InputError(f"direction must be a 3x3 matrix, got shape {mat.shape}")
    normal = mat[:, 2]
    iop = [format_number_as_ds(float(v)) for v in (*mat[:, 0], *mat[:, 1])]
    sid = series_uid or _uid(uid_key, "series")
    use_per_slice = len(ref_datasets) == z
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_uid = _uid(uid_key, "frame_of_reference") if base is None else None
    paths: list[Path] = []
    for k in range(z):
        ref_k = copy.deepcopy(ref_datasets[k]) if use_per_slice else (copy.deepcopy(base) if base is not None else None)
        thickness = slice_thickness if slice_thickness is not None else _positive(ref_k, "SliceThickness")
        new_desc, new_number = _derived_series(ref_k, series_description, series_number)
        ds = _prepare(ref_k, modality="CT", uid_key=uid_key)
        for keyword in _SLICE_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
        if base is None:
            ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        if ds.SOPClassUID == SecondaryCaptureImageStorage:
            ds.SOPClassUID = CTImageStorage
        pos = org + k * dz * normal
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in pos]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [format_number_as_ds(dy), format_number_as_ds(dx)]
        ds.SliceThickness = format_number_as_ds(float(thickness) if thickness is not None else dz)
        ds.SpacingBetweenSlices = format_number_as_ds(dz)
        if new_desc is not None:
            ds.SeriesDescription = new_desc
        if new_number is not None:
            ds.SeriesNumber = new_number
        ds.SliceLocation = format_number_as_ds(float(pos @ normal))
        ds.InstanceNumber = k + 1
        ds.SeriesInstanceUID = sid
        ds.SOPInstanceUID = _uid(uid_key, "sop", k) if uid_key is not None else generate_uid()
        _set_pixels(ds, chosen.quantize(vol[k]), chosen, description=description)
        _apply_tags(ds, tags)
        if deidentify is not None:
            deidentify(ds)
        paths.append(_save(ds, out_dir / f"{prefix}_{k:04d}.dcm"))
    return paths


def _positive(ds: Dataset | None, keyword: str) -> float | None:
    """A positive numeric element of ``ds``, or None when absent, empty or not positive."""
    if ds is None or ds.get(keyword) in (None, ""):
        return None
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _derived_series(ref: Dataset | None, description: str | None,
                    number: int | None) -> tuple[str | None, int | None]:
    """SeriesDescription and SeriesNumber of a derived series (None: leave the header's)."""
    if ref is None:
        return description or "medbench derived", number
    old = str(ref.get("SeriesDescription", "") or "").strip()
    suffix = " [medbench derived]"
    desc = description or (f"{old[:64 - len(suffix)]}{suffix}" if old else "medbench derived")
    if number is None:
        try:
            number = int(ref.get("SeriesNumber")) + 1000
        except (TypeError, ValueError):
            number = 1000
    return desc[:64], int(number)  # LO holds at most 64 characters


def _geometry_of(ds: Dataset) -> tuple[tuple[float, float, float] | None, Any, Any]:
    """Spacing/origin/direction from a single reference header (None where absent)."""
    ps = _pixel_spacing(ds)
    dz = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    spacing = (dz, ps[0], ps[1]) if ps is not None else None
    origin = [float(v) for v in ds.ImagePositionPatient] if ds.get("ImagePositionPatient") else None
    direction = None
    if ds.get("ImageOrientationPatient") and len(ds.ImageOrientationPatient) == 6:
        row = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        col = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        direction = np.stack([row, col, np.cross(row, col)], axis=1)
    return spacing, origin, direction
