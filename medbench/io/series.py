"""CT (and any cross-sectional) series: group files by SeriesInstanceUID and stack them in space.

Slices are ordered by their position projected on the slice normal (cross product of the two
ImageOrientationPatient direction cosines), never by InstanceNumber or file name.
:func:`read_series_sitk` is an independent path through SimpleITK/GDCM for whole series.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medbench.errors import InputError
from medbench.io.dicom import DicomReadError, read_dicom
from medbench.io.manifest import list_files

logger = logging.getLogger(__name__)

_HEADER_TAGS = [
    "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation",
    "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
]


@dataclass
class CTSeries:
    """A stacked series.

    Attributes:
        hu: ``(Z, H, W)`` float32 modality values (HU for CT), slices in ascending position.
        spacing: ``(dz, dy, dx)`` in mm.
        origin: ImagePositionPatient ``(x, y, z)`` of the first slice.
        direction: 3x3 matrix, columns = row direction, column direction, slice normal (the
            ITK convention: ``np.reshape(sitk_image.GetDirection(), (3, 3))``).
        paths: File of each slice.
        datasets: Header of each slice (pixel data removed).
        series_uid: SeriesInstanceUID.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    paths: list[str]
    datasets: list[Dataset] = field(default_factory=list)
    series_uid: str = ""


def _expand(folder_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
            exclude: str | os.PathLike[str] | None = None) -> list[str]:
    if isinstance(folder_or_paths, (str, os.PathLike)):
        root = Path(folder_or_paths)
        if root.is_dir():
            return list_files(root, exclude=exclude)  # the scan's listing: recursive, hidden entries skipped, sorted
        if root.is_file():
            return [str(root)]
        raise InputError(f"{root}: no such file or folder")
    return [str(p) for p in folder_or_paths]


def _header(path: str) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as exc:  # noqa: BLE001 - non-DICOM files in the folder are skipped
        logger.debug("%s: skipped (%s)", path, exc)
        return None


