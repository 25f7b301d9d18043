"""Fast access to a few header values of a freshly read dataset.

pydicom converts a raw element on first access through several layers (keyword lookup, hooks,
charset handling); for a scan that reads a dozen values from thousands of files that costs more
than parsing the file. :func:`header_value` decodes the common simple VRs straight from the raw
bytes and falls back to pydicom for anything else (other VRs, non-Latin character sets, values
already converted).
"""

from __future__ import annotations

import functools
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})
_INT_VRS = {"US": (2, False), "SS": (2, True), "UL": (4, False), "SL": (4, True)}
_SIMPLE_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})


@functools.lru_cache(maxsize=512)
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return int(tag)


@functools.lru_cache(maxsize=512)
def _dict_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _encoding(ds: Dataset) -> str | None:
    """Python codec for the dataset's text, or None when it needs pydicom's charset handling."""
    raw = ds._dict.get(0x00080005)  # noqa: SLF001 - SpecificCharacterSet
    if raw is None:
        return "latin-1"
    value = raw.value if not isinstance(raw, RawDataElement) else (raw.value or b"").decode("latin-1")
    return charset_codec(value if isinstance(value, str) else "\\".join(str(v) for v in value))


def header_values(ds: Dataset, keywords: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """:func:`header_value` for several keywords at once (absent ones map to None)."""
    codec: list[str | None] = []
    return {k: _value(ds, k, None, codec) for k in keywords}


def header_value(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """Value of ``keyword`` in ``ds``: str (or list of str when multi-valued) for text VRs,
    int (or list) for US/SS/UL/SL, else whatever pydicom gives; ``default`` when absent/empty."""
    return _value(ds, keyword, default, [])


def _value(ds: Dataset, keyword: str, default: Any, codec_cache: list[str | None]) -> Any:
    tag = _tag(keyword)
    elem = ds._dict.get(tag)  # noqa: SLF001 - avoid pydicom's conversion machinery
    if elem is None:
        return default
    if not isinstance(elem, RawDataElement) or elem.value is None:
        value = ds[tag].value
        return default if value is None or value == "" else value
    vr = elem.VR or _dict_vr(tag)
    codec = "latin-1"
    if vr in ("LO", "SH"):
        if not codec_cache:
            codec_cache.append(_encoding(ds))
        codec = codec_cache[0]
    value = decode_raw(elem.value, vr, little=elem.is_little_endian, codec=codec, default=default)
    if value is NOT_SIMPLE:
        value = ds[tag].value
        return default if value is None or value == "" else value
    return value


#: Returned by :func:`decode_raw` for values it does not decode itself.
NOT_SIMPLE = object()


def decode_raw(raw: bytes, vr: str, *, little: bool, codec: str | None, default: Any = None) -> Any:
    """Decode the bytes of one simple element as :func:`header_value` reports it.

    Args:
        raw: The element's value bytes.
        vr: Its value representation.
        little: Little-endian encoding.
        codec: Python codec for LO/SH text (None: needs pydicom's charset handling).
        default: Returned for an empty value.

    Returns:
        str or list of str (text VRs), int or list of int (US/SS/UL/SL), ``default`` when empty,
        or :data:`NOT_SIMPLE` for other VRs or charsets.
    """
    if vr in _INT_VRS:
        size, signed = _INT_VRS[vr]
        order = "little" if little else "big"
        values = [int.from_bytes(raw[i : i + size], order, signed=signed) for i in range(0, len(raw) - size + 1, size)]
        if not values:
            return default
        return values[0] if len(values) == 1 else values
    if vr not in _TEXT_VRS:
        return NOT_SIMPLE
    if vr not in ("LO", "SH"):
        codec = "latin-1"
    if codec is None:
        return NOT_SIMPLE
    text = raw.decode(codec, errors="replace").strip(" \x00")
    if not text:
        return default
    parts = [p.strip(" \x00") for p in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


def charset_codec(value: bytes | str | None) -> str | None:
    """Python codec for a SpecificCharacterSet value, raw or decoded (None: not a simple charset)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else (value or "")
    text = text.strip(" \x00")
    if text not in _SIMPLE_CHARSETS:
        return None
    return "utf-8" if text == "ISO_IR 192" else "latin-1"
