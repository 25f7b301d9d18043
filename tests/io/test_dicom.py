"""read_dicom / to_unit against independent computations from raw bytes, SimpleITK and twins."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medbench.errors import InputError
from medbench.io import DicomReadError, read_dicom, to_unit


def test_ct_small_hu_from_raw_bytes(ct_small_path: str) -> None:
    ds = pydicom.dcmread(ct_small_path)
    dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    raw = np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns).astype(np.float64)
    expected = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = read_dicom(ct_small_path)
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (128, 128)
    np.testing.assert_array_equal(image.pixels, expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024.0  # the check above really exercises the intercept
    assert image.meta["modality"] == "CT"
    assert image.meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468))


def test_rg1_monochrome1_lungs_dark_bones_bright(rg1_paths: tuple[str, str]) -> None:
    image = read_dicom(rg1_paths[0])
    p = image.pixels
    assert image.meta["photometric"] == "MONOCHROME1" and image.meta["inverted"]
    # regions picked by eye on the displayed image (1955 x 1841): lung fields either side, spine
    right_lung = p[400:700, 300:550].mean()
    left_lung = p[400:700, 1200:1450].mean()
    spine = p[400:900, 850:1000].mean()
    assert right_lung < spine - 2000
    assert left_lung < spine - 2000
    # the stored (un-inverted) values have the opposite order
    raw = pydicom.dcmread(rg1_paths[0]).pixel_array.astype(np.float64)
    assert raw[400:700, 300:550].mean() > raw[400:900, 850:1000].mean()


def test_rg1_matches_j2k_twin_and_simpleitk(rg1_paths: tuple[str, str]) -> None:
    import SimpleITK as sitk

    unc = read_dicom(rg1_paths[0]).pixels
    j2k = read_dicom(rg1_paths[1]).pixels
    assert np.abs(unc - j2k).max() <= 1.0
    ds = pydicom.dcmread(rg1_paths[0], stop_before_pixels=True)
    raw = np.frombuffer(
        pydicom.dcmread(rg1_paths[0]).PixelData, dtype="<u2"
    ).reshape(ds.Rows, ds.Columns).astype(np.int64) & ((1 << ds.BitsStored) - 1)
    inverted = (2**ds.BitsStored - 1) - raw  # MONOCHROME1 mirrored inside the BitsStored range
    np.testing.assert_array_equal(unc, inverted.astype(np.float32))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(rg1_paths[0])).reshape(unc.shape).astype(np.int64)
    # GDCM (inside SimpleITK) already presents MONOCHROME1 inverted over the same range
    np.testing.assert_array_equal(itk, inverted)


def test_bits_stored_masking_unsigned_and_signed(tmp_path: Path, make_dicom) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4096, size=(6, 7)).astype(np.uint16)
    garbage = (rng.integers(0, 16, size=values.shape).astype(np.uint16) << 12)
    path = make_dicom(tmp_path / "u.dcm", values | garbage, BitsStored=12, HighBit=11)
    np.testing.assert_array_equal(read_dicom(path).pixels, values.astype(np.float32))

    signed = rng.integers(-2048, 2048, size=(6, 7))
    two_complement = (signed & 0x0FFF).astype(np.uint16) | (np.uint16(0xA) << 12)  # wrong high bits
    path = make_dicom(
        tmp_path / "s.dcm", two_complement.view(np.int16), BitsStored=12, HighBit=11, PixelRepresentation=1,
        RescaleSlope="2", RescaleIntercept="-10",
    )
    np.testing.assert_array_equal(read_dicom(path).pixels, (2.0 * signed - 10).astype(np.float32))


def test_monochrome1_rescale_inversion_and_voi(tmp_path: Path, make_dicom) -> None:
    stored = np.array([[0, 100, 500], [900, 1023, 7]], dtype=np.uint16)
    path = make_dicom(
        tmp_path / "m1.dcm", stored, BitsStored=10, HighBit=9, PhotometricInterpretation="MONOCHROME1",
        RescaleSlope="2", RescaleIntercept="-100", WindowCenter="900", WindowWidth="1001",
    )
    values = 2.0 * stored - 100.0
    lo, hi = -100.0, 2.0 * 1023 - 100.0
    np.testing.assert_allclose(read_dicom(path).pixels, lo + hi - values)
    # VOI: DICOM linear window on modality values, then the MONOCHROME1 presentation inversion
    c, w = 900.0, 1001.0
    linear = np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    out = read_dicom(path, voi=True)
    assert out.meta["voi"] == "window"
    np.testing.assert_allclose(out.pixels, 1.0 - linear, atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path, make_dicom) -> None:
    from pydicom.dataset import Dataset

    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = np.array([10, 50, 90, 250], dtype="<u2").tobytes()
    item["LUTData"].VR = "OW"
    path = make_dicom(tmp_path / "lut.dcm", stored, BitsStored=8, VOILUTSequence=[item])
    out = read_dicom(path, voi=True)
    assert out.meta["voi"] == "lut"
    np.testing.assert_allclose(out.pixels[0], (np.array([10, 50, 90, 250]) - 10) / 240, atol=1e-6)


def test_multiframe_frame_selection_and_planar_configuration(pydicom_data_dir: Path) -> None:
    emri = pydicom_data_dir / "emri_small.dcm"
    full = read_dicom(emri).pixels
    assert full.shape == (10, 64, 64)
    np.testing.assert_array_equal(read_dicom(emri, frame=3).pixels, full[3])
    with pytest.raises(InputError, match="out of range"):
        read_dicom(emri, frame=10)
    # the same RGB image stored pixel-interleaved and plane-by-plane
    px = read_dicom(pydicom_data_dir / "color-px.dcm").pixels
    pl = read_dicom(pydicom_data_dir / "color-pl.dcm").pixels
    assert px.shape == (120, 256, 3)
    np.testing.assert_array_equal(px, pl)
    assert np.ptp(px) > 100


def test_enhanced_ct_rescale_from_functional_groups(pydicom_data_dir: Path) -> None:
    path = pydicom_data_dir / "eCT_Supplemental.dcm"
    ds = pydicom.dcmread(path)
    assert "RescaleIntercept" not in ds  # only in the functional groups
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    expected = ds.pixel_array.astype(np.float64) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_array_equal(read_dicom(path).pixels, expected.astype(np.float32))


def test_palette_colour_expanded(pydicom_data_dir: Path) -> None:
    image = read_dicom(pydicom_data_dir / "OBXXXX1A.dcm")
    assert image.pixels.shape == (600, 800, 3) and image.meta["colour"]


def test_missing_decoder_names_syntax_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels
    from pydicom.data import get_testdata_file

    class Unavailable:
        is_available = False

    from medbench.io import checks

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    checks._decoder_status.cache_clear()  # decoder availability is cached per process
    try:
        with pytest.raises(DicomReadError) as info:
            read_dicom(get_testdata_file("MR_small_jp2klossless.dcm"))
    finally:
        checks._decoder_status.cache_clear()
    assert info.value.reason == "missing_decoder"
    assert "JPEG 2000" in str(info.value) and "pip install 'medbench[dicom]'" in str(info.value)
    assert isinstance(info.value, InputError)


def test_not_dicom_and_no_pixels(tmp_path: Path, make_dicom) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DicomReadError) as info:
        read_dicom(junk)
    assert info.value.reason == "not_dicom" and "junk.dcm" in str(info.value)
    clone = pickle.loads(pickle.dumps(info.value))  # survives worker processes / dask
    assert clone.reason == "not_dicom" and str(clone) == str(info.value)
    nopix = make_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint16), with_pixels=False)
    with pytest.raises(DicomReadError) as info:
        read_dicom(nopix)
    assert info.value.reason == "no_pixel_data"


def test_to_unit_window_and_minmax() -> None:
    x = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0, np.nan])
    np.testing.assert_allclose(to_unit(x, window=(40, 400)), [0, 0, 0.5, 1, 1, 0], atol=1e-7)
    y = to_unit(np.array([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_allclose(y, [[0, 0.25], [0.5, 1.0]])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(to_unit(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    with pytest.raises(InputError):
        to_unit(x, window=(0, 0))


def test_float_pixel_data(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    values = (np.arange(12, dtype="<f4").reshape(3, 4) - 5) / 3
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    ds.save_as(tmp_path / "float.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(tmp_path / "float.dcm").pixels, values)
