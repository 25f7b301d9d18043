"""Read one DICOM file into float pixels + metadata, with clear errors for unusable files.

:func:`read_dicom` applies the modality LUT (CT in HU), masks bits above BitsStored, expands
PALETTE COLOR, inverts MONOCHROME1 so that larger values are brighter, and optionally applies the
file's VOI LUT / window. :func:`read_header` and :func:`check_pixel_data` are the cheap checks that
``medbench ingest`` runs on every file without decoding pixels.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medbench.errors import InputError
from medbench.io import lut
from medbench.io.checks import (
    _CHECK_KEYWORDS,
    _PIXEL_TAGS,
    _REQUIRED_IMAGE_TAGS,
    DICOM_EXTRA,
    REASONS,
    DicomReadError,
    _frames,
    check_pixel_data,
    pixel_keyword,
    stray_bytes_error,
    transfer_syntax,
)
from medbench.io.lut import to_unit
from medbench.io.sniff import sniff

logger = logging.getLogger(__name__)

__all__ = [
    "DICOM_EXTRA", "DicomImage", "DicomReadError", "REASONS", "check_pixel_data", "pixel_keyword", "read_dicom",
    "read_header", "to_unit", "transfer_syntax",
]


@dataclass
class DicomImage:
    """Decoded pixels (float32, larger = brighter), a metadata dict and the pydicom dataset."""

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    dataset: Dataset | None = None


def read_header(
    path: str | os.PathLike[str],
    *,
    defer_size: int | str | None = "1 KB",
    keywords: list[str] | None = None,
    fmt: str | None = None,
) -> Dataset:
    """Read a DICOM header without loading large values (pixel data stays on disk).

    Files without the 128-byte preamble are accepted when they start like a DICOM dataset.

    Args:
        path: The file.
        defer_size: Values larger than this stay on disk (pydicom ``defer_size``).
        keywords: Keep only these elements (plus the image-module and pixel elements that
            :func:`check_pixel_data` needs); ``None`` keeps all.
        fmt: The file's :func:`medbench.io.sniff.sniff` result when already known.

    Raises:
        DicomReadError: ``not_dicom``, ``truncated`` (file ends inside the header) or
            ``inconsistent`` (a header pydicom cannot parse).
    """
    tags = None if keywords is None else list(_header_tags(tuple(keywords)))
    return _read(path, defer_size=defer_size, specific_tags=tags, fmt=fmt)


@functools.lru_cache(maxsize=16)
def _header_tags(keywords: tuple[str, ...]) -> tuple[int, ...]:
    """Sorted tags of ``keywords`` plus what :func:`check_pixel_data` needs (computed once per set)."""
    wanted = {*keywords, *_REQUIRED_IMAGE_TAGS, *_CHECK_KEYWORDS}
    return tuple(sorted({int(pydicom.datadict.tag_for_keyword(k)) for k in wanted} | set(_PIXEL_TAGS)))


def _read(
    path: str | os.PathLike[str],
    *,
    defer_size: int | str | None = None,
    specific_tags: list[int] | None = None,
    fmt: str | None = None,
) -> Dataset:
    fmt = fmt or sniff(path)
    if fmt == "dicom_shifted":
        raise stray_bytes_error(path)
    if fmt not in ("dicom", "dicom_raw"):
        raise DicomReadError(path, "not_dicom", f"not a DICOM file (looks like {fmt})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=fmt == "dicom_raw", defer_size=defer_size, specific_tags=specific_tags)
        except InvalidDicomError as exc:
            raise DicomReadError(path, "not_dicom", f"not a DICOM file ({exc})") from None
        except (EOFError, OSError) as exc:
            raise DicomReadError(path, "truncated", f"file ends inside the header ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad headers
            text = str(exc).lower()
            reason = "truncated" if ("end of file" in text or "eof" in text) else "inconsistent"
            raise DicomReadError(path, reason, f"header cannot be parsed ({type(exc).__name__}: {exc})") from None
    for w in caught:
        text = str(w.message)
        if "End of file reached" in text or "before delimiter" in text:
            raise DicomReadError(path, "truncated", f"file is truncated ({text.split(' in file ')[0]})")
    if fmt == "dicom_raw" and not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData")):
        raise DicomReadError(path, "not_dicom", "no DICOM preamble and no recognisable DICOM elements")
    if len(ds) == 0:
        if _meta_truncated(path):
            raise DicomReadError(path, "truncated", "file ends inside the file meta header")
        raise DicomReadError(path, "not_dicom", "no DICOM data elements after the file meta header")
    return ds


def _meta_truncated(path: str | os.PathLike[str]) -> bool:
    """Whether the file ends before the end its file meta group length (0002,0000) declares."""
    with open(path, "rb") as fh:
        head = fh.read(144)
        size = os.fstat(fh.fileno()).st_size
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return False
    return 144 + int.from_bytes(head[140:144], "little") > size


def read_dicom(
    path: str | os.PathLike[str], *, voi: bool = False, frame: int | None = None, budget: int | None = None
) -> DicomImage:
    """Read one DICOM image as float32 pixels where larger values are brighter.

    Args:
        path: The file.
        voi: Apply the file's VOI LUT or window (first one) and return values in [0, 1];
            files without one are min-max scaled. ``False`` keeps modality units (HU for CT).
        frame: Read only this frame of a multi-frame file (0-based).
        budget: Pixel budget in bytes checked before decoding (:func:`medbench.io.checks.pixel_budget`).

    Returns:
        :class:`DicomImage` with pixels ``(H, W)``, ``(F, H, W)`` for multi-frame files,
        ``(H, W, 3)``/``(F, H, W, 3)`` for colour (RGB; palette colour expanded).

    Raises:
        DicomReadError: With ``.reason`` in :data:`REASONS`.
    """
    ds = _read(path)
    ts = check_pixel_data(ds, path, budget=budget)
    if ds.get("file_meta") is None or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts  # in memory only; the file is never modified
    n_frames = _frames(ds)
    if frame is not None and not 0 <= frame < n_frames:
        raise InputError(f"{path}: frame {frame} out of range (file has {n_frames} frames)")
    arr = _decode(ds, path, frame)
    try:
        with warnings.catch_warnings():  # pydicom warns about invalid header values of the input
            warnings.simplefilter("ignore", UserWarning)
            return _to_image(arr, ds, path, ts, voi=voi, frame=frame, n_frames=n_frames)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise DicomReadError(path, "inconsistent", f"header values cannot be applied to the pixels ({exc})") from None


def _to_image(
    arr: np.ndarray, ds: Dataset, path: str | os.PathLike[str], ts: UID, *, voi: bool, frame: int | None, n_frames: int
) -> DicomImage:
    """Bit masking, palette, modality LUT, VOI and MONOCHROME1 handling of decoded pixels."""
    photometric = str(ds.PhotometricInterpretation).strip()
    keyword = pixel_keyword(ds)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    bits_stored = int(ds.get("BitsStored") or ds.BitsAllocated)
    if keyword == "PixelData" and int(ds.BitsAllocated) > 1:
        arr = lut.mask_bits(arr, bits_stored, signed)
    frames = [frame] if frame is not None else list(range(n_frames))
    multi = frame is None and n_frames > 1
    colour = int(ds.SamplesPerPixel) == 3 or photometric == "PALETTE COLOR"
    meta = _meta(ds, path, ts)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001
            raise DicomReadError(path, "inconsistent", f"palette colour LUT cannot be applied ({exc})") from None
    if colour:
        out = np.asarray(arr, dtype=np.float64)
        if voi:
            _, hi = lut.stored_range(bits_stored if photometric != "PALETTE COLOR" else 16, False)
            out = out / max(float(out.max()), 1.0) if photometric == "PALETTE COLOR" else out / hi
        meta.update(inverted=False, voi="scale" if voi else "none", colour=True)
        return DicomImage(_finite_f32(out, path), meta, ds)
    out, lo, hi = _modality(arr, ds, frames, multi, bits_stored, signed, keyword)
    meta["colour"] = False
    if voi:
        out, how = _apply_voi(out, ds, frames, multi, path)
        meta["voi"] = how
        if photometric == "MONOCHROME1":
            out = 1.0 - out
    else:
        meta["voi"] = "none"
        if photometric == "MONOCHROME1":
            out = lut.invert(out, lo, hi)
    meta["inverted"] = photometric == "MONOCHROME1"
    meta["inversion_range"] = (float(np.min(lo)), float(np.max(hi)))
    return DicomImage(_finite_f32(out, path), meta, ds)


def _finite_f32(x: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    out = np.asarray(x, dtype=np.float32)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        logger.warning("%s: %d non-finite pixel values", path, int((~np.isfinite(out)).sum()))
    return out


def _decode(ds: Dataset, path: str | os.PathLike[str], frame: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if frame is not None:
                ds.pixel_array_options(index=frame)
            return np.asarray(ds.pixel_array)
    except ValueError as exc:
        text = str(exc)
        if "less than expected" in text:
            reason = "truncated"
        elif "invalid literal" in text:
            reason = "inconsistent"
        else:
            reason = "undecodable"
        raise DicomReadError(path, reason, f"pixel data cannot be decoded ({text.splitlines()[0]})") from None
    except AttributeError as exc:
        raise DicomReadError(path, "inconsistent", f"image header incomplete ({exc})") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise anything
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomReadError(path, "undecodable", f"pixel data cannot be decoded ({first})") from None
    except BaseException as exc:  # noqa: BLE001 - e.g. pyo3 PanicException from a Rust decoder
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DicomReadError(path, "decoder_crash", f"decoder crashed ({type(exc).__name__}: {first})") from None


def _fg_item(ds: Dataset, sequence: str, frame: int) -> Dataset | None:
    """Item of ``sequence`` for ``frame`` from per-frame, then shared functional groups."""
    for group, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(group)
        if seq and len(seq) > idx:
            inner = seq[idx].get(sequence)
            if inner:
                return inner[0]
    return None


def _modality(
    arr: np.ndarray, ds: Dataset, frames: list[int], multi: bool, bits_stored: int, signed: bool, keyword: str | None
) -> tuple[np.ndarray, Any, Any]:
    """Apply the modality LUT; return values and the output range of the stored range."""
    if keyword != "PixelData":
        x = np.asarray(arr, dtype=np.float64)
        finite = x[np.isfinite(x)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        return x, lo, hi
    smin, smax = lut.stored_range(bits_stored, signed)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        table = _lut_table(ds.ModalityLUTSequence[0])
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64), float(table.min()), float(table.max())
    slopes, intercepts = [], []
    for f in frames:
        src: Dataset | None = ds if ("RescaleSlope" in ds or "RescaleIntercept" in ds) else _fg_item(ds, "PixelValueTransformationSequence", f)
        slope = float(src.get("RescaleSlope", 1.0) if src is not None else 1.0) or 1.0
        intercept = float(src.get("RescaleIntercept", 0.0) if src is not None else 0.0)
        slopes.append(slope)
        intercepts.append(intercept)
    s = np.asarray(slopes)
    b = np.asarray(intercepts)
    if multi:
        s = lut.per_frame(s, arr.ndim - 1)
        b = lut.per_frame(b, arr.ndim - 1)
    else:
        s, b = float(s[0]), float(b[0])
    out = lut.rescale(arr, s, b)
    ends = (s * smin + b, s * smax + b)
    return out, np.minimum(*ends), np.maximum(*ends)


def _apply_voi(x: np.ndarray, ds: Dataset, frames: list[int], multi: bool, path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
    """File VOI to [0, 1]: VOI LUT sequence, else first window, else min-max per image."""
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        table = _lut_table(item)
        desc = [int(v) for v in item.LUTDescriptor]
        first = desc[1] if desc[1] < 32768 else desc[1] - 65536
        idx = np.clip(np.rint(x).astype(np.int64) - first, 0, table.size - 1)
        y = table[idx]
        lo, hi = table.min(), table.max()
        return ((y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)), "lut"
    outs = []
    how = "window"
    stack = x if multi else x[None]
    for i, f in enumerate(frames):
        src = ds if "WindowCenter" in ds else _fg_item(ds, "FrameVOILUTSequence", f)
        try:
            center = _first(src.WindowCenter) if src is not None else None
            width = _first(src.WindowWidth) if src is not None else None
            function = str(src.get("VOILUTFunction", "LINEAR")) if src is not None else "LINEAR"
            if center is None or width is None:
                raise InputError("no window")
            outs.append(lut.window(stack[i], center, width, function))
        except (InputError, AttributeError, TypeError, ValueError):
            how = "minmax"
            outs.append(lut.to_unit(stack[i]).astype(np.float64))
    y = np.stack(outs)
    return (y if multi else y[0]), how


def _lut_table(item: Dataset) -> np.ndarray:
    """LUT Data as float64, whether stored as a US list or as OW bytes."""
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        return np.frombuffer(data, dtype="<u2").astype(np.float64)
    return np.atleast_1d(np.asarray(data, dtype=np.float64))


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return float(value[0]) if len(value) else None
    return float(value)


def _spacing(ds: Dataset | Mapping[str, Any]) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, ImagerPixelSpacing or the functional groups;
    ``ds`` may also be a keyword -> value dict (:func:`medbench.io.fastheader.header_values`)."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        try:
            if (value is not None and not isinstance(value, str) and len(value) == 2
                    and float(value[0]) > 0 and float(value[1]) > 0):
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    if not isinstance(ds, Dataset):
        return None
    item = _fg_item(ds, "PixelMeasuresSequence", 0) if "SharedFunctionalGroupsSequence" in ds else None
    if item is not None and item.get("PixelSpacing"):
        return float(item.PixelSpacing[0]), float(item.PixelSpacing[1])
    return None


def _meta(ds: Dataset, path: str | os.PathLike[str], ts: UID) -> dict[str, Any]:
    def s(key: str) -> str:
        value = ds.get(key)
        return "" if value is None else str(value).strip()

    return {
        "path": str(Path(path)),
        "sop_uid": s("SOPInstanceUID"),
        "series_uid": s("SeriesInstanceUID"),
        "study_uid": s("StudyInstanceUID"),
        "modality": s("Modality"),
        "manufacturer": s("Manufacturer"),
        "model": s("ManufacturerModelName"),
        "photometric": s("PhotometricInterpretation"),
        "transfer_syntax": str(ts),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "frames": _frames(ds),
        "samples_per_pixel": int(ds.SamplesPerPixel),
        "bits_allocated": int(ds.BitsAllocated),
        "bits_stored": int(ds.get("BitsStored") or ds.BitsAllocated),
        "pixel_representation": int(ds.get("PixelRepresentation") or 0),
        "rescale_slope": float(ds.get("RescaleSlope", 1.0) or 1.0),
        "rescale_intercept": float(ds.get("RescaleIntercept", 0.0) or 0.0),
        "window": _window_of(ds),
        "pixel_spacing": _spacing(ds),
    }


def _window_of(ds: Dataset) -> tuple[float, float] | None:
    try:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    except (TypeError, ValueError):
        return None
    return (center, width) if center is not None and width is not None else None
