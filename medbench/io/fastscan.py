"""The scan's fast path: the header fields a manifest row needs, parsed straight from the file bytes.

A scan reads a dozen values from each of thousands of files; building a pydicom ``Dataset`` for
that costs more than the parse itself. :func:`parse_header` walks the elements of the first
:data:`CHUNK` bytes of a file once, keeps the raw bytes of the wanted tags, skips everything
else (sequences of defined or undefined length included) and stops at the pixel data element,
recording its offset and length for :func:`medbench.io.checks.check_pixel_fields`.

It handles the common case only: a 128-byte preamble and ``DICM``, an explicit-VR-little-endian
file meta group with a transfer syntax, and a data set in implicit or explicit VR little endian
(native or encapsulated pixel data). For anything else (no preamble, big endian, deflate, a
non-Latin character set, a wanted value of another VR, a header longer than :data:`CHUNK`, no
pixel data element, or any inconsistency) it returns None and the caller uses the pydicom path, which also produces the
quarantine reasons for broken files. ``tests/io/test_fastscan.py`` checks that both paths give
identical manifest rows on every file of pydicom's and pydicom-data's test sets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from medbench.io.fastheader import NOT_SIMPLE, _dict_vr, _tag, charset_codec, decode_raw

#: Bytes read from the start of a file (the header of typical radiographs and CT slices is < 8 KB).
CHUNK = 1 << 16

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_HANDLED = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})  # big endian, deflated
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 16


class _Fallback(Exception):
    """The file needs the pydicom path."""


@dataclass(frozen=True)
class FastHeader:
    """What a manifest row needs from one file.

    Attributes:
        values: Keyword -> value as :func:`medbench.io.fastheader.header_values` reports it.
        transfer_syntax: Transfer syntax UID.
        pixel_keyword: The pixel element present, or None.
        pixel_length: Its value length (0xFFFFFFFF when encapsulated).
        pixel_offset: File offset of its value.
        meta_sop_class: MediaStorageSOPClassUID from the file meta group.
    """

    values: dict[str, Any]
    transfer_syntax: str
    pixel_keyword: str | None
    pixel_length: int | None
    pixel_offset: int | None
    meta_sop_class: str


@functools.lru_cache(maxsize=32)
def _wanted(keywords: tuple[str, ...]) -> dict[int, str]:
    return {_tag(k): k for k in keywords}


def parse_header(head: bytes, keywords: tuple[str, ...]) -> FastHeader | None:
    """Parse the wanted header values from the first bytes of a file.

    Args:
        head: The file's first bytes (up to :data:`CHUNK`).
        keywords: DICOM keywords to return (absent ones map to None).

    Returns:
        A :class:`FastHeader`, or None when the file needs pydicom's reader.
    """
    try:
        return _parse(head, keywords)
    except (_Fallback, IndexError, ValueError, UnicodeDecodeError, RecursionError):
        return None


def _u16(buf: bytes, pos: int) -> int:
    return buf[pos] | (buf[pos + 1] << 8)


def _u32(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 4], "little")


def _element(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value offset) of the element starting at ``pos``."""
    if pos + 8 > len(buf):
        raise _Fallback
    tag = (_u16(buf, pos) << 16) | _u16(buf, pos + 2)
    if tag >> 16 == 0xFFFE:  # item / delimiter tags have no VR in any encoding
        return tag, None, _u32(buf, pos + 4), pos + 8
    if not explicit:
        return tag, None, _u32(buf, pos + 4), pos + 8
    vr = buf[pos + 4 : pos + 6]
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Fallback
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Fallback
        return tag, vr, _u32(buf, pos + 8), pos + 12
    return tag, vr, _u16(buf, pos + 6), pos + 8


def _skip_sequence(buf: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Offset just past an undefined-length sequence whose items start at ``pos``."""
    if depth > _MAX_DEPTH:
        raise _Fallback
    while True:
        tag, _, length, vpos = _element(buf, pos, False)
        if tag == _SEQ_END:
            return vpos
        if tag != _ITEM:
            raise _Fallback
        if length != _UNDEFINED:
            pos = vpos + length
            continue
        pos = vpos
        while True:  # an undefined-length item: elements up to the item delimiter
            tag, vr, length, vpos = _element(buf, pos, explicit)
            if tag == _ITEM_END:
                pos = vpos
                break
            if length == _UNDEFINED:  # nested sequence; a UN of undefined length goes to pydicom
                if explicit and vr == b"UN":
                    raise _Fallback
                pos = _skip_sequence(buf, vpos, explicit and vr != b"UN", depth + 1)
            else:
                pos = vpos + length
            if pos > len(buf):
                raise _Fallback


def _parse(buf: bytes, keywords: tuple[str, ...]) -> FastHeader:
    if len(buf) < 144 or buf[128:132] != b"DICM":
        raise _Fallback
    pos = 132
    meta: dict[int, bytes] = {}
    while pos + 8 <= len(buf) and _u16(buf, pos) == 0x0002:
        tag, vr, length, vpos = _element(buf, pos, True)
        if length == _UNDEFINED or vpos + length > len(buf):
            raise _Fallback
        meta[tag] = buf[vpos : vpos + length]
        pos = vpos + length
    ts = meta.get(0x00020010, b"").decode("ascii").strip(" \x00")
    if not ts or ts in _NOT_HANDLED:
        raise _Fallback
    explicit = ts != _IMPLICIT_LE
    wanted = _wanted(tuple(keywords))
    raw: dict[int, tuple[bytes | None, bytes]] = {}
    pixel: tuple[str, int, int] | None = None
    charset: bytes | None = None
    n = len(buf)
    while pos < n:
        tag, vr, length, vpos = _element(buf, pos, explicit)
        if tag in _PIXEL_TAGS:
            pixel = (_PIXEL_TAGS[tag], length, vpos)
            break
        if length == _UNDEFINED:
            if tag in wanted or (vr == b"UN" and explicit):
                # pydicom reads a UN of undefined length as an implicit-VR sequence and may fail on
                # it where this skip would not: let pydicom decide, so both paths agree
                raise _Fallback
            pos = _skip_sequence(buf, vpos, explicit and vr != b"UN", 0)
            continue
        end = vpos + length
        if end > n:
            raise _Fallback  # value runs past what was read (long header or truncated file)
        if tag == 0x00080005:
            charset = buf[vpos:end]
        if tag in wanted:
            raw[tag] = (vr, buf[vpos:end])
        pos = end
    else:  # no pixel data element: pydicom's reader tells why (empty data set, not an image, ...)
        raise _Fallback
    codec = charset_codec(charset)
    values: dict[str, Any] = {}
    for tag, keyword in wanted.items():
        if tag not in raw:
            values[keyword] = None
            continue
        vr_bytes, value = raw[tag]
        vr = vr_bytes.decode("ascii") if vr_bytes is not None else _dict_vr(tag)
        decoded = decode_raw(value, vr, little=True, codec=codec)
        if decoded is NOT_SIMPLE:
            raise _Fallback
        values[keyword] = decoded
    sop_meta = meta.get(0x00020002, b"").decode("ascii", errors="replace").strip(" \x00")
    return FastHeader(values, ts, *(pixel or (None, None, None)), meta_sop_class=sop_meta)
