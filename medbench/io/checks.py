"""Cheap checks that a DICOM dataset's pixel data can be decoded, and the error they raise.

:func:`check_pixel_data` runs without decoding: pixel element present, image module complete, a
decoder installed for the transfer syntax, and all pixel bytes present (declared length and file
size for native syntaxes, fragment items up to the delimiter for encapsulated ones).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medbench.errors import InputError
from medbench.io.fastheader import header_value, header_values

REASONS = (
    "not_dicom",
    "stray_bytes",  # a preamble-less data set after a few junk bytes (pydicom's no_meta.dcm)
    "no_pixel_data",
    "missing_decoder",
    "unsupported_syntax",
    "undecodable",
    "truncated",
    "inconsistent",
    # header faults that make decoders fail or crash (checked before any decoding)
    "bad_bits",
    "bad_pixel_representation",
    "bad_samples_per_pixel",
    "bad_photometric",
    "bad_frames",
    "no_transfer_syntax",
    "pixel_budget",
    # found while decoding
    "non_finite",
    "decoder_crash",
)

#: Default budget of stored pixel bytes (rows x columns x frames x samples x bytes per sample) a
#: file may declare before it is refused as a likely decompression bomb; see :func:`pixel_budget`.
DEFAULT_PIXEL_BUDGET = 2 << 30
#: Environment variable that overrides :data:`DEFAULT_PIXEL_BUDGET` (bytes).
PIXEL_BUDGET_ENV = "MEDBENCH_PIXEL_BUDGET"
#: Photometric interpretations of PS3.3 C.7.6.3.1.2 (incl. retired ones) -> allowed SamplesPerPixel.
PHOTOMETRIC_SAMPLES = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "HSV": 3, "ARGB": 4, "CMYK": 4,
    "YBR_FULL": 3, "YBR_FULL_422": 3, "YBR_PARTIAL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3, "YBR_RCT": 3,
    "XYB": 3,
}

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_NATIVE_SYNTAXES = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    UID("1.2.840.10008.1.2.1.99"),  # Deflated Explicit VR Little Endian
}
_REQUIRED_IMAGE_TAGS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")
_CHECK_KEYWORDS = ("SpecificCharacterSet", "SOPClassUID", "BitsStored", "NumberOfFrames", "PixelRepresentation")
DICOM_EXTRA = "pip install 'medbench[dicom]'"


class DicomReadError(InputError):
    """A file that cannot be used as an image; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str | os.PathLike[str], reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.detail = message
        super().__init__(f"{self.path}: {message} [{reason}]")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # picklable across worker processes
        return (type(self), (self.path, self.reason, self.detail))


def stray_bytes_error(path: str | os.PathLike[str]) -> DicomReadError:
    """The ``stray_bytes`` error for a file whose data set starts a few bytes in, with the fix."""
    from medbench.io.sniff import stray_offset

    with open(path, "rb") as fh:
        k = stray_offset(fh.read(16))
    return DicomReadError(path, "stray_bytes",
                          f"a preamble-less DICOM data set starts at byte {k}, after {k} stray leading "
                          f"byte(s), which pydicom cannot read either; to use it, strip them into a copy "
                          f"(tail -c +{k + 1} FILE > FIXED.dcm) and ingest the copy")


def pixel_keyword(ds: Dataset) -> str | None:
    """Which pixel data element the dataset holds, without loading its value."""
    for tag, keyword in _PIXEL_TAGS.items():
        if tag in ds._dict:  # noqa: SLF001 - membership without triggering a deferred read
            return keyword
    return None


def transfer_syntax(ds: Dataset) -> UID:
    """The dataset's transfer syntax; inferred from the encoding when the file meta lacks one."""
    meta = getattr(ds, "file_meta", None)
    elem = meta._dict.get(0x00020010) if meta is not None else None  # noqa: SLF001 - TransferSyntaxUID
    ts = elem.value if elem is not None else None
    if ts:
        return ts if isinstance(ts, UID) else UID(str(ts))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


#: Header values :func:`check_pixel_data` reads.
CHECK_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation", "BitsStored",
    "NumberOfFrames", "SOPClassUID", "PixelRepresentation",
)


