"""Derived DICOM writing: exact HU round trips, consistent CT geometry, header provenance."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from medbench.errors import InputError
from medbench.io import read_dicom, read_series, write_ct_series, write_derived_image
from medbench.io.rescale import choose_rescale
from medbench.io.series import group_series, read_series_sitk


def _shuffle_rename(paths: list[Path], dest: Path, seed: int) -> None:
    dest.mkdir()
    order = list(range(len(paths)))
    random.Random(seed).shuffle(order)
    for j, i in enumerate(order):
        shutil.copy(paths[i], dest / f"img{(j * 7919) % 1000:03d}_{j}")  # no extension, scrambled names


def test_ct_series_roundtrip_shuffled_and_renamed(tmp_path: Path, ct_small_path: str) -> None:
    ct = read_dicom(ct_small_path)
    vol = np.stack([ct.pixels + 7 * k for k in range(6)])  # integer HU, distinct per slice
    paths = write_ct_series(vol, tmp_path / "out", reference=ct_small_path, description="unit test")
    assert len(paths) == 6
    _shuffle_rename(paths, tmp_path / "shuffled", seed=3)
    series = read_series(tmp_path / "shuffled")
    np.testing.assert_array_equal(series.hu, vol)
    ref = pydicom.dcmread(ct_small_path, stop_before_pixels=True)
    dz = float(ref.SliceThickness)
    assert series.spacing == pytest.approx((dz, *[float(v) for v in ref.PixelSpacing]))
    assert series.origin == pytest.approx([float(v) for v in ref.ImagePositionPatient])
    itk = read_series_sitk(tmp_path / "shuffled")
    np.testing.assert_array_equal(itk.hu, vol)
    assert itk.spacing == pytest.approx(series.spacing)
    assert itk.origin == pytest.approx(series.origin)
    np.testing.assert_allclose(itk.direction, series.direction, atol=1e-6)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert first.PatientID == ref.PatientID and first.StudyInstanceUID == ref.StudyInstanceUID
    assert first.SeriesInstanceUID != ref.SeriesInstanceUID and first.SOPInstanceUID != ref.SOPInstanceUID
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.DerivationDescription == "unit test"
    assert len({pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in paths}) == 1


def test_oblique_geometry_is_consistent(tmp_path: Path) -> None:
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    vol = np.arange(5 * 8 * 9, dtype=np.float64).reshape(5, 8, 9) - 100
    origin = (12.5, -40.25, 7.0)
    paths = write_ct_series(vol, tmp_path / "obl", spacing=(2.5, 0.8, 0.6), origin=origin, direction=rot,
                            description="oblique")
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose(ipp, np.array(origin) + k * 2.5 * rot[:, 2], atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [*rot[:, 0], *rot[:, 1]], atol=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.6] and float(ds.SliceThickness) == 2.5
    _shuffle_rename(paths, tmp_path / "mix", seed=1)
    series = read_series(tmp_path / "mix")
    np.testing.assert_array_equal(series.hu, vol)
    np.testing.assert_allclose(series.direction, rot, atol=1e-6)
    assert series.spacing == pytest.approx((2.5, 0.8, 0.6))
    itk = read_series_sitk(tmp_path / "mix")
    np.testing.assert_array_equal(itk.hu, vol)
    np.testing.assert_allclose(itk.direction, rot, atol=1e-5)


def test_float_values_roundtrip_to_stored_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, size=(3, 16, 16)) + 0.123456
    paths = write_ct_series(vol, tmp_path / "f", description="float")
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert len(str(ds["RescaleSlope"].value)) <= 16
    expected = intercept + slope * np.rint((vol - intercept) / slope)  # what a reader must get back
    back = read_series(tmp_path / "f").hu
    np.testing.assert_allclose(back, expected, rtol=0, atol=1e-3)
    assert np.abs(back - vol).max() <= slope / 2 + 1e-3
    assert slope <= (vol.max() - vol.min() + 1) / 65535 * 1.0001


def test_choose_rescale_bounds() -> None:
    assert choose_rescale(np.array([-1024.0, 3071.0])).slope == 1.0
    wide = choose_rescale(np.array([0.0, 70000.0]))
    assert wide.signed is False and wide.intercept == 0.0
    tricky = np.array([-1.0 / 3.0, 1e4 / 7.0])
    r = choose_rescale(tricky)
    assert np.rint((tricky.max() - r.intercept) / r.slope) <= 65535
    assert r.quantize(tricky).max() <= 65535
    with pytest.raises(InputError):
        choose_rescale(np.array([0.0, np.nan]))


def test_derived_image_header_and_pixels(tmp_path: Path, ct_small_path: str) -> None:
    src = read_dicom(ct_small_path)
    out = write_derived_image(src.pixels - 5, src, tmp_path / "d.dcm", description="minus five")
    back = read_dicom(out)
    np.testing.assert_array_equal(back.pixels, src.pixels - 5)
    ds = back.dataset
    ref = pydicom.dcmread(ct_small_path, stop_before_pixels=True)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ref.SOPInstanceUID
    assert ds.SOPInstanceUID != ref.SOPInstanceUID and ds.SeriesInstanceUID != ref.SeriesInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.DerivationDescription == "minus five" and ds.ImageType[0] == "DERIVED"
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


def test_derived_from_monochrome1_and_resized(tmp_path: Path, rg1_paths: tuple[str, str]) -> None:
    src = read_dicom(rg1_paths[0])
    small = src.pixels[::4, ::4][:400, :400]
    out = write_derived_image(small, rg1_paths[0], tmp_path / "cxr.dcm", description="downsampled x4")
    back = read_dicom(out)
    assert back.dataset.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(back.pixels, small)  # larger = brighter preserved, no re-inversion
    lo, hi = src.meta["inversion_range"]
    mirrored = float(back.dataset.WindowCenter)
    assert mirrored == pytest.approx(lo + hi - src.meta["window"][0])


def test_write_without_reference_is_valid(tmp_path: Path) -> None:
    import SimpleITK as sitk

    img = np.linspace(0, 1, 30 * 20).reshape(30, 20)
    out = write_derived_image(img, None, tmp_path / "fresh.dcm", description="synthetic",
                              spacing=(0.5, 0.25), tags={"PatientSex": "F", "Manufacturer": "Acme"})
    ds = pydicom.dcmread(out)  # no force: a proper Part 10 file
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and ds.Manufacturer == "Acme"
    back = read_dicom(out).pixels
    assert np.abs(back - img).max() <= float(ds.RescaleSlope) / 2 + 1e-6
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).reshape(img.shape)
    np.testing.assert_allclose(itk, back, atol=1e-4)
    with pytest.raises(InputError, match="unknown DICOM keyword"):
        write_derived_image(img, None, tmp_path / "bad.dcm", description="x", tags={"NotAKeyword": 1})
    with pytest.raises(InputError):
        write_derived_image(np.zeros((2, 3, 4)), None, tmp_path / "bad3d.dcm", description="x")


def test_group_series_and_ambiguity(tmp_path: Path) -> None:
    a = write_ct_series(np.zeros((3, 4, 4)), tmp_path / "mixed", description="a", prefix="a")
    b = write_ct_series(np.ones((2, 4, 4)), tmp_path / "mixed", description="b", prefix="b")
    (tmp_path / "mixed" / "notes.txt").write_text("not dicom")
    groups = group_series(tmp_path / "mixed")
    assert sorted(len(v) for v in groups.values()) == [2, 3]
    with pytest.raises(InputError, match="2 series"):
        read_series(tmp_path / "mixed")
    uid_b = pydicom.dcmread(b[0], stop_before_pixels=True).SeriesInstanceUID
    np.testing.assert_array_equal(read_series(tmp_path / "mixed", series_uid=uid_b).hu, np.ones((2, 4, 4)))
    assert len(a) == 3


def test_enhanced_multiframe_series(pydicom_data_dir: Path) -> None:
    path = pydicom_data_dir / "eCT_Supplemental.dcm"
    series = read_series([path])
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert series.hu.shape == (2, 512, 512)
    assert series.spacing[0] == pytest.approx(abs(z[1] - z[0]))


def test_series_to_series_keeps_geometry_and_study(tmp_path: Path) -> None:
    rot = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    vol = np.arange(4 * 6 * 5, dtype=np.float64).reshape(4, 6, 5) * 3 - 500
    write_ct_series(vol, tmp_path / "orig", spacing=(1.25, 0.7, 0.7), origin=(1, 2, 3), direction=rot,
                    description="original", tags={"PatientID": "anon-7"})
    original = read_series(tmp_path / "orig")
    for reference in (original, tmp_path / "orig"):
        out = write_ct_series(original.hu / 2, tmp_path / "den", reference=reference, description="denoised")
        derived = read_series(tmp_path / "den")
        np.testing.assert_array_equal(derived.hu, vol / 2)
        assert derived.spacing == pytest.approx(original.spacing)
        assert derived.origin == pytest.approx(original.origin)
        np.testing.assert_allclose(derived.direction, original.direction, atol=1e-9)
        for a, b in zip(original.datasets, derived.datasets):
            assert b.StudyInstanceUID == a.StudyInstanceUID and b.FrameOfReferenceUID == a.FrameOfReferenceUID
            assert b.SOPInstanceUID != a.SOPInstanceUID and b.SeriesInstanceUID != a.SeriesInstanceUID
            assert b.PatientID == "anon-7" and b.DerivationDescription == "denoised"
        assert len(out) == 4


def test_choose_rescale_property() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    finite = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False, width=64)

    @settings(max_examples=300, deadline=None)
    @given(arrays(np.float64, st.integers(1, 40), elements=finite))
    def check(values: np.ndarray) -> None:
        r = choose_rescale(values)
        stored = r.quantize(values)
        back = r.restore(stored)
        assert np.abs(back - values).max() <= r.slope / 2 * (1 + 1e-9) + 1e-9 * np.abs(values).max()
        raw = np.rint((values - r.intercept) / r.slope)
        assert raw.min() >= np.iinfo(r.dtype).min and raw.max() <= np.iinfo(r.dtype).max

    check()


def test_derived_radiograph_stores_real_values_and_is_marked_derived(tmp_path: Path,
                                                                      rg1_paths: tuple[str, str]) -> None:
    """CR/DX outputs: slope 1 / intercept 0, source BitsStored, PresentationLUTShape, new series."""
    src = read_dicom(rg1_paths[0])
    ref = pydicom.dcmread(rg1_paths[0], stop_before_pixels=True)
    rng = np.random.default_rng(0)
    lo, hi = src.meta["inversion_range"]
    values = np.clip(np.rint(src.pixels + rng.integers(-40, 40, src.pixels.shape)), lo, hi)
    out = write_derived_image(values, rg1_paths[0], tmp_path / "cr.dcm", description="noise",
                              series_description="test series")
    ds = pydicom.dcmread(out)
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
    assert ds.PresentationLUTShape == "IDENTITY" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert int(ds.BitsStored) == int(ref.BitsStored) and ds.PixelRepresentation == 0
    assert ds.SeriesDescription == "test series" and int(ds.SeriesNumber) == int(ref.SeriesNumber) + 1000
    assert ds.ImageType[0] == "DERIVED"
    back = read_dicom(out)
    np.testing.assert_array_equal(back.pixels, values)  # the written values, not a renormalised copy
    assert back.meta["inversion_range"] == (lo, hi)  # same stored range: same [0, 1] normalisation


def test_derived_dx_forces_unit_rescale(tmp_path: Path, synthetic_cxr_dir: Path) -> None:
    """The DX IOD requires Rescale Slope 1: non-integer values are rounded, never rescaled."""
    dx = next(p for p in sorted((synthetic_cxr_dir / "images").glob("*.dcm"))
              if pydicom.dcmread(p, stop_before_pixels=True).Modality == "DX")
    src = read_dicom(dx)
    values = src.pixels * 0.5 + 0.25
    out = write_derived_image(values, dx, tmp_path / "dx.dcm", description="half")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == pydicom.dcmread(dx, stop_before_pixels=True).SOPClassUID
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0 and ds.RescaleType == "US"
    np.testing.assert_array_equal(read_dicom(out).pixels, np.rint(values))
