"""Manifest columns for series ordering, intensity and study context (issue 18, item 3).

Both scan paths (the fast byte parser and pydicom's reader) hand :func:`extra_columns` the values
that :func:`medbench.io.fastheader.header_values` reports (str / list of str for text VRs, int for
US), so both give identical rows.

Representation (documented in docs/interfaces.md terms):

- ``instance_number``, ``bits_stored``: integers (missing or unparsable: NA);
- ``slice_thickness``, ``rescale_slope``, ``rescale_intercept``: floats, the first value (NaN when
  absent; a missing slope/intercept is *not* filled with 1/0 so that "absent" stays visible);
- ``image_position``, ``window_center``, ``window_width``, ``image_type``: DICOM's own
  backslash-joined text (all values, e.g. ``"-125\\-120\\35.5"``, ``"40\\400"``), exact as stored;
- ``body_part``, ``study_date`` (YYYYMMDD), ``presentation_intent``: text;
- ``transfer_syntax_name``: pydicom's name of the transfer syntax UID (the UID when unknown).
"""

from __future__ import annotations

import math
from typing import Any

from pydicom.uid import UID

#: Header keywords these columns need (added to the scan's keyword list).
EXTRA_KEYWORDS = (
    "InstanceNumber", "ImagePositionPatient", "SliceThickness", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "BitsStored", "BodyPartExamined", "StudyDate", "ImageType",
    "PresentationIntentType",
)
EXTRA_INT_COLUMNS = ("instance_number", "bits_stored")
EXTRA_FLOAT_COLUMNS = ("slice_thickness", "rescale_slope", "rescale_intercept")
EXTRA_TEXT_COLUMNS = (
    "image_position", "window_center", "window_width", "body_part", "study_date", "image_type",
    "presentation_intent", "transfer_syntax_name",
)
EXTRA_COLUMNS = (
    "instance_number", "image_position", "slice_thickness", "rescale_slope", "rescale_intercept",
    "window_center", "window_width", "bits_stored", "body_part", "study_date", "image_type",
    "presentation_intent", "transfer_syntax_name",
)


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def joined(value: Any) -> str:
    """All values as DICOM text, backslash-joined ("" when absent)."""
    return "\\".join(_values(value))


def first_float(value: Any) -> float:
    """The first value as a float (NaN when absent or not a number)."""
    vals = _values(value)
    try:
        out = float(vals[0]) if vals else math.nan
    except ValueError:
        return math.nan
    return out if math.isfinite(out) else math.nan


def first_int(value: Any) -> int | None:
    """The first value as an int (None when absent, not a number or not whole)."""
    vals = _values(value)
    if not vals:
        return None
    try:
        return int(vals[0])
    except ValueError:
        f = first_float(vals[0])
        return int(f) if math.isfinite(f) and f.is_integer() else None


def transfer_syntax_name(uid: str) -> str:
    """pydicom's name of a transfer syntax UID (the UID itself when unknown; "" when empty)."""
    if not uid:
        return ""
    return str(UID(uid).name)


def extra_columns(v: dict[str, Any], transfer_syntax: str) -> dict[str, Any]:
    """The extra manifest columns from header values ``v`` (keys: :data:`EXTRA_KEYWORDS`)."""
    return {
        "instance_number": first_int(v.get("InstanceNumber")),
        "image_position": joined(v.get("ImagePositionPatient")),
        "slice_thickness": first_float(v.get("SliceThickness")),
        "rescale_slope": first_float(v.get("RescaleSlope")),
        "rescale_intercept": first_float(v.get("RescaleIntercept")),
        "window_center": joined(v.get("WindowCenter")),
        "window_width": joined(v.get("WindowWidth")),
        "bits_stored": first_int(v.get("BitsStored")),
        "body_part": joined(v.get("BodyPartExamined")),
        "study_date": joined(v.get("StudyDate")),
        "image_type": joined(v.get("ImageType")),
        "presentation_intent": joined(v.get("PresentationIntentType")),
        "transfer_syntax_name": transfer_syntax_name(transfer_syntax),
    }


def blank_columns() -> dict[str, Any]:
    """The extra columns of a non-DICOM (PNG/JPEG/TIFF) row: all missing."""
    out: dict[str, Any] = {c: "" for c in EXTRA_TEXT_COLUMNS}
    out.update({c: None for c in EXTRA_INT_COLUMNS})
    out.update({c: math.nan for c in EXTRA_FLOAT_COLUMNS})
    return out