def pixel_budget(value: int | None = None) -> int:
    """The pixel budget in bytes: ``value``, else ``$MEDBENCH_PIXEL_BUDGET``, else 2 GiB."""
    if value is not None:
        return int(value)
    env = os.environ.get(PIXEL_BUDGET_ENV, "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise InputError(f"{PIXEL_BUDGET_ENV}={env!r} is not a number of bytes; set e.g. 2147483648") from None
    return DEFAULT_PIXEL_BUDGET


def parse_frames(value: Any) -> int:
    """NumberOfFrames (IS) as an int: absent -> 1; ``"1.0"`` -> 1 (pydicom accepts integral decimals).

    Raises:
        ValueError: Not an integral number.
    """
    if value is None or value == "":
        return 1
    if isinstance(value, (list, tuple)):
        value = value[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        number = float(str(value).strip())
        if not number.is_integer():
            raise ValueError(f"NumberOfFrames {value!r} is not an integer") from None
        return int(number)


def check_pixel_data(
    ds: Dataset, path: str | os.PathLike[str], values: dict[str, Any] | None = None, *, budget: int | None = None
) -> UID:
    """Cheap checks that the pixel data can be decoded, without decoding it.

    Checks the pixel element exists, the image module is complete, a decoder for the transfer
    syntax is installed, and the pixel bytes are all present (native: declared length and file
    size; encapsulated: fragment items up to the sequence delimiter).

    Args:
        ds: Header (e.g. from :func:`medbench.io.dicom.read_header`).
        path: The file (for its size, fragment walk and messages).
        values: :func:`medbench.io.fastheader.header_values` of at least :data:`CHECK_KEYWORDS`,
            when the caller already has them.

    Returns:
        The transfer syntax UID.

    Raises:
        DicomReadError: ``no_pixel_data``, ``inconsistent``, ``unsupported_syntax``,
            ``missing_decoder`` or ``truncated``.
    """
    if values is None:
        values = header_values(ds, CHECK_KEYWORDS)
    keyword = pixel_keyword(ds)
    if keyword is None and header_truncated(path):
        raise DicomReadError(path, "truncated", "file ends inside the header (before the pixel data)")
    meta = getattr(ds, "file_meta", None)
    length = tell = None
    if keyword is not None:
        raw = ds._dict[_keyword_tag(keyword)]  # noqa: SLF001
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length is None:  # already loaded (small element)
            length = len(ds[keyword].value or b"")
    ts_elem = meta._dict.get(0x00020010) if meta is not None else None  # noqa: SLF001 - TransferSyntaxUID
    empty_ts = ts_elem is not None and not str(ts_elem.value or "").strip(" \x00")
    return check_pixel_fields(
        path, values, keyword, UID("") if empty_ts else transfer_syntax(ds), length, tell, os.path.getsize(path),
        meta_sop_class=str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else "", budget=budget,
    )


def check_pixel_fields(
    path: str | os.PathLike[str],
    values: dict[str, Any],
    keyword: str | None,
    ts: UID,
    length: int | None,
    tell: int | None,
    size: int,
    *,
    meta_sop_class: str = "",
    budget: int | None = None,
) -> UID:
    """:func:`check_pixel_data` on already parsed header fields.

    Args:
        path: The file (for the fragment walk and messages).
        values: Header values of at least :data:`CHECK_KEYWORDS`.
        keyword: The pixel element present (:data:`PIXEL_KEYWORDS`) or None.
        ts: Transfer syntax.
        length: The pixel element's value length (0xFFFFFFFF: encapsulated).
        tell: File offset of the pixel value (None: unknown, skips the size checks).
        size: File size in bytes.
        meta_sop_class: MediaStorageSOPClassUID (for the message when pixels are missing).
        budget: Pixel budget in bytes (:func:`pixel_budget`; None: the default or environment).
    """
    if keyword is None:
        kind = str(values.get("SOPClassUID") or meta_sop_class)
        name = UID(kind).name if kind else "unknown SOP class"
        raise DicomReadError(path, "no_pixel_data", f"no pixel data element ({name})")
    missing = [k for k in _REQUIRED_IMAGE_TAGS if values.get(k) is None]
    if missing:
        raise DicomReadError(path, "inconsistent", f"image module incomplete: missing {', '.join(missing)}")
    if not str(ts).strip():
        raise DicomReadError(path, "no_transfer_syntax", "TransferSyntaxUID is empty; the pixel encoding is unknown")
    rows, columns, frames, samples, bits_alloc = _validate_image_module(path, values)
    _check_budget(path, rows, columns, frames, samples, bits_alloc, keyword, budget)
    _check_decoder(ts, path)
    if ts in _NATIVE_SYNTAXES or keyword != "PixelData":
        expected = _expected_native_length(
            keyword, rows, columns, frames, samples, bits_alloc,
            str(values["PhotometricInterpretation"]),
        )
        if length == 0xFFFFFFFF:
            raise DicomReadError(path, "inconsistent", f"native transfer syntax {ts.name} but pixel data is encapsulated")
        if length is not None and length < expected:
            raise DicomReadError(path, "truncated", f"pixel data has {length} bytes, expected {expected}")
        if tell is not None and length is not None and ts != "1.2.840.10008.1.2.1.99" and tell + length > size:
            raise DicomReadError(path, "truncated", f"file ends {tell + length - size} bytes before the pixel data does")
    elif length is not None and length != 0xFFFFFFFF:
        raise DicomReadError(
            path, "inconsistent",
            f"transfer syntax {ts.name} is compressed but the pixel data is not encapsulated (wrong transfer syntax)",
        )
    elif tell is not None:
        _check_fragments(path, tell, size, frames, little=ts != ExplicitVRBigEndian)
    return ts


def _int(values: dict[str, Any], key: str, path: str | os.PathLike[str]) -> int | None:
    value = values.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError):
        raise DicomReadError(path, "inconsistent", f"{key} {value!r} is not an integer") from None


def _validate_image_module(path: str | os.PathLike[str], values: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """Header faults that make decoders fail or abort, each with its own reason code.

    Returns:
        (rows, columns, frames, samples per pixel, bits allocated).
    """
    bits_alloc = _int(values, "BitsAllocated", path)
    bits_stored = _int(values, "BitsStored", path)
    rows, columns = _int(values, "Rows", path), _int(values, "Columns", path)
    samples = _int(values, "SamplesPerPixel", path)
    rep = _int(values, "PixelRepresentation", path)
    assert bits_alloc is not None and rows is not None and columns is not None and samples is not None
    if bits_alloc not in (1, 8, 16, 32, 64):
        raise DicomReadError(path, "bad_bits", f"BitsAllocated {bits_alloc} is not 1, 8, 16, 32 or 64")
    if bits_stored is not None and not 1 <= bits_stored <= bits_alloc:
        raise DicomReadError(path, "bad_bits", f"BitsStored {bits_stored} is not in 1..BitsAllocated ({bits_alloc})")
    if rep is not None and rep not in (0, 1):
        raise DicomReadError(path, "bad_pixel_representation", f"PixelRepresentation {rep} is not 0 or 1")
    photometric = str(values.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in PHOTOMETRIC_SAMPLES:
        raise DicomReadError(path, "bad_photometric", f"unknown PhotometricInterpretation {photometric!r}")
    if samples not in (1, 3):
        raise DicomReadError(path, "bad_samples_per_pixel", f"SamplesPerPixel {samples} is not 1 or 3")
    if samples != PHOTOMETRIC_SAMPLES[photometric]:
        raise DicomReadError(
            path, "bad_samples_per_pixel",
            f"SamplesPerPixel {samples} does not match PhotometricInterpretation {photometric}",
        )
    try:
        frames = parse_frames(values.get("NumberOfFrames"))
    except ValueError as exc:
        raise DicomReadError(path, "bad_frames", str(exc)) from None
    if frames < 1:
        raise DicomReadError(path, "bad_frames", f"NumberOfFrames {frames} is below 1")
    if rows <= 0 or columns <= 0:
        raise DicomReadError(path, "inconsistent", f"image size {rows}x{columns} is empty")
    return rows, columns, frames, samples, bits_alloc


def _check_budget(
    path: str | os.PathLike[str], rows: int, columns: int, frames: int, samples: int, bits: int,
    keyword: str, budget: int | None,
) -> None:
    """Refuse files whose declared pixels exceed the budget, before a decoder allocates them."""
    limit = pixel_budget(budget)
    per_sample = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword, bits)
    size = (rows * columns * frames * samples * per_sample + 7) // 8
    if size > limit:
        raise DicomReadError(
            path, "pixel_budget",
            f"declares {rows}x{columns}x{frames} pixels x {samples} samples = {size / 2**30:.2f} GiB, over the "
            f"{limit / 2**30:.2f} GiB pixel budget (raise it with --pixel-budget or ${PIXEL_BUDGET_ENV})",
        )


def header_truncated(path: str | os.PathLike[str]) -> bool:
    """Whether the file ends inside its last data element (a header cut short, so no pixel data).

    pydicom stops silently at the end of the file; a complete data set ends exactly where its
    last element's value does, a cut one inside that value or inside the next element's header.
    """
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size="1 KB", force=True)
    except Exception:  # noqa: BLE001 - unreadable files are labelled elsewhere
        return False
    if not ds._dict:  # noqa: SLF001
        return False
    last = ds._dict[max(ds._dict)]  # noqa: SLF001
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    left = os.path.getsize(path) - (tell + length)
    return left < 0 or 0 < left < 8


def _keyword_tag(keyword: str) -> int:
    return next(t for t, k in _PIXEL_TAGS.items() if k == keyword)


def _frames(ds: Dataset) -> int:
    try:
        return max(1, parse_frames(header_value(ds, "NumberOfFrames")))
    except (TypeError, ValueError):
        return 1


def _expected_native_length(
    keyword: str, rows: int, columns: int, frames: int, samples: int, bits: int, photometric: str
) -> int:
    pixels = rows * columns * frames
    if keyword == "FloatPixelData":
        return pixels * 4
    if keyword == "DoubleFloatPixelData":
        return pixels * 8
    if photometric.strip() == "YBR_FULL_422":  # 2 luminance + 2 chroma values per 2 pixels
        return (rows * ((columns + 1) // 2) * 4 * frames * bits) // 8
    if bits == 1:
        return (pixels * samples + 7) // 8
    return pixels * samples * bits // 8


def _check_fragments(path: str | os.PathLike[str], offset: int, size: int, frames: int, *, little: bool) -> None:
    """Walk the item headers of encapsulated pixel data up to the sequence delimiter."""
    order = "little" if little else "big"
    items = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise DicomReadError(path, "truncated", f"encapsulated pixel data ends after {items} items without a delimiter")
            group = int.from_bytes(head[0:2], order)  # type: ignore[arg-type]
            elem = int.from_bytes(head[2:4], order)  # type: ignore[arg-type]
            length = int.from_bytes(head[4:8], order)  # type: ignore[arg-type]
            if (group, elem) == (0xFFFE, 0xE0DD):
                break
            if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                raise DicomReadError(path, "inconsistent", f"bad item tag ({group:04X},{elem:04X}) in encapsulated pixel data")
            if fh.tell() + length > size:
                raise DicomReadError(path, "truncated", f"pixel data fragment {items} runs past the end of the file")
            fh.seek(length, 1)
            items += 1
    if items - 1 < frames:  # the first item is the basic offset table
        raise DicomReadError(path, "truncated", f"{items - 1} pixel data fragments for {frames} frames")


def _check_decoder(ts: UID, path: str | os.PathLike[str]) -> None:
    status = _decoder_status(str(ts))
    if status == "unsupported":
        name = ts.name if ts.is_valid and ts.name != ts else str(ts)
        raise DicomReadError(
            path, "unsupported_syntax",
            f"transfer syntax {name} ({ts}) has no pixel decoder; convert the file (e.g. gdcmconv --raw)",
        )
    if status == "missing":
        raise DicomReadError(
            path, "missing_decoder",
            f"no installed decoder for transfer syntax {ts.name} ({ts}): run `{DICOM_EXTRA}`",
        )


@functools.lru_cache(maxsize=64)
def _decoder_status(ts: str) -> str:
    """"ok", "unsupported" (pydicom has no decoder) or "missing" (no plugin installed); cached per process."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(UID(ts))
    except NotImplementedError:
        return "unsupported"
    return "ok" if decoder.is_available else "missing"
