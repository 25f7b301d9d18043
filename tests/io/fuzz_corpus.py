"""A seeded corpus of hostile DICOM files mutated from pydicom's test files (issue 17).

Used by ``tests/io/test_fuzz.py`` (a few hundred files) and ``scripts/fuzz_ingest.py`` (the
>= 1,000-file measurement). Each mutant is written as ``NNNNN-<kind>-<seed file>``; the same seed
gives the same bytes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.config import IGNORE, settings

#: Transfer syntaxes a ``wrong_ts`` mutant may claim (incl. an empty and an unknown one).
SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "", "1.2.3.4",
)
#: Header fields and the hostile values a ``field`` mutant may set.
FIELDS: dict[str, tuple] = {
    "BitsStored": (0, 17, 40, 65535),
    "BitsAllocated": (0, 7, 12, 64),
    "HighBit": (0, 31, 65535),
    "PixelRepresentation": (2, 65535),
    "SamplesPerPixel": (0, 1, 3, 131),
    "PhotometricInterpretation": ("RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME3", "FOO", ""),
    "NumberOfFrames": ("-1", "0", "1.0", "1000", "2"),
    "Rows": (0, 1, 3),
    "Columns": (0, 1, 7),
    "PlanarConfiguration": (1, 7),
    "RescaleSlope": ("1e308", "nan", "0"),
}


def seed_files() -> list[Path]:
    """pydicom's bundled test files with small pixel data, sorted (the corpus seeds)."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    out = []
    for path in sorted(folder.glob("*.dcm")):
        if path.stat().st_size > 600_000:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001,S112 - unreadable seeds are skipped
            continue
        if "Rows" in ds and int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) <= 512 * 512:
            out.append(path)
    return out


def _flip(data: bytes, rng: np.random.Generator, lo: int, hi: int) -> bytes:
    buf = bytearray(data)
    hi = max(lo + 1, min(hi, len(buf)))
    for _ in range(int(rng.integers(1, 9))):
        buf[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _element_offsets(data: bytes) -> list[int]:
    """Offsets of explicit-VR elements in the first 4 KB (2 upper-case VR letters after a tag)."""
    head = data[:4096]
    return [i for i in range(132, len(head) - 8) if head[i + 4 : i + 6].isalpha() and head[i + 4 : i + 6].isupper()
            and head[i + 1] == 0 and head[i] in (0x08, 0x10, 0x18, 0x20, 0x28)]


def _bad_length(data: bytes, rng: np.random.Generator) -> bytes:
    offsets = _element_offsets(data)
    if not offsets:
        return _flip(data, rng, 0, 1024)
    pos = offsets[int(rng.integers(len(offsets)))]
    buf = bytearray(data)
    buf[pos + 6 : pos + 8] = int(rng.choice([0, 1, 0xFFFF, int(rng.integers(2, 0xFFFF))])).to_bytes(2, "little")
    return bytes(buf)


def _bad_vr(data: bytes, rng: np.random.Generator) -> bytes:
    offsets = _element_offsets(data)
    if not offsets:
        return _flip(data, rng, 0, 1024)
    pos = offsets[int(rng.integers(len(offsets)))]
    buf = bytearray(data)
    buf[pos + 4 : pos + 6] = rng.choice([b"UN", b"SQ", b"OB", b"ZZ", b"\x00\x00", b"US", b"UT"]).tobytes()
    return bytes(buf)


def _rewrite(data: bytes, edit: Callable[[pydicom.Dataset], None]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old_r, old_w = settings.reading_validation_mode, settings.writing_validation_mode
        settings.reading_validation_mode = settings.writing_validation_mode = IGNORE
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            edit(ds)
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=False)
            return out.getvalue()
        finally:
            settings.reading_validation_mode, settings.writing_validation_mode = old_r, old_w


def _field(data: bytes, rng: np.random.Generator) -> bytes:
    names = list(FIELDS)
    picks = rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False)

    def edit(ds: pydicom.Dataset) -> None:
        for i in picks:
            name = names[int(i)]
            values = FIELDS[name]
            setattr(ds, name, values[int(rng.integers(len(values)))])

    return _rewrite(data, edit)


def _wrong_ts(data: bytes, rng: np.random.Generator) -> bytes:
    ts = SYNTAXES[int(rng.integers(len(SYNTAXES)))]

    def edit(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = ts

    try:
        return _rewrite(data, edit)
    except Exception:  # noqa: BLE001 - pydicom refuses to encode in some claimed syntaxes: patch bytes
        old = data.find(b"1.2.840.10008.1.2")
        if old < 0:
            return _flip(data, rng, 0, 512)
        end = data.index(b"\x00", old) if b"\x00" in data[old : old + 70] else old + 22
        return data[:old] + ts.encode().ljust(end - old, b"\x00")[: end - old] + data[end:]


def _bomb(data: bytes, rng: np.random.Generator) -> bytes:
    def edit(ds: pydicom.Dataset) -> None:
        ds.Rows = ds.Columns = 65535
        if rng.random() < 0.5:
            ds.NumberOfFrames = str(int(rng.integers(2, 200)))

    return _rewrite(data, edit)


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutant of ``data``."""
    if kind == "flip":
        return _flip(data, rng, 0, len(data))
    if kind == "flip_header":
        return _flip(data, rng, 128, 2048)
    if kind == "truncate":
        return data[: int(rng.integers(1, len(data)))]
    if kind == "bad_length":
        return _bad_length(data, rng)
    if kind == "bad_vr":
        return _bad_vr(data, rng)
    if kind == "field":
        return _field(data, rng)
    if kind == "wrong_ts":
        return _wrong_ts(data, rng)
    if kind == "bomb":
        return _bomb(data, rng)
    if kind == "copy":
        return data
    raise ValueError(kind)


KINDS = ("flip", "flip_header", "truncate", "bad_length", "bad_vr", "field", "field", "wrong_ts", "bomb", "copy")


def build_corpus(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` mutants into ``folder`` (created); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seeds = seed_files()
    blobs = {p: p.read_bytes() for p in seeds}
    out: list[Path] = []
    while len(out) < n:
        src = seeds[int(rng.integers(len(seeds)))]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        try:
            data = mutate(blobs[src], kind, rng)
        except Exception:  # noqa: BLE001 - a mutation pydicom cannot write: fall back to byte flips
            kind, data = "flip", mutate(blobs[src], "flip", rng)
        path = folder / f"{len(out):05d}-{kind}-{src.name}"
        path.write_bytes(data)
        out.append(path)
    return out
