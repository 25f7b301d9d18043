"""The scan's fast header path against pydicom's reader, file by file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medbench.io.fastscan import CHUNK, parse_header
from medbench.io.manifest import _ROW_KEYWORDS, scan_file


def _same_row(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key, va in a.items():
        vb = b[key]
        if key == "message":
            continue  # the two readers word some messages differently; the reason must agree
        if isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb):
            continue
        if va != vb:
            return False
    return True


def _fast_parsed(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(CHUNK)
    return parse_header(head, _ROW_KEYWORDS) is not None


def _compare_all(files: list[str]) -> tuple[int, int]:
    fast_ok = ok = 0
    for path in files:
        fast, slow = scan_file(path), scan_file(path, fast=False)
        assert _same_row(fast, slow), (path, fast, slow)
        if slow["status"] == "ok":
            ok += 1
            fast_ok += _fast_parsed(path)
    return fast_ok, ok


def test_fast_rows_equal_pydicom_rows_on_pydicom_test_files(pydicom_test_files: list[str]) -> None:
    fast_ok, ok = _compare_all(pydicom_test_files)
    assert ok >= 80 and fast_ok >= 0.6 * ok  # the fast path really carries most files


def test_fast_rows_equal_pydicom_rows_on_pydicom_data_files(pydicom_data_files: list[str]) -> None:
    fast_ok, ok = _compare_all(pydicom_data_files)
    assert ok >= 60 and fast_ok >= 0.5 * ok


def _write(path: Path, *, implicit: bool = False, extra=None, charset: str | None = None) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.1", "1.2.3.2"
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientID = "PAT 7"
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.Modality = "DX"
    ds.Manufacturer = "Acme^Imaging"
    ds.PixelSpacing = [0.25, 0.5]
    if extra is not None:
        extra(ds)
    ds.Rows, ds.Columns = 4, 6
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = np.arange(24, dtype=np.uint16).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _nested_sequences(ds: Dataset) -> None:
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "113076", "DCM"
    item = Dataset()
    item.CodeMeaning = "Segmentation"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])  # undefined length, nested
    ds.DerivationCodeSequence = Sequence([item, Dataset()])
    for elem in (ds["DerivationCodeSequence"], item["PurposeOfReferenceCodeSequence"]):
        elem.is_undefined_length = True  # delimited sequences and items, as many modalities write
        for it in elem.value:
            it.is_undefined_length_sequence_item = True
    ds.add_new(0x00091010, "UN", b"\x01\x02\x03\x04")  # private element of VR UN
    ds.add_new(0x00091011, "LO", "private text")


@pytest.mark.parametrize("implicit", [False, True])
def test_parse_skips_nested_undefined_length_sequences(tmp_path: Path, implicit: bool) -> None:
    path = _write(tmp_path / "seq.dcm", implicit=implicit, extra=_nested_sequences)
    raw = path.read_bytes()
    assert b"\xfe\xff\xdd\xe0" in raw  # the writer used undefined-length sequences
    fh = parse_header(raw, _ROW_KEYWORDS)
    assert fh is not None
    ref = pydicom.dcmread(path)
    assert fh.values["SOPInstanceUID"] == ref.SOPInstanceUID and fh.values["Rows"] == 4
    assert fh.values["PixelSpacing"] == ["0.25", "0.5"] and fh.values["PatientAge"] == "061Y"
    assert fh.values["ViewPosition"] is None
    assert fh.pixel_keyword == "PixelData" and fh.pixel_length == 48
    assert raw[fh.pixel_offset : fh.pixel_offset + 48] == ref.PixelData
    assert _same_row(scan_file(str(path)), scan_file(str(path), fast=False))


def test_parse_defers_to_pydicom_when_unsure(tmp_path: Path) -> None:
    raw = _write(tmp_path / "a.dcm").read_bytes()
    assert parse_header(raw, _ROW_KEYWORDS) is not None
    # a header cut short (by the read or a truncated file): pydicom must decide
    assert parse_header(raw[:300], _ROW_KEYWORDS) is None
    # no preamble / non-Latin character set / big header beyond the bytes read
    assert parse_header(raw[128:], _ROW_KEYWORDS) is None
    greek = _write(tmp_path / "g.dcm", charset="ISO_IR 126").read_bytes()
    assert parse_header(greek, _ROW_KEYWORDS) is None
    big = _write(tmp_path / "big.dcm", extra=lambda d: d.add_new(0x00091012, "OB", bytes(CHUNK))).read_bytes()
    assert parse_header(big[:CHUNK], _ROW_KEYWORDS) is None
    assert _same_row(scan_file(str(tmp_path / "big.dcm")), scan_file(str(tmp_path / "big.dcm"), fast=False))


def test_truncated_pixel_data_is_quarantined_by_both_paths(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.dcm")
    short = tmp_path / "short.dcm"
    short.write_bytes(path.read_bytes()[:-10])
    fast, slow = scan_file(str(short)), scan_file(str(short), fast=False)
    assert fast["status"] == slow["status"] == "quarantined"
    assert fast["reason"] == slow["reason"] == "truncated"


def test_synthetic_cxr_files_take_the_fast_path(synthetic_cxr_dir: Path) -> None:
    files = sorted(str(p) for p in synthetic_cxr_dir.rglob("*.dcm"))[:20]
    assert files
    for path in files:
        assert _fast_parsed(path), path
        assert _same_row(scan_file(path), scan_file(path, fast=False)), path