def group_series(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 exclude: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Map SeriesInstanceUID -> sorted file paths (files that are not DICOM are skipped).

    Args:
        paths: A folder (searched recursively) or an iterable of files.
        exclude: A sub-folder left out of a folder's listing (an output folder inside the input).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for path in _expand(paths, exclude):
        ds = _header(path)
        uid = str(ds.get("SeriesInstanceUID", "")) if ds is not None else ""
        if uid:
            groups[uid].append(path)
    return {uid: sorted(groups[uid]) for uid in sorted(groups)}


def _floats(value: object, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def slice_geometry(datasets: list[Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation and positions of single-frame slices.

    Returns:
        ``(direction 3x3, positions along the normal (N,), IPP (N, 3))``. Falls back to
        SliceLocation, then InstanceNumber (with a warning), when positions are missing.

    Raises:
        InputError: Mixed orientations.
    """
    iops = [_floats(ds.get("ImageOrientationPatient"), 6) for ds in datasets]
    ipps = [_floats(ds.get("ImagePositionPatient"), 3) for ds in datasets]
    if all(i is not None for i in iops) and all(p is not None for p in ipps):
        first = iops[0]
        assert first is not None
        for i, iop in enumerate(iops):
            if np.abs(iop - first).max() > 1e-4:  # type: ignore[operator]
                raise InputError(f"slice {i} has a different ImageOrientationPatient; the series mixes orientations")
        row, col = first[:3], first[3:]
        normal = np.cross(row, col)
        norm = np.linalg.norm(normal)
        if norm < 1e-6:
            raise InputError("ImageOrientationPatient direction cosines are parallel; the header is corrupt")
        normal = normal / norm
        ipp = np.stack(ipps)  # type: ignore[arg-type]
        return np.stack([row, col, normal], axis=1), ipp @ normal, ipp
    locations = [ds.get("SliceLocation") for ds in datasets]
    if all(v is not None for v in locations):
        logger.warning("series has no ImagePositionPatient/ImageOrientationPatient; ordering by SliceLocation")
        pos = np.array([float(v) for v in locations])  # type: ignore[arg-type]
    else:
        logger.warning("series has no position tags; ordering by InstanceNumber (spacing unknown)")
        pos = np.array([float(ds.get("InstanceNumber") or i) for i, ds in enumerate(datasets)])
    ipp = np.zeros((len(datasets), 3))
    ipp[:, 2] = pos
    return np.eye(3), pos, ipp


def sort_slices(datasets: list[Dataset]) -> np.ndarray:
    """Indices that order ``datasets`` by position along the slice normal (ascending)."""
    _, pos, _ = slice_geometry(datasets)
    return np.argsort(pos, kind="stable")


def _dz(pos: np.ndarray, first: Dataset) -> float:
    if pos.size < 2:
        return float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    diffs = np.diff(pos)
    if np.any(np.abs(diffs) < 1e-6):
        raise InputError("two slices share one position (duplicate slices or several acquisitions in one series)")
    dz = float(np.median(diffs))
    if np.abs(diffs - dz).max() > 1e-3 * max(1.0, abs(dz)):
        logger.warning("slice spacing is not uniform (%.4g..%.4g mm); using the median %.4g", diffs.min(), diffs.max(), dz)
    return dz


def read_series(
    folder_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], series_uid: str | None = None
) -> CTSeries:
    """Read one series into a ``(Z, H, W)`` HU volume ordered along the slice normal.

    Args:
        folder_or_paths: A folder (recursive), one file (a multi-frame volume) or a list of files.
        series_uid: Which series, when the files hold several.

    Raises:
        InputError: No series, several series without ``series_uid``, inconsistent slices; a
            :class:`DicomReadError` for a slice that cannot be decoded.
    """
    groups = group_series(folder_or_paths)
    if not groups:
        raise InputError(f"{folder_or_paths}: no DICOM files with a SeriesInstanceUID")
    if series_uid is None:
        if len(groups) > 1:
            listing = ", ".join(f"{uid} ({len(p)} files)" for uid, p in groups.items())
            raise InputError(f"{folder_or_paths}: {len(groups)} series found; pass series_uid= one of {listing}")
        series_uid = next(iter(groups))
    elif series_uid not in groups:
        raise InputError(f"{folder_or_paths}: series {series_uid} not found; available: {', '.join(groups)}")
    paths = groups[series_uid]
    if len(paths) == 1:
        return _read_multiframe(paths[0], series_uid)
    images = [read_dicom(p) for p in paths]
    datasets = [im.dataset for im in images]
    for im in images:
        if im.pixels.ndim != 2:
            raise DicomReadError(im.meta["path"], "inconsistent", f"slice has shape {im.pixels.shape}, expected (H, W)")
    shapes = {im.pixels.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"series {series_uid}: slices differ in size {sorted(shapes)}")
    direction, pos, ipp = slice_geometry(datasets)  # type: ignore[arg-type]
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    dz = _dz(pos, datasets[0])  # type: ignore[arg-type]
    spacing_yx = images[0].meta.get("pixel_spacing") or (1.0, 1.0)
    for ds in datasets:
        if ds is not None and "PixelData" in ds:
            del ds.PixelData
    return CTSeries(
        hu=np.stack([images[i].pixels for i in order]).astype(np.float32),
        spacing=(dz, float(spacing_yx[0]), float(spacing_yx[1])),
        origin=tuple(float(v) for v in ipp[order[0]]),  # type: ignore[arg-type]
        direction=direction,
        paths=[paths[i] for i in order],
        datasets=[datasets[i] for i in order],  # type: ignore[misc]
        series_uid=series_uid,
    )


def _read_multiframe(path: str, series_uid: str) -> CTSeries:
    """A single file: an enhanced multi-frame volume (positions from functional groups)."""
    image = read_dicom(path)
    ds = image.dataset
    assert ds is not None
    vol = image.pixels if image.pixels.ndim == 3 else image.pixels[None]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    ipps = [
        _floats(item.PlanePositionSequence[0].get("ImagePositionPatient"), 3) if "PlanePositionSequence" in item else None
        for item in per_frame
    ]
    orient = shared.get("PlaneOrientationSequence")
    iop = _floats(orient[0].get("ImageOrientationPatient"), 6) if orient else _floats(ds.get("ImageOrientationPatient"), 6)
    spacing_yx = image.meta.get("pixel_spacing") or (1.0, 1.0)
    if len(ipps) == vol.shape[0] and all(p is not None for p in ipps) and iop is not None:
        row, col = iop[:3], iop[3:]
        normal = np.cross(row, col)
        normal /= np.linalg.norm(normal)
        ipp = np.stack(ipps)  # type: ignore[arg-type]
        pos = ipp @ normal
        order = np.argsort(pos, kind="stable")
        measures = shared.get("PixelMeasuresSequence")
        thickness = float(measures[0].get("SliceThickness") or 1.0) if measures else 1.0
        dz = _dz(pos[order], Dataset()) if vol.shape[0] > 1 else thickness
        direction = np.stack([row, col, normal], axis=1)
        origin = tuple(float(v) for v in ipp[order[0]])
    else:
        if vol.shape[0] > 1:
            logger.warning("%s: multi-frame file without per-frame positions; frames kept in file order", path)
        order = np.arange(vol.shape[0])
        ds_ipp = _floats(ds.get("ImagePositionPatient"), 3)
        origin = tuple(float(v) for v in (ds_ipp if ds_ipp is not None else (0.0, 0.0, 0.0)))
        if iop is not None:
            normal = np.cross(iop[:3], iop[3:])
            direction = np.stack([iop[:3], iop[3:], normal / np.linalg.norm(normal)], axis=1)
        else:
            direction = np.eye(3)
        dz = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    if "PixelData" in ds:
        del ds.PixelData
    return CTSeries(
        hu=np.ascontiguousarray(vol[order]).astype(np.float32),
        spacing=(dz, float(spacing_yx[0]), float(spacing_yx[1])),
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        paths=[path],
        datasets=[ds],
        series_uid=series_uid,
    )


def read_series_sitk(folder: str | os.PathLike[str], series_uid: str | None = None) -> CTSeries:
    """Read a series with SimpleITK's GDCM series reader (an independent second path).

    Args:
        folder: Folder holding the series files (not recursive, as GDCM lists it).
        series_uid: Which series, when the folder holds several.
    """
    import SimpleITK as sitk

    folder = str(folder)
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder; read_series_sitk needs the folder of the series")
    reader = sitk.ImageSeriesReader()
    ids = list(reader.GetGDCMSeriesIDs(folder))
    if not ids:
        raise InputError(f"{folder}: SimpleITK found no DICOM series")
    if series_uid is None:
        if len(ids) > 1:
            raise InputError(f"{folder}: {len(ids)} series found; pass series_uid= one of {', '.join(ids)}")
        series_uid = ids[0]
    files = list(reader.GetGDCMSeriesFileNames(folder, series_uid))
    reader.SetFileNames(files)
    image = reader.Execute()
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    sx, sy, sz = image.GetSpacing()
    return CTSeries(
        hu=hu,
        spacing=(float(sz), float(sy), float(sx)),
        origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        paths=files,
        datasets=[],
        series_uid=series_uid,
    )
