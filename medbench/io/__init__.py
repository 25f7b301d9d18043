"""medbench.io: DICOM and image files in, derived DICOM out.

Public API (imported lazily so that ``import medbench.io`` stays cheap):

- :func:`read_dicom`, :func:`to_unit`, :class:`DicomReadError`, :class:`DicomImage` (``dicom``)
- :func:`read_series`, :func:`read_series_sitk`, :func:`group_series`, :class:`CTSeries` (``series``)
- :func:`scan`, :class:`ScanResult` (``manifest``)
- :func:`read_image`, the one raster/DICOM reader to [0, 1] (``images``)
- :func:`write_derived_image`, :func:`write_ct_series`, :func:`new_header` (``write``),
  :func:`choose_rescale` (``rescale``)

Reason codes for unusable files (``DicomReadError.reason`` and the quarantine table): not_dicom,
no_pixel_data, missing_decoder, unsupported_syntax, undecodable, truncated, inconsistent (+ "error"
in the quarantine for an unexpected failure). PNG/JPEG/TIFF files found by ``scan`` are listed in
the manifest with ``format`` png/jpeg/tiff and modality "OT".
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_dicom": "medbench.io.dicom",
    "read_header": "medbench.io.dicom",
    "DicomReadError": "medbench.io.dicom",
    "DicomImage": "medbench.io.dicom",
    "REASONS": "medbench.io.dicom",
    "to_unit": "medbench.io.lut",
    "read_series": "medbench.io.series",
    "read_series_sitk": "medbench.io.series",
    "group_series": "medbench.io.series",
    "CTSeries": "medbench.io.series",
    "scan": "medbench.io.manifest",
    "ScanResult": "medbench.io.manifest",
    "MANIFEST_COLUMNS": "medbench.io.manifest",
    "read_image": "medbench.io.images",
    "write_derived_image": "medbench.io.write",
    "write_ct_series": "medbench.io.write",
    "new_header": "medbench.io.write",
    "choose_rescale": "medbench.io.rescale",
    "Rescale": "medbench.io.rescale",
    "check_pixel_data": "medbench.io.checks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medbench.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
