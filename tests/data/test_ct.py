"""CT phantom HU values and written CT series headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medbench.data.synthetic import CT_HU, CT_LABELS, make_ct_phantom


def test_phantom_regions_have_specified_hu() -> None:
    hu, labels, lesions = make_ct_phantom(10, size=96, seed=3, return_labels=True)
    assert hu.shape == (10, 96, 96) and hu.dtype == np.float32
    for name, value in CT_HU.items():
        region = labels == CT_LABELS[name]
        assert region.sum() > 20, name
        np.testing.assert_array_equal(hu[region], np.float32(value))
    assert CT_HU == {"air": -1000.0, "fat": -100.0, "soft": 40.0, "lung": -800.0, "bone": 700.0}
    # geometry: air at the corners and border, a lung in upper slices only, soft tissue in the middle
    assert (hu[:, 0, :] == -1000).all() and (hu[:, :, 0] == -1000).all()
    lung_per_slice = (labels == CT_LABELS["lung"]).sum(axis=(1, 2))
    assert lung_per_slice[0] > 0 and lung_per_slice[-1] == 0
    assert labels[5, 48, 48] in (CT_LABELS["soft"], CT_LABELS["lesion"])
    # lesions: low contrast against soft tissue, inside the body
    assert 1 <= len(lesions) <= 3
    les = labels == CT_LABELS["lesion"]
    assert les.sum() > 0
    contrast = np.abs(hu[les] - CT_HU["soft"])
    assert contrast.min() >= 12 and contrast.max() <= 30


def test_phantom_deterministic_and_seed_dependent() -> None:
    a = make_ct_phantom(4, size=64, seed=1)
    np.testing.assert_array_equal(a, make_ct_phantom(4, size=64, seed=1))
    assert (a != make_ct_phantom(4, size=64, seed=2)).mean() > 0.005


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    o = np.asarray(ds.ImageOrientationPatient, float)
    return np.cross(o[:3], o[3:])


def test_written_series_tags_consistent(synthetic_ct_dir: Path) -> None:
    index = pd.read_csv(synthetic_ct_dir / "ct_series.csv")
    assert index["series_uid"].nunique() == 2 and len(index) == 12
    for s, rows in index.groupby("series_index"):
        dss = [pydicom.dcmread(p) for p in rows.sort_values("slice_index")["path"]]
        assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.SOPInstanceUID for d in dss}) == 6
        assert all(d.Modality == "CT" and d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for d in dss)
        assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in dss)
        n = _normal(dss[0])
        pos = np.array([np.dot(np.asarray(d.ImagePositionPatient, float), n) for d in dss])
        thick = float(dss[0].SliceThickness)
        np.testing.assert_allclose(np.diff(pos), thick, atol=1e-3)
        # positions differ only along the normal
        p0 = np.asarray(dss[0].ImagePositionPatient, float)
        for k, d in enumerate(dss):
            np.testing.assert_allclose(np.asarray(d.ImagePositionPatient, float), p0 + k * thick * n, atol=1e-3)
        assert [int(d.InstanceNumber) for d in dss] == list(range(1, 7))
        signed = s % 2 == 0
        assert all(d.PixelRepresentation == (1 if signed else 0) for d in dss)
        assert all(d.pixel_array.dtype == (np.int16 if signed else np.uint16) for d in dss)
        assert all(float(d.RescaleIntercept) == (0.0 if signed else -1024.0) and float(d.RescaleSlope) == 1 for d in dss)
        # stored * slope + intercept gives back the phantom (rounded) HU
        expected = make_ct_phantom(6, size=64, seed=int(rows["phantom_seed"].iloc[0]))
        got = np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
        np.testing.assert_array_equal(got, np.rint(expected))
        assert float(dss[0].PixelSpacing[0]) == pytest.approx(360.0 / 64)


def test_series_reads_back_through_medbench_io(synthetic_ct_dir: Path) -> None:
    from medbench.io import series
    index = pd.read_csv(synthetic_ct_dir / "ct_series.csv")
    rows = index[index["series_index"] == 1]
    ct = series.read_series(synthetic_ct_dir / "ct-001")
    expected = make_ct_phantom(6, size=64, seed=int(rows["phantom_seed"].iloc[0]))
    np.testing.assert_allclose(ct.hu, np.rint(expected))
    assert ct.spacing[0] == pytest.approx(2.5)
