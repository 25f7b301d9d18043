"""Series reading on real data: slice order from positions, agreement with SimpleITK/GDCM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medbench.io import read_dicom, read_series
from medbench.io.series import read_series_sitk


@pytest.fixture(scope="module")
def ct5n() -> Path:
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    if not folder.is_dir():
        pytest.skip("pydicom dicomdirtests not present")
    return folder


def test_real_ct_series_order_and_simpleitk(ct5n: Path) -> None:
    series = read_series(ct5n)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(ct5n.iterdir())]
    normal = np.cross(*np.array([float(v) for v in headers[0].ImageOrientationPatient]).reshape(2, 3))
    positions = sorted(float(np.dot([float(v) for v in h.ImagePositionPatient], normal)) for h in headers)
    got = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in series.datasets]
    assert got == positions  # ascending along the normal, whatever the file names say
    assert [p.name for p in sorted(ct5n.iterdir())] != [Path(p).name for p in series.paths]
    assert series.spacing[0] == pytest.approx(np.diff(positions).mean())
    for k, path in enumerate(series.paths):
        np.testing.assert_array_equal(series.hu[k], read_dicom(path).pixels)
    itk = read_series_sitk(ct5n)
    np.testing.assert_array_equal(itk.hu, series.hu)
    assert itk.spacing == pytest.approx(series.spacing)
    assert itk.origin == pytest.approx(series.origin)
