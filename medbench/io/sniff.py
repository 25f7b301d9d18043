"""Tell a file's format from its first bytes (never from its name)."""

from __future__ import annotations

import os

#: Image formats read through Pillow, by the name :func:`sniff` gives them.
RASTER_FORMATS = ("png", "jpeg", "tiff")


def sniff(path: str | os.PathLike[str]) -> str:
    """Return the format of ``path`` from its magic bytes.

    Returns:
        ``"dicom"`` (128-byte preamble + ``DICM``), ``"dicom_raw"`` (no preamble, but the file
        starts like a group 0002/0008 DICOM element), ``"png"``, ``"jpeg"``, ``"tiff"``,
        ``"gzip"``, ``"dicom_shifted"`` (a preamble-less data set after a few stray bytes; see
        :func:`stray_offset`), ``"empty"`` or ``"unknown"``.
    """
    with open(path, "rb") as fh:
        head = fh.read(132)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> str:
    """:func:`sniff` on a file's first bytes (at least 132 of them when the file has them)."""
    if not head:
        return "empty"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 8 and _looks_like_raw_dicom(head):
        return "dicom_raw"
    if stray_offset(head):
        return "dicom_shifted"
    return "unknown"


#: Most stray leading bytes :func:`stray_offset` looks past.
MAX_STRAY_BYTES = 4


def stray_offset(head: bytes) -> int:
    """Bytes before a preamble-less data set that starts a few bytes in (0: none found).

    pydicom's own ``no_meta.dcm`` is such a file: one 0x20 byte, then an explicit-VR
    little-endian data set. pydicom (``force=True``) reads it as one junk element, so medbench
    quarantines it rather than guess, but says where the data set starts and how to recover it.
    Only an explicit-VR start counts (a VR of two upper-case letters), which junk rarely has.
    """
    for k in range(1, MAX_STRAY_BYTES + 1):
        part = head[k:]
        if len(part) >= 8 and _looks_like_raw_dicom(part) and part[4:6].isalpha() and part[4:6].isupper():
            return k
    return 0


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less dataset starts with a (0002,xxxx) or (0008,xxxx) element, LE or BE."""
    for order in ("little", "big"):
        group = int.from_bytes(head[0:2], order)  # type: ignore[arg-type]
        elem = int.from_bytes(head[2:4], order)  # type: ignore[arg-type]
        if group in (0x0002, 0x0008) and elem < 0x1000:
            vr = head[4:6]
            if vr.isalpha() and vr.isupper():  # explicit VR
                return True
            # implicit VR: a 4-byte length that fits in a small header element
            length = int.from_bytes(head[4:8], order)  # type: ignore[arg-type]
            if length < 0x10000:
                return True
    return False
